package store

import "github.com/hashicorp/raft"

// Raft is the store's raft instance, for membership tooling that drives
// raft itself (cluster's autopilot: the leader's server health, promotions
// and dead server cleanup). Reads and writes go through the Store.
func (s *Store) Raft() *raft.Raft { return s.node.raft }
