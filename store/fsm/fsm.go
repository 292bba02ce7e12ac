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
	"github.com/hashicorp/raft"
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
	// Keys counts the keys restored by an OpRestore, or expired by an
	// OpExpire.
	Keys int64
	// Err is a deterministic refusal (a quota) or a malformed command. The
	// state is unchanged when it is set.
	Err error
}

// FSM is the store's state machine. It implements raft.BatchingFSM.
//
// Concurrency: raft calls Apply, ApplyBatch, Snapshot and Restore from one
// goroutine, never concurrently with each other. Reads (Get, List, Capture,
// DueExpiries) may run on any goroutine at any time; mu makes each command
// atomic to them and keeps the applied index in step with the data, so a
// read's revision is exactly the state it saw. FSMSnapshot.Persist runs
// concurrently with Apply and only touches what Snapshot captured.
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

var _ raft.BatchingFSM = (*FSM)(nil)

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

// Apply applies one log entry.
func (f *FSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed log entries in order. Each command is atomic:
// it changes the state fully or, with Result.Err set, not at all.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	for i, l := range logs {
		switch l.Type {
		case raft.LogCommand:
			r, events := f.applyCommand(l)
			out[i] = r
			f.hub.Publish(int64(l.Index), events)
		default:
			f.mu.Lock()
			f.advance(l)
			f.mu.Unlock()
		}
	}
	f.mu.Lock()
	if !f.closed {
		close(f.changed)
		f.changed = make(chan struct{})
	}
	f.mu.Unlock()
	return out
}

// advance records l as applied. The caller holds mu.
func (f *FSM) advance(l *raft.Log) {
	f.applied = int64(l.Index)
	f.appliedTerm = l.Term
}

// applyCommand applies one command under the write lock.
func (f *FSM) applyCommand(l *raft.Log) (*Result, []watch.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.advance(l)
	index := int64(l.Index)
	res := &Result{Index: index}
	if f.closed {
		res.Err = ErrClosed
		return res, nil
	}
	cmd, err := DecodeCommand(l.Data)
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
	}
	return res, events
}

// Snapshot captures the state for raft. It runs on the apply goroutine, so
// the capture is exactly the state at the last applied entry.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	snap, err := f.Capture()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{snap: snap}, nil
}

// Restore replaces the state with a raft snapshot written by Persist.
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

// fsmSnapshot is a captured state waiting to be written.
type fsmSnapshot struct{ snap *Snapshot }

// Persist writes the snapshot file to the sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.snap.Write(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release drops the capture.
func (s *fsmSnapshot) Release() { s.snap = nil }
