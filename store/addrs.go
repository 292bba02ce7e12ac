package store

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// RaftAddrResolver maps a raft server ID to the raft (RPC) address that
// membership knows for it now.
type RaftAddrResolver func(id string) (raftAddr string, ok bool)

// raftAddrs is the transport's raft.ServerAddressProvider. A server's
// identity is its ID: when it comes back on another address, raft dials
// the address membership knows instead of the one in the configuration,
// so servers that all moved at once can still elect a leader, which then
// writes their new addresses into the configuration (cluster reconcile).
// Without a resolver, or for an ID membership does not know, raft dials
// the configured address.
//
// With a ClusterTransport, every address it gives is remembered with the
// ID it was given for, and the transport's dial to that address expects
// that node's certificate; an ID membership does not know is looked up in
// the raft configuration, so raft never dials an address without knowing
// whom it expects there.
type raftAddrs struct {
	mu      sync.RWMutex
	resolve RaftAddrResolver
	// conf is the latest raft configuration, once raft runs.
	conf func() []raft.Server
	// node is the server ID last given for each address.
	node map[raft.ServerAddress]raft.ServerID
}

func (p *raftAddrs) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	p.mu.RLock()
	resolve, conf := p.resolve, p.conf
	p.mu.RUnlock()
	var addr raft.ServerAddress
	if resolve != nil {
		if a, ok := resolve(string(id)); ok && a != "" {
			addr = raft.ServerAddress(a)
		}
	}
	if addr == "" && conf != nil {
		for _, s := range conf() {
			if s.ID == id {
				addr = s.Address
			}
		}
	}
	if addr == "" {
		return "", fmt.Errorf("no address known for raft server %s", id)
	}
	p.mu.Lock()
	if p.node == nil {
		p.node = map[raft.ServerAddress]raft.ServerID{}
	}
	p.node[addr] = id
	p.mu.Unlock()
	return addr, nil
}

// nodeAt is the server ID last given for addr.
func (p *raftAddrs) nodeAt(addr raft.ServerAddress) string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return string(p.node[addr])
}

// ClusterTransport is a node's cluster RPC port (host/clusterrpc): raft
// streams arrive on Raft, and Dial reaches another node's port expecting
// node there (with TLS, its certificate must name node).
type ClusterTransport interface {
	Addr() net.Addr
	Raft() net.Listener
	DialRaft(ctx context.Context, addr, node string) (net.Conn, error)
	DialGRPC(ctx context.Context, addr, node string) (net.Conn, error)
}

// raftLayer is raft's stream layer over a ClusterTransport: a dial to an
// address expects the server raftAddrs last gave that address for.
type raftLayer struct {
	net.Listener
	t     ClusterTransport
	addrs *raftAddrs
}

func (l *raftLayer) Addr() net.Addr { return l.t.Addr() }

func (l *raftLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.t.DialRaft(ctx, string(addr), l.addrs.nodeAt(addr))
}

// SetRaftAddrResolver lets raft find servers by ID at the address
// membership knows for them (see raftAddrs).
func (s *Store) SetRaftAddrResolver(r RaftAddrResolver) {
	s.node.addrs.mu.Lock()
	defer s.node.addrs.mu.Unlock()
	s.node.addrs.resolve = r
}
