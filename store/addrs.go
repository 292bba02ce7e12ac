package store

import (
	"fmt"
	"sync"

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
type raftAddrs struct {
	mu      sync.RWMutex
	resolve RaftAddrResolver
}

func (p *raftAddrs) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	p.mu.RLock()
	resolve := p.resolve
	p.mu.RUnlock()
	if resolve != nil {
		if addr, ok := resolve(string(id)); ok && addr != "" {
			return raft.ServerAddress(addr), nil
		}
	}
	return "", fmt.Errorf("no address known for raft server %s", id)
}

// SetRaftAddrResolver lets raft find servers by ID at the address
// membership knows for them (see raftAddrs).
func (s *Store) SetRaftAddrResolver(r RaftAddrResolver) {
	s.node.addrs.mu.Lock()
	defer s.node.addrs.mu.Unlock()
	s.node.addrs.resolve = r
}
