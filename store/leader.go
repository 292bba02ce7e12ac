package store

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/raft"

	"github.com/plughost/plughost/store/fsm"
)

// watchLeadership runs the leader's background work while this node leads,
// and stops it when leadership is lost or the store closes.
func (s *Store) watchLeadership() {
	defer s.wg.Done()
	stop := func() {}
	defer func() { stop() }()
	for {
		select {
		case <-s.shutdown:
			return
		case leader := <-s.node.raft.LeaderCh():
			stop()
			stop = func() {}
			if leader {
				stop = s.startLeading()
			}
		}
	}
}

// startLeading runs lead on a goroutine and returns the function that stops
// it and waits for it.
func (s *Store) startLeading() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.lead(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// lead is the leader's work for one term: establish the term in the state
// machine, then run the OnLead tasks and expire keys until ctx ends.
func (s *Store) lead(ctx context.Context) {
	if !s.establish(ctx) {
		return
	}
	if err := s.node.fixSelfAddress(raft.ServerID(s.cfg.NodeID), s.await); err != nil {
		s.logger.Warn("could not update this node's raft address", "error", err)
	}
	end := s.beginTerm(ctx)
	defer end()
	s.expireLoop(ctx)
}

// establish applies a no-op so the state machine sees an entry of this
// leader's term: linearizable reads wait for it (see leaderReady).
func (s *Store) establish(ctx context.Context) bool {
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-retry.C:
		}
		_, err := s.propose(ctx, &fsm.Command{Op: fsm.OpNoop})
		switch {
		case err == nil:
			return true
		case errors.Is(err, ErrNotLeader), errors.Is(err, ErrClosed):
			return false
		}
		s.logger.Warn("could not establish leadership, retrying", "error", err)
		retry.Reset(50 * time.Millisecond)
	}
}
