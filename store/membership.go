package store

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

// Suffrage is a server's role in the raft configuration.
type Suffrage string

// Suffrages.
const (
	Voter    Suffrage = "voter"
	Nonvoter Suffrage = "nonvoter"
)

// RaftServer is one server in the raft configuration.
type RaftServer struct {
	ID       string
	Address  string // raft (RPC) address
	Suffrage Suffrage
}

// membershipTimeout bounds a configuration change.
const membershipTimeout = 10 * time.Second

// ErrHasState means BootstrapCluster was called on a node that already has
// raft state: it is part of a cluster already.
var ErrHasState = errors.New("store: this node already has raft state")

// HasState reports whether this node had raft state (a log, a snapshot or a
// term) when it opened, or has bootstrapped since.
func (s *Store) HasState() bool { return s.node.hasState.Load() }

// NodeID is this node's raft server ID.
func (s *Store) NodeID() string { return s.cfg.NodeID }

// RaftAddr is the address this node's raft transport advertises.
func (s *Store) RaftAddr() string { return string(s.node.addr) }

// BootstrapCluster forms a new cluster of servers, all voters. It is for a
// node without raft state; every member may call it with the same servers.
func (s *Store) BootstrapCluster(servers []RaftServer) error {
	if s.HasState() {
		return ErrHasState
	}
	conf := raft.Configuration{}
	for _, srv := range servers {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(srv.ID), Address: raft.ServerAddress(srv.Address)})
	}
	sort.Slice(conf.Servers, func(i, j int) bool { return conf.Servers[i].ID < conf.Servers[j].ID })
	if err := s.node.raft.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("store: bootstrap: %w", err)
	}
	s.node.hasState.Store(true)
	return nil
}

// Configuration is the latest raft configuration, sorted by ID.
func (s *Store) Configuration() ([]RaftServer, error) {
	fut := s.node.raft.GetConfiguration()
	if err := s.await(fut); err != nil {
		return nil, s.raftError(err)
	}
	var out []RaftServer
	for _, srv := range fut.Configuration().Servers {
		sf := Nonvoter
		if srv.Suffrage == raft.Voter {
			sf = Voter
		}
		out = append(out, RaftServer{ID: string(srv.ID), Address: string(srv.Address), Suffrage: sf})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Leader is the ID and raft address of the leader this node knows of; empty
// when there is none.
func (s *Store) Leader() (id, addr string) {
	a, i := s.node.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this node leads and is ready to serve.
func (s *Store) IsLeader() bool { return !s.closed.Load() && s.leaderReady() }

// AddVoter adds (or promotes) a server as a voter. Only the leader can.
func (s *Store) AddVoter(id, addr string) error {
	return s.membership(s.node.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, membershipTimeout))
}

// AddNonvoter adds a server that replicates the log without voting.
func (s *Store) AddNonvoter(id, addr string) error {
	return s.membership(s.node.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, membershipTimeout))
}

// RemoveServer removes a server from the raft configuration.
func (s *Store) RemoveServer(id string) error {
	return s.membership(s.node.raft.RemoveServer(raft.ServerID(id), 0, membershipTimeout))
}

// Snapshot forces a raft snapshot and the log truncation that follows it.
func (s *Store) Snapshot() error {
	if err := s.await(s.node.raft.Snapshot()); err != nil {
		return fmt.Errorf("store: snapshot: %w", err)
	}
	return nil
}

// LastContact is when this node last heard from the leader (zero on the
// leader itself).
func (s *Store) LastContact() time.Time { return s.node.raft.LastContact() }

// LeaderContact is when this node last heard from a raft leader: now while
// it leads (raft steps a leader down that loses its quorum), else its last
// contact with the leader (zero if it never had one).
func (s *Store) LeaderContact() time.Time {
	if s.node.raft.State() == raft.Leader {
		return time.Now()
	}
	return s.node.raft.LastContact()
}

func (s *Store) membership(fut raft.IndexFuture) error {
	if err := s.await(fut); err != nil {
		return s.raftError(err)
	}
	return nil
}
