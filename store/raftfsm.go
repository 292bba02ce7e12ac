package store

import (
	"io"

	"github.com/hashicorp/raft"

	"github.com/plughost/plughost/store/fsm"
)

// raftFSM is the state machine as raft drives it. Raft calls ApplyBatch,
// Snapshot and Restore from one goroutine, never concurrently with each
// other; Persist runs concurrently with ApplyBatch and only writes what
// Snapshot captured.
type raftFSM struct{ f *fsm.FSM }

var _ raft.BatchingFSM = raftFSM{}

// Apply applies one log entry.
func (r raftFSM) Apply(l *raft.Log) interface{} {
	return r.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed log entries in order. A command's result is
// its *fsm.Result; other entries give nil.
func (r raftFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	entries := make([]fsm.Entry, len(logs))
	for i, l := range logs {
		entries[i] = fsm.Entry{Index: l.Index, Term: l.Term, Command: l.Type == raft.LogCommand, Data: l.Data}
	}
	out := make([]interface{}, len(logs))
	for i, res := range r.f.Apply(entries...) {
		if res != nil {
			out[i] = res
		}
	}
	return out
}

// Snapshot captures the state. It runs on the apply goroutine, so the
// capture is exactly the state at the last applied entry.
func (r raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	snap, err := r.f.Capture()
	if err != nil {
		return nil, err
	}
	return &raftSnapshot{snap: snap}, nil
}

// Restore replaces the state with a snapshot written by Persist.
func (r raftFSM) Restore(rc io.ReadCloser) error { return r.f.Restore(rc) }

// raftSnapshot is a captured state waiting to be written.
type raftSnapshot struct{ snap *fsm.Snapshot }

// Persist writes the snapshot file to the sink.
func (s *raftSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.snap.Write(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release drops the capture.
func (s *raftSnapshot) Release() { s.snap = nil }
