package clusterrpc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// raftStream is raft's stream layer over a Mux, dialing node.
type raftStream struct {
	net.Listener
	m    *Mux
	node string
}

func (s raftStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.m.DialRaft(ctx, string(addr), s.node)
}

func transport(t *testing.T, m *Mux, peer string) *raft.NetworkTransport {
	t.Helper()
	tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: raftStream{Listener: m.Raft(), m: m, node: peer}, MaxPool: 2, Timeout: 10 * time.Second,
	})
	t.Cleanup(func() { tr.Close() })
	return tr
}

// served answers the next request raft's consumer hands out and returns
// its sender, with the snapshot data of an InstallSnapshot.
func served(t *testing.T, tr *raft.NetworkTransport) (string, []byte) {
	t.Helper()
	select {
	case rpc := <-tr.Consumer():
		var data []byte
		var resp any
		var id []byte
		switch req := rpc.Command.(type) {
		case *raft.AppendEntriesRequest:
			id, resp = req.ID, &raft.AppendEntriesResponse{Success: true}
		case *raft.RequestVoteRequest:
			id, resp = req.ID, &raft.RequestVoteResponse{Granted: true}
		case *raft.InstallSnapshotRequest:
			id, resp = req.ID, &raft.InstallSnapshotResponse{Success: true}
			var err error
			if data, err = io.ReadAll(rpc.Reader); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected request %T", req)
		}
		rpc.Respond(resp, nil)
		return string(id), data
	case <-time.After(20 * time.Second):
		t.Fatal("no request reached raft")
	}
	return "", nil
}

func header(id string) raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte("somewhere")}
}

func entries(id string, n int) *raft.AppendEntriesRequest {
	req := &raft.AppendEntriesRequest{RPCHeader: header(id), Term: 3, PrevLogEntry: 7, PrevLogTerm: 2, LeaderCommitIndex: 7}
	for i := range n {
		req.Entries = append(req.Entries, &raft.Log{Index: uint64(8 + i), Term: 3, Type: raft.LogCommand,
			Data: bytes.Repeat([]byte{byte(i)}, 300)})
	}
	return req
}

// TestRaftSenderIsTheCertificatesNode: a node holding y's certificate
// reaches raft only with requests from y; one claiming x, or no one, is
// cut off before raft sees it, whether on a new connection or on one that
// carried y's requests. Pipelined requests and snapshot data pass intact.
func TestRaftSenderIsTheCertificatesNode(t *testing.T) {
	ca := newCA(t)
	srvMux, yMux := listen(t, nodeTLS(t, ca, "srv")), listen(t, nodeTLS(t, ca, "y"))
	srv, y := transport(t, srvMux, ""), transport(t, yMux, "srv")
	addr := raft.ServerAddress(srvMux.Addr().String())

	call := func(id string) error {
		var resp raft.AppendEntriesResponse
		return y.AppendEntries("srv", addr, entries(id, 2), &resp)
	}
	// Each request's answer arrives only after served, so the calls run
	// beside it; errc has their results.
	errc := make(chan error, 8)
	good := func(id string) {
		t.Helper()
		go func() { errc <- call(id) }()
		if got, _ := served(t, srv); got != id {
			t.Fatalf("raft got a request from %q, sent as %q", got, id)
		}
		if err := <-errc; err != nil {
			t.Fatalf("a request from %s: %v", id, err)
		}
	}
	bad := func(id string) {
		t.Helper()
		if err := call(id); err == nil {
			t.Fatalf("a request claiming %q was answered", id)
		}
	}

	bad("x") // on a new connection
	bad("")
	good("y")
	bad("x") // on the pooled connection that carried y's
	var vote raft.RequestVoteResponse
	if err := y.RequestVote("srv", addr, &raft.RequestVoteRequest{RPCHeader: header("x"), Term: 9}, &vote); err == nil {
		t.Fatal("a vote request claiming x was answered")
	}
	good("y") // the first request raft sees after the refused ones is y's

	// A snapshot's data follows its request on the connection, untouched.
	data := bytes.Repeat([]byte("snapshot data "), 50000)
	go func() {
		var resp raft.InstallSnapshotResponse
		errc <- y.InstallSnapshot("srv", addr, &raft.InstallSnapshotRequest{RPCHeader: header("y"),
			SnapshotVersion: raft.SnapshotVersionMax, Term: 3, LastLogIndex: 9, LastLogTerm: 3,
			Size: int64(len(data))}, &resp, bytes.NewReader(data))
	}()
	got, snap := served(t, srv)
	if got != "y" || !bytes.Equal(snap, data) {
		t.Fatalf("snapshot from %q: %d bytes arrived of %d, equal %v", got, len(snap), len(data), bytes.Equal(snap, data))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	go func() {
		var resp raft.InstallSnapshotResponse
		errc <- y.InstallSnapshot("srv", addr, &raft.InstallSnapshotRequest{RPCHeader: header("x"),
			SnapshotVersion: raft.SnapshotVersionMax, Term: 3, Size: int64(len(data))}, &resp, bytes.NewReader(data))
	}()
	if err := <-errc; err == nil {
		t.Fatal("a snapshot claiming x was installed")
	}

	// Pipelined requests share one connection back to back.
	p, err := y.AppendEntriesPipeline("srv", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const n = 5
	// The pipeline holds few in flight: sends wait for answers, answers
	// for their futures to be taken.
	go func() {
		for i := range n {
			if _, err := p.AppendEntries(entries("y", i+1), &raft.AppendEntriesResponse{}); err != nil {
				errc <- err
				return
			}
		}
	}()
	futures := make(chan error, n)
	go func() {
		for range n {
			select {
			case f := <-p.Consumer():
				futures <- f.Error()
			case <-time.After(20 * time.Second):
				futures <- errors.New("a pipelined request was not answered")
			}
		}
	}()
	for range n {
		if got, _ := served(t, srv); got != "y" {
			t.Fatalf("a pipelined request from %q", got)
		}
	}
	for range n {
		if err := <-futures; err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	if _, err := p.AppendEntries(entries("x", 1), &raft.AppendEntriesResponse{}); err == nil {
		select {
		case f := <-p.Consumer():
			if f.Error() == nil {
				t.Fatal("a pipelined request claiming x was answered")
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a pipelined request claiming x was neither answered nor cut off")
		}
	}
	good("y")
}
