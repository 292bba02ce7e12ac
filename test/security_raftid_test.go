package test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/plughost/plughost/host/clusterrpc"
	"github.com/plughost/plughost/host/tlsutil"
	"github.com/plughost/plughost/internal/testenv"
)

// certStream is raft's stream layer of a process holding a node's
// certificate from the cluster CA, dialing another node's RPC port.
type certStream struct {
	net.Listener
	tc   *tlsutil.Config
	node string // the node dialed
}

func (s certStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", string(addr))
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, s.tc.Outgoing(s.node))
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	if _, err := conn.Write([]byte{byte(clusterrpc.KindRaft)}); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// TestRaftRequestsComeFromTheCertificatesNode: whoever holds one member's
// certificate (n3's) can send a follower raft requests as n3 only: a
// request claiming to be the leader is cut off unanswered, and the
// follower logs both names; the same request as n3 is answered.
func TestRaftRequestsComeFromTheCertificatesNode(t *testing.T) {
	agents := NewCluster(t, 3)
	leader := leaderOf(t, agents)
	var target, holder *ClusterAgent
	for _, a := range agents {
		switch {
		case a == leader:
		case target == nil:
			target = a
		default:
			holder = a
		}
	}
	f := nodeTLSArgs(t, holder.Node)
	tc, err := tlsutil.Load(tlsutil.Files{CA: f[1], Cert: f[3], Key: f[5]})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: certStream{Listener: ln, tc: tc, node: target.Node}, MaxPool: 1, Timeout: 20 * time.Second,
	})
	defer tr.Close()
	vote := func(as string) error {
		var resp raft.RequestVoteResponse
		return tr.RequestVote(raft.ServerID(target.Node), raft.ServerAddress(target.RPC), &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(as), Addr: []byte(holder.RPC)},
		}, &resp)
	}
	if err := vote(leader.Node); err == nil {
		t.Fatalf("%s answered a raft request claiming %s over %s's certificate", target.Node, leader.Node, holder.Node)
	}
	want := "claim to come from node " + leader.Node + " but its certificate names node " + holder.Node
	testenv.WaitFor(t, 10*time.Second, target.Node+" to log the refusal", func() error {
		if !strings.Contains(target.Log(), want) {
			return errors.New(target.Node + "'s log does not say: " + want)
		}
		return nil
	})
	if err := vote(holder.Node); err != nil {
		t.Fatalf("%s did not answer a raft request from %s with its own certificate: %v", target.Node, holder.Node, err)
	}
}
