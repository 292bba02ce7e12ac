// Package local is the store's API served from one node's state machine:
// request validation, the commands writes become, reads at each
// consistency, watches, TTL expiry, namespace bindings and the errors with
// their gRPC codes. Package store runs it behind raft; Memory runs it over
// an in-process log, without raft, for sdk/sdktest.
package local

import (
	"context"
	"fmt"
	"time"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/fsm"
)

// Defaults the replicated store and Memory share.
const (
	// DefaultMaxValueBytes is the largest value unless configured.
	DefaultMaxValueBytes = 512 << 10
	// DefaultMaxTxnBytes is the largest transaction, as encoded, unless
	// configured: eight of the largest values.
	DefaultMaxTxnBytes = 4 << 20
	// DefaultWatchHistory is how many revisions with changes a watch can
	// resume from.
	DefaultWatchHistory = 10_000
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

// maxExpirePerPass bounds the keys one expiry command removes; the rest wait
// for the next pass.
const maxExpirePerPass = 10_000

// Log is the log an Engine writes through: raft in package store, an
// in-process sequence in Memory.
type Log interface {
	// Propose appends cmd, waits until the state machine has applied it and
	// returns its result. A deterministic refusal (a quota) comes back as
	// the error too.
	Propose(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error)
	// Linearize returns once a following read of the state machine sees
	// every write acknowledged before the call.
	Linearize(ctx context.Context) error
	// Closed reports whether the log was closed.
	Closed() bool
}

// Config is what an Engine needs besides its state machine and log. Every
// field is required.
type Config struct {
	MaxValueBytes int
	// MaxTxnBytes bounds a transaction's encoded size (proto.Size of its
	// request: keys, values and compares together).
	MaxTxnBytes int
	// Quota is the quota of a namespace.
	Quota func(namespace string) fsm.Quota
	// Clock decides TTLs; with raft, only the leader's clock does.
	Clock func() time.Time
}

// Engine serves the store's API from a state machine fed by a log. Its
// methods are safe for concurrent use.
type Engine struct {
	fsm *fsm.FSM
	log Log
	cfg Config
}

// New returns the engine of f, whose writes go through log.
func New(f *fsm.FSM, log Log, cfg Config) *Engine {
	return &Engine{fsm: f, log: log, cfg: cfg}
}

// Get reads one key at the consistency the request asks for.
func (e *Engine) Get(ctx context.Context, req *storev1.GetRequest) (*storev1.GetResponse, error) {
	ns := req.GetNamespace()
	if err := ValidNamespace(ns); err != nil {
		return nil, err
	}
	if err := validKey("get", req.GetKey()); err != nil {
		return nil, err
	}
	if err := e.readBarrier(ctx, req.GetConsistency(), req.GetMinRevision()); err != nil {
		return nil, err
	}
	kv, rev, err := e.fsm.Get(ns, req.GetKey())
	if err != nil {
		return nil, closedError(err)
	}
	return &storev1.GetResponse{Kv: kv, Revision: rev}, nil
}

// List reads keys in order, by prefix or by range, one page at a time.
func (e *Engine) List(ctx context.Context, req *storev1.ListRequest) (*storev1.ListResponse, error) {
	ns := req.GetNamespace()
	if err := ValidNamespace(ns); err != nil {
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
	if err := e.readBarrier(ctx, req.GetConsistency(), req.GetMinRevision()); err != nil {
		return nil, err
	}
	kvs, more, rev, err := e.fsm.List(o)
	if err != nil {
		return nil, closedError(err)
	}
	resp := &storev1.ListResponse{Kvs: kvs, Revision: rev}
	if more && len(kvs) > 0 {
		last := kvs[len(kvs)-1].GetKey()
		resp.NextPageToken = append([]byte{pageTokenFormat}, last...)
	}
	return resp, nil
}

// readBarrier waits until a local read would be as fresh as c asks.
func (e *Engine) readBarrier(ctx context.Context, c storev1.Consistency, minRev int64) error {
	switch c {
	case storev1.Consistency_CONSISTENCY_UNSPECIFIED, storev1.Consistency_CONSISTENCY_LINEARIZABLE:
		return e.log.Linearize(ctx)
	case storev1.Consistency_CONSISTENCY_SESSION:
		if minRev < 0 {
			return invalid("negative min_revision %d", minRev)
		}
		return e.WaitApplied(ctx, minRev)
	case storev1.Consistency_CONSISTENCY_STALE:
		if e.log.Closed() {
			return ErrClosed
		}
		return nil
	}
	return invalid("unknown consistency %d", c)
}

// WaitApplied waits until the state machine has applied revision rev.
func (e *Engine) WaitApplied(ctx context.Context, rev int64) error {
	err := e.fsm.WaitApplied(ctx, func(applied int64, _ uint64) bool { return applied >= rev })
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("store: waiting for revision %d (applied %d): %w", rev, e.fsm.Applied(), ctx.Err())
		}
		return closedError(err)
	}
	return nil
}

// Watch calls send with the changes to keys of the namespace that start with
// the prefix, one response per revision, in revision order, with no gaps and
// no duplicates, from start_revision (0: from now) until ctx ends or send
// fails. It serves from the state machine's history of recent revisions with
// changes: a start revision older than that, or a watcher that falls that
// far behind, ends with an error wrapping ErrCompacted. send must not modify
// the responses: watchers share them.
func (e *Engine) Watch(ctx context.Context, req *storev1.WatchRequest, send func(*storev1.WatchResponse) error) error {
	ns := req.GetNamespace()
	if err := ValidNamespace(ns); err != nil {
		return err
	}
	if len(req.GetPrefix()) > MaxKeyBytes {
		return invalid("watch: prefix is %d bytes > max %d bytes", len(req.GetPrefix()), MaxKeyBytes)
	}
	start := req.GetStartRevision()
	switch {
	case start < 0:
		return invalid("watch: negative start_revision %d", start)
	case start == 0:
		start = e.fsm.Applied() + 1
	}
	if e.log.Closed() {
		return ErrClosed
	}
	return closedError(e.fsm.Hub().Watch(ctx, ns, req.GetPrefix(), start, send))
}

// ExpirePass proposes one command that expires the keys due now, so they
// all expire at one revision, and returns how many it proposed. Only the
// leader runs it: its clock decides, through the log.
func (e *Engine) ExpirePass(ctx context.Context) (int, error) {
	due, err := e.fsm.DueExpiries(e.cfg.Clock().UnixMilli(), maxExpirePerPass)
	if err != nil || len(due) == 0 {
		return 0, nil
	}
	_, err = e.log.Propose(ctx, &fsm.Command{Op: fsm.OpExpire, Expire: due})
	return len(due), err
}
