package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/fsm"
)

// List paging.
const (
	// DefaultListLimit is the page size when a List asks for none.
	DefaultListLimit = 1000
	// MaxListLimit is the largest page; larger limits are reduced to it.
	MaxListLimit = 10_000
	// maxPageBytes ends a page early once its keys and values reach it, so a
	// page of large values stays inside gRPC's default 4 MiB message.
	maxPageBytes = 2 << 20
	// pageTokenFormat is the first byte of a page token.
	pageTokenFormat = 1
)

// localGet reads one key at the consistency the request asks for.
func (s *Store) localGet(ctx context.Context, req *storev1.GetRequest) (*storev1.GetResponse, error) {
	ns := req.GetNamespace()
	if err := validNamespace(ns); err != nil {
		return nil, err
	}
	if err := validKey("get", req.GetKey()); err != nil {
		return nil, err
	}
	if err := s.readBarrier(ctx, req.GetConsistency(), req.GetMinRevision()); err != nil {
		return nil, err
	}
	kv, rev, err := s.fsm.Get(ns, req.GetKey())
	if err != nil {
		return nil, s.fsmError(err)
	}
	return &storev1.GetResponse{Kv: kv, Revision: rev}, nil
}

// localList reads keys in order, by prefix or by range, one page at a time.
func (s *Store) localList(ctx context.Context, req *storev1.ListRequest) (*storev1.ListResponse, error) {
	ns := req.GetNamespace()
	if err := validNamespace(ns); err != nil {
		return nil, err
	}
	o := fsm.ListOptions{Namespace: ns, KeysOnly: req.GetKeysOnly(), MaxBytes: maxPageBytes}
	switch {
	case len(req.GetPrefix()) > 0 && (len(req.GetStart()) > 0 || len(req.GetEnd()) > 0):
		return nil, invalid("list: prefix and start/end are exclusive")
	case len(req.GetPrefix()) > 0:
		// An all-0xff prefix has no end key: it runs to the namespace's end.
		o.Start, o.End = req.GetPrefix(), fsm.PrefixEnd(req.GetPrefix())
	default:
		o.Start = req.GetStart()
		if len(req.GetEnd()) > 0 {
			o.End = req.GetEnd()
		}
	}
	switch limit := req.GetLimit(); {
	case limit < 0:
		return nil, invalid("list: negative limit %d", limit)
	case limit == 0:
		o.Limit = DefaultListLimit
	default:
		o.Limit = min(int(limit), MaxListLimit)
	}
	if tok := req.GetPageToken(); len(tok) > 0 {
		if len(tok) < 2 || tok[0] != pageTokenFormat {
			return nil, invalid("list: malformed page_token")
		}
		o.After = tok[1:]
	}
	if err := s.readBarrier(ctx, req.GetConsistency(), req.GetMinRevision()); err != nil {
		return nil, err
	}
	kvs, more, rev, err := s.fsm.List(o)
	if err != nil {
		return nil, s.fsmError(err)
	}
	resp := &storev1.ListResponse{Kvs: kvs, Revision: rev}
	if more && len(kvs) > 0 {
		last := kvs[len(kvs)-1].GetKey()
		resp.NextPageToken = append([]byte{pageTokenFormat}, last...)
	}
	return resp, nil
}

// readBarrier waits until a local read would be as fresh as c asks.
func (s *Store) readBarrier(ctx context.Context, c storev1.Consistency, minRev int64) error {
	switch c {
	case storev1.Consistency_CONSISTENCY_UNSPECIFIED, storev1.Consistency_CONSISTENCY_LINEARIZABLE:
		return s.linearize(ctx)
	case storev1.Consistency_CONSISTENCY_SESSION:
		if minRev < 0 {
			return invalid("negative min_revision %d", minRev)
		}
		return s.waitApplied(ctx, minRev)
	case storev1.Consistency_CONSISTENCY_STALE:
		if s.closed.Load() {
			return ErrClosed
		}
		return nil
	}
	return invalid("unknown consistency %d", c)
}

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
	return s.waitApplied(ctx, int64(readIndex))
}

// waitApplied waits until this node has applied revision rev.
func (s *Store) waitApplied(ctx context.Context, rev int64) error {
	err := s.fsm.WaitApplied(ctx, func(applied int64, _ uint64) bool { return applied >= rev })
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("store: waiting for revision %d (applied %d): %w", rev, s.fsm.Applied(), ctx.Err())
		}
		return s.fsmError(err)
	}
	return nil
}

// fsmError translates a state machine error.
func (s *Store) fsmError(err error) error {
	if errors.Is(err, fsm.ErrClosed) {
		return ErrClosed
	}
	return err
}
