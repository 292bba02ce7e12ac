// Package store is plughost's replicated key-value store: namespaced keys in
// a BuntDB state machine replicated by hashicorp/raft, with transactions,
// watches, TTLs, quotas and backups.
package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/plughost/plughost/store/fsm"
	"github.com/plughost/plughost/store/local"
)

// defaultApplyTimeout bounds how long a write waits to enter raft's queue
// when its context has no deadline.
const defaultApplyTimeout = 10 * time.Second

// Store is one node of the replicated store. Its methods are safe for
// concurrent use. Writes and linearizable reads need this node to be the
// raft leader; elsewhere they fail with ErrNotLeader.
type Store struct {
	cfg    Config
	logger hclog.Logger
	fsm    *fsm.FSM
	eng    *local.Engine // the API, served from fsm; writes go through raftLog
	node   *raftNode
	verify *verifier
	fwd    forwarder
	// watches counts the watches open, in all and by client.
	watches watchLimiter
	// tasks run while this node leads (OnLead).
	tasks leadTasks

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	shutdown  chan struct{}  // closed by Close
	wg        sync.WaitGroup // goroutines owned by the Store
}

// Open starts a store node as cfg describes. With cfg.Bootstrap and no
// existing state it forms a single-voter cluster; call WaitForLeader before
// relying on it.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	f, err := fsm.New(fsm.Config{WatchHistory: cfg.WatchHistory, Logger: cfg.Logger.Named("fsm")})
	if err != nil {
		return nil, err
	}
	node, err := newRaftNode(cfg, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	s := &Store{
		cfg:      cfg,
		logger:   cfg.Logger,
		fsm:      f,
		node:     node,
		shutdown: make(chan struct{}),
		watches:  newWatchLimiter(cfg.MaxWatches, cfg.MaxWatchesPerClient, cfg.PluginWatchReserve),
	}
	if !cfg.InMemory {
		s.fwd.transport = cfg.Transport
	}
	s.eng = local.New(f, raftLog{s}, local.Config{
		MaxValueBytes: cfg.MaxValueBytes,
		MaxTxnBytes:   cfg.MaxTxnBytes,
		Quota: func(ns string) fsm.Quota {
			q := s.cfg.quotaFor(ns)
			return fsm.Quota{MaxBytes: q.MaxBytes, MaxKeys: q.MaxKeys}
		},
		Clock: cfg.clock,
	})
	s.verify = newVerifier(func() error { return s.await(node.raft.VerifyLeader()) }, &s.wg)
	s.wg.Add(1)
	go s.watchLeadership()
	return s, nil
}

// OpenMemory opens a single-node, in-memory store and returns once it is the
// leader and ready. It is meant for tests and sdk/sdktest.
func OpenMemory() (*Store, error) {
	cfg := DefaultConfig()
	cfg.InMemory = true
	cfg.Bootstrap = true
	return openMemory(cfg)
}

func openMemory(cfg Config) (*Store, error) {
	s, err := Open(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitForLeader(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close stops the node: raft, the leader's background work and every watch.
// It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.shutdown)
		s.verify.stop()
		s.fwd.close()
		err := s.node.close()
		s.wg.Wait()
		s.closeErr = errors.Join(err, s.fsm.Close())
	})
	return s.closeErr
}

// WaitForLeader blocks until the cluster has a leader and, when that leader
// is this node, until it has caught up with its log and can serve
// linearizable reads.
func (s *Store) WaitForLeader(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.closed.Load() {
			return ErrClosed
		}
		_, id := s.node.raft.LeaderWithID()
		if id != "" && (id != raft.ServerID(s.cfg.NodeID) || s.leaderReady()) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: waiting for a leader: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// Revision is the last revision this node applied.
func (s *Store) Revision() int64 { return s.fsm.Applied() }

// leaderReady reports whether this node leads and has applied an entry of
// its own term: only then is its commit index known to be current.
func (s *Store) leaderReady() bool {
	r := s.node.raft
	return r.State() == raft.Leader && s.fsm.AppliedTerm() >= r.CurrentTerm()
}

// propose replicates cmd and returns the state machine's result. A
// deterministic refusal (a quota) comes back as the error.
func (s *Store) propose(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	data, err := cmd.Encode()
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	timeout := defaultApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		if timeout = time.Until(dl); timeout <= 0 {
			return nil, ctx.Err()
		}
	}
	fut := s.node.raft.Apply(data, timeout)
	if err := s.await(fut); err != nil {
		return nil, s.applyError(err)
	}
	res, ok := fut.Response().(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("store: unexpected apply response %T", fut.Response())
	}
	return res, res.Err
}

// raftLog is the Store's raft log as its local.Engine writes through it.
type raftLog struct{ s *Store }

func (l raftLog) Propose(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	return l.s.propose(ctx, cmd)
}

func (l raftLog) Linearize(ctx context.Context) error { return l.s.linearize(ctx) }

func (l raftLog) Closed() bool { return l.s.closed.Load() }

// raftError translates an error from raft into the store's terms.
func (s *Store) raftError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return s.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: leadership was lost before the request completed", ErrNotLeader)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, ErrNoSpace):
		return err
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("store: the write queue stayed full until the deadline: %w", context.DeadlineExceeded)
	}
	return fmt.Errorf("store: raft: %w", err)
}

// applyError translates the error of a raft Apply. Once raft holds the
// entry, losing the leadership or shutting down leaves its fate to the
// next leader: the write may or may not be applied.
func (s *Store) applyError(err error) error {
	switch {
	case errors.Is(err, raft.ErrLeadershipLost):
		return outcomeUnknown(ErrNotLeader, "store: leadership was lost while the write was in flight")
	case errors.Is(err, raft.ErrRaftShutdown):
		return outcomeUnknown(ErrClosed, "store: this node shut down while the write was in flight")
	}
	return s.raftError(err)
}

// notLeader is ErrNotLeader naming the leader, when one is known.
func (s *Store) notLeader() error {
	if s.closed.Load() {
		return ErrClosed
	}
	addr, id := s.node.raft.LeaderWithID()
	if id == "" {
		return fmt.Errorf("%w: no leader is known (an election may be under way)", ErrNotLeader)
	}
	return fmt.Errorf("%w: the leader is %s at %s", ErrNotLeader, id, addr)
}

// await waits for a raft future, or until the store closes. Raft never
// answers a future still queued when it shuts down (the apply and verify
// channels are buffered), so waiting on the future alone could block Close
// and its callers forever.
func (s *Store) await(fut raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- fut.Error() }()
	select {
	case err := <-done:
		return err
	case <-s.shutdown:
		select {
		case err := <-done:
			return err
		default:
			return raft.ErrRaftShutdown
		}
	}
}
