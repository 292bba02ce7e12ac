package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/plughost/plughost/store/fsm"
	"github.com/plughost/plughost/store/local"
)

// List paging.
const (
	// DefaultListLimit is the page size when a List asks for none.
	DefaultListLimit = local.DefaultListLimit
	// MaxListLimit is the largest page; larger limits are reduced to it.
	MaxListLimit = local.MaxListLimit
)

// linearize makes a following local read linearizable. hashicorp/raft has
// no read index, so this is the read-index recipe by hand:
//
//  1. this node leads and has applied an entry of its own term, so its
//     commit index covers every write acknowledged by any earlier leader;
//  2. take the commit index;
//  3. confirm leadership with a round of heartbeats that started after step
//     2 (shared with concurrent readers), in the same term;
//  4. wait until the state machine has applied the commit index.
//
// Every entry after a leader's first no-op reaches the state machine (only
// commands and configurations are written), so step 4 always ends.
func (s *Store) linearize(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	r := s.node.raft
	if r.State() != raft.Leader {
		return s.notLeader()
	}
	term := r.CurrentTerm()
	if s.fsm.AppliedTerm() < term {
		// A new leader: wait for its no-op, bounded in case it loses the
		// leadership before the no-op commits.
		wctx, cancel := context.WithTimeout(ctx, 4*s.cfg.timing.Election)
		err := s.fsm.WaitApplied(wctx, func(_ int64, t uint64) bool { return t >= term })
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, fsm.ErrClosed) {
				return ErrClosed
			}
			return fmt.Errorf("%w: this node was elected but has not caught up with its log yet", ErrNotLeader)
		}
	}
	readIndex := r.CommitIndex()
	if err := s.verify.verify(ctx); err != nil {
		if ctx.Err() != nil || errors.Is(err, ErrClosed) {
			return err
		}
		return s.raftError(err)
	}
	if r.CurrentTerm() != term {
		return s.notLeader()
	}
	return s.eng.WaitApplied(ctx, int64(readIndex))
}

// fsmError translates a state machine error.
func (s *Store) fsmError(err error) error {
	if errors.Is(err, fsm.ErrClosed) {
		return ErrClosed
	}
	return err
}
