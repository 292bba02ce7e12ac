// Package fsm is the store's deterministic state machine: an in-memory BuntDB
// database changed only by commands from the replicated log.
package fsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/tidwall/buntdb"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/watch"
)

// Config configures an FSM.
type Config struct {
	// WatchHistory is how many revisions with events the watch history
	// keeps.
	WatchHistory int
	// WatchHistoryBytes bounds the keys and values the history holds.
	WatchHistoryBytes int
	Logger            hclog.Logger
}

// Result is what applying one command gives back to its proposer.
type Result struct {
	// Index is the log index (the revision) of the command.
	Index int64
	// Txn is the outcome of an OpTxn.
	Txn *storev1.TxnResponse
	// Keys counts the keys restored by an OpRestore or an
	// OpRestoreNamespace, or expired by an OpExpire.
	Keys int64
	// Err is a deterministic refusal (a quota, a fenced write: EpochError)
	// or a malformed command. The state is unchanged when it is set.
	Err error
}

// Entry is one entry of the log the state machine follows.
type Entry struct {
	Index uint64
	Term  uint64
	// Command is set on the entries whose Data is an encoded Command; the
	// others (the log's no-ops and configurations) only advance the
	// applied index.
	Command bool
	Data    []byte
}

// FSM is the store's state machine. It knows nothing of raft: the
// replicated store adapts it to raft.BatchingFSM, and store/local's Memory
// feeds it from an in-process log.
//
// Concurrency: the log calls Apply and Restore from one goroutine, never
// concurrently with each other. Reads (Get, List, Capture,
// DueExpiries) may run on any goroutine at any time; mu makes each command
// atomic to them and keeps the applied index in step with the data, so a
// read's revision is exactly the state it saw. The Snapshot that Capture
// returns is the caller's, and may be written concurrently with Apply.
type FSM struct {
	logger hclog.Logger
	hub    *watch.Hub

	mu          sync.RWMutex
	db          *buntdb.DB
	usage       map[string]Usage
	applied     int64  // index of the last log entry applied
	appliedTerm uint64 // term of that entry
	changed     chan struct{}
	closed      bool
}

// ErrClosed is returned by reads after Close.
var ErrClosed = errors.New("store: closed")

// New returns an empty state machine.
func New(cfg Config) (*FSM, error) {
	db, err := openDB()
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if cfg.WatchHistoryBytes <= 0 {
		cfg.WatchHistoryBytes = 64 << 20
	}
	return &FSM{
		logger:  logger,
		hub:     watch.NewHub(cfg.WatchHistory, cfg.WatchHistoryBytes),
		db:      db,
		usage:   make(map[string]Usage),
		changed: make(chan struct{}),
	}, nil
}

// openDB opens an empty in-memory BuntDB with its own expiry unused.
func openDB() (*buntdb.DB, error) {
	db, err := buntdb.Open(":memory:")
	if err != nil {
		return nil, fmt.Errorf("store: open buntdb: %w", err)
	}
	if err := db.SetConfig(buntdb.Config{SyncPolicy: buntdb.Never, AutoShrinkDisabled: true}); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: configure buntdb: %w", err)
	}
	return db, nil
}

// Hub is the watch history fed by this state machine.
func (f *FSM) Hub() *watch.Hub { return f.hub }

// Close releases the database and ends every watcher.
func (f *FSM) Close() error {
	f.hub.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	close(f.changed)
	return f.db.Close()
}

// Applied is the index of the last log entry applied: the store revision.
func (f *FSM) Applied() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

// AppliedTerm is the raft term of the last log entry applied.
func (f *FSM) AppliedTerm() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.appliedTerm
}

// WaitApplied blocks until ready(index, term) holds for the last applied
// entry, ctx ends or the FSM closes.
func (f *FSM) WaitApplied(ctx context.Context, ready func(index int64, term uint64) bool) error {
	for {
		f.mu.RLock()
		ok, closed, ch := ready(f.applied, f.appliedTerm), f.closed, f.changed
		f.mu.RUnlock()
		switch {
		case ok:
			return nil
		case closed:
			return ErrClosed
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// Apply applies log entries in order and returns, for each, its command's
// result (nil for an entry that is not a command). Each command is atomic:
// it changes the state fully or, with Result.Err set, not at all.
func (f *FSM) Apply(entries ...Entry) []*Result {
	out := make([]*Result, len(entries))
	for i, e := range entries {
		if e.Command {
			r, events := f.applyCommand(e)
			out[i] = r
			f.hub.Publish(int64(e.Index), events)
			continue
		}
		f.mu.Lock()
		f.advance(e)
		f.mu.Unlock()
	}
	f.mu.Lock()
	if !f.closed {
		close(f.changed)
		f.changed = make(chan struct{})
	}
	f.mu.Unlock()
	return out
}

// advance records e as applied. The caller holds mu.
func (f *FSM) advance(e Entry) {
	f.applied = int64(e.Index)
	f.appliedTerm = e.Term
}

// applyCommand applies one command under the write lock.
func (f *FSM) applyCommand(e Entry) (*Result, []watch.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.advance(e)
	index := int64(e.Index)
	res := &Result{Index: index}
	if f.closed {
		res.Err = ErrClosed
		return res, nil
	}
	cmd, err := DecodeCommand(e.Data)
	if err != nil {
		f.logger.Error("refusing malformed command", "index", index, "error", err)
		res.Err = err
		return res, nil
	}
	var events []watch.Event
	switch cmd.Op {
	case OpNoop:
	case OpTxn:
		res.Txn, events, res.Err = f.applyTxn(index, cmd)
	case OpExpire:
		res.Keys, events, res.Err = f.applyExpire(index, cmd.Expire)
	case OpRestore:
		res.Keys, res.Err = f.applyRestore(index, cmd.Snapshot)
	case OpRestoreNamespace:
		res.Keys, events, res.Err = f.applyRestoreNamespace(index, cmd)
	}
	return res, events
}

// Restore replaces the state with a snapshot file written by
// Snapshot.Write, at the revision the file names.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("store: read snapshot: %w", err)
	}
	snap, err := DecodeSnapshot(data)
	if err != nil {
		return err
	}
	db, usage, err := load(snap.Items)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.db
	f.db, f.usage = db, usage
	f.applied = snap.Revision
	f.hub.Reset(snap.Revision)
	old.Close()
	return nil
}

// applyRestore installs a backup at index. The caller holds mu.
func (f *FSM) applyRestore(index int64, file []byte) (int64, error) {
	snap, err := DecodeSnapshot(file)
	if err != nil {
		return 0, err
	}
	db, usage, err := load(snap.Items)
	if err != nil {
		return 0, err
	}
	old := f.db
	f.db, f.usage = db, usage
	f.hub.Reset(index)
	old.Close()
	return int64(len(snap.Items)), nil
}
