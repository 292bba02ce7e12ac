package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// walSegmentSize is the size of a raft-wal segment file, preallocated when
// the segment is started. raft-wal's own default (64 MiB) leaves a small disk
// unable to start a node; a segment of a few MiB still holds thousands of
// entries, and starting one costs a file create and a meta commit.
const walSegmentSize = 4 << 20

// walStore is the raft log and stable store over hashicorp/raft-wal,
// reopened from disk after a write fails.
//
// raft-wal cannot carry on after some failed writes: when starting the next
// segment fails (no space for its preallocation), the sealed segment stays
// its tail and every later append fails with "segment is sealed", even once
// there is room again. A failed write here marks the WAL broken; the next
// write closes it and opens it again from the files, which finishes or
// undoes what the failed write left, and goes on. Reads wait while the WAL
// is reopened. The term and vote live in the WAL's meta database, which stays
// open throughout, so raft can always record them.
type walStore struct {
	dir     string // the WAL's directory
	dataDir string // the node's data directory, named in errors
	logger  hclog.Logger
	meta    *metadb.BoltMetaDB

	mu     sync.RWMutex
	wal    *wal.WAL // nil after a reopen failed; the next write tries again
	broken bool     // a write failed: reopen before the next one
	// keep is the last index raft counts as written when a write failed:
	// entries after it, from an append raft was told failed, are removed
	// on reopen (MaxUint64: none are).
	keep   uint64
	closed bool
}

var (
	_ raft.LogStore          = (*walStore)(nil)
	_ raft.MonotonicLogStore = (*walStore)(nil)
	_ raft.StableStore       = (*walStore)(nil)
)

// openWALStore opens the WAL in dir, which must exist.
func openWALStore(dir, dataDir string, logger hclog.Logger) (*walStore, error) {
	s := &walStore{dir: dir, dataDir: dataDir, logger: logger, meta: &metadb.BoltMetaDB{}}
	w, err := s.open()
	if err != nil {
		s.meta.Close()
		if isNoSpace(err) {
			return nil, fmt.Errorf("%w in %s: the raft log needs %d MiB free to start a segment: free space on that disk and start again",
				ErrNoSpace, dataDir, walSegmentSize>>20)
		}
		return nil, fmt.Errorf("store: open raft log %s: %w", dir, err)
	}
	s.wal = w
	return s, nil
}

// open opens the WAL over s.meta, which the WAL does not close.
func (s *walStore) open() (*wal.WAL, error) {
	if err := finishSeal(s.dir, s.meta); err != nil {
		return nil, err
	}
	w, err := wal.Open(s.dir,
		wal.WithMetaStore(keepOpen{s.meta}),
		wal.WithSegmentFiler(segment.NewFiler(s.dir, privateVFS{walfs.New()})),
		wal.WithSegmentSize(walSegmentSize),
		wal.WithLogger(s.logger))
	if err != nil {
		return nil, err
	}
	// The meta database, opened by the WAL, is made 0644.
	if err := os.Chmod(filepath.Join(s.dir, metadb.FileName), privateFileMode); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// finishSeal completes a segment rotation that stopped between sealing the
// tail segment's file and recording that in the meta database (the commit
// found the disk full, or the process died there). raft-wal would open
// such a segment as the tail and refuse every append to it as sealed. As
// the rotation would have, it records the tail as sealed and a new, empty
// tail after it; opening the WAL creates that segment's file.
func finishSeal(dir string, meta *metadb.BoltMetaDB) error {
	st, err := meta.Load(dir)
	if err != nil || len(st.Segments) == 0 {
		return err
	}
	tail := &st.Segments[len(st.Segments)-1]
	if !tail.SealTime.IsZero() {
		return nil
	}
	sw, err := segment.NewFiler(dir, walfs.New()).RecoverTail(*tail)
	if errors.Is(err, os.ErrNotExist) {
		return nil // the WAL creates it
	}
	if err != nil {
		return err
	}
	sealed, indexStart, err := sw.Sealed()
	last := sw.LastIndex()
	if cerr := sw.Close(); err == nil {
		err = cerr
	}
	if err != nil || !sealed || last == 0 {
		return err
	}
	now := time.Now()
	tail.SealTime, tail.MaxIndex, tail.IndexStart = now, last, indexStart
	st.Segments = append(st.Segments, types.SegmentInfo{
		ID:         st.NextSegmentID,
		BaseIndex:  last + 1,
		MinIndex:   last + 1,
		Codec:      wal.CodecBinaryV1,
		CreateTime: now,
		SizeLimit:  walSegmentSize,
	})
	st.NextSegmentID++
	return meta.CommitState(st)
}

// keepOpen is the meta database as the WAL sees it: closing the WAL leaves
// it open, for the next WAL and for raft's term and vote.
type keepOpen struct{ *metadb.BoltMetaDB }

func (keepOpen) Close() error { return nil }

// reopenLocked closes the broken WAL and opens it again from disk. s.mu is
// held for writing.
func (s *walStore) reopenLocked() error {
	if s.closed {
		return wal.ErrClosed
	}
	if s.wal != nil {
		if err := s.wal.Close(); err != nil {
			s.logger.Warn("close the raft log before reopening it", "error", err)
		}
		s.wal = nil
	}
	w, err := s.open()
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	// An append that failed may still have reached the disk whole (its
	// sync failed after the write). Raft counts it as not written, so it
	// goes.
	last, err := w.LastIndex()
	if err == nil && last > s.keep {
		err = w.DeleteRange(s.keep+1, last)
	}
	if err != nil {
		w.Close()
		return fmt.Errorf("reopen: %w", err)
	}
	s.wal, s.broken = w, false
	s.logger.Info("raft log reopened after a failed write", "dir", s.dir)
	return nil
}

// write runs fn on the WAL, reopening it first if an earlier write failed.
// keep is the last index raft counts as written should fn fail. A WAL
// whose tail stayed sealed is reopened at once and fn tried again.
func (s *walStore) write(op string, keep uint64, fn func(*wal.WAL) error) error {
	for attempt := 0; ; attempt++ {
		err := s.tryWrite(keep, fn)
		if err == nil || s.isClosed() {
			return err
		}
		if errors.Is(err, wal.ErrSealed) && attempt == 0 {
			continue
		}
		return s.fault(op, err)
	}
}

// tryWrite runs fn once. Writes share the read lock (the WAL orders them
// itself, and reads go on meanwhile); reopening takes the write lock.
func (s *walStore) tryWrite(keep uint64, fn func(*wal.WAL) error) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return wal.ErrClosed
	}
	if !s.broken {
		err := fn(s.wal)
		s.mu.RUnlock()
		if err != nil {
			s.mu.Lock()
			s.breakLocked(keep)
			s.mu.Unlock()
		}
		return err
	}
	s.mu.RUnlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.broken {
		err = s.reopenLocked()
	}
	if err == nil {
		err = fn(s.wal)
	}
	if err != nil {
		s.breakLocked(keep)
	}
	return err
}

// breakLocked marks the WAL for reopening after a failed write.
func (s *walStore) breakLocked(keep uint64) {
	switch {
	case s.closed:
	case s.broken:
		s.keep = min(s.keep, keep)
	default:
		s.broken, s.keep = true, keep
	}
}

func (s *walStore) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// fault is err from op on the WAL as raft and the store's clients see it.
func (s *walStore) fault(op string, err error) error {
	if err2 := noSpace(s.dataDir, err); err2 != err {
		return err2
	}
	return fmt.Errorf("raft log %s: %s: %w", s.dir, op, err)
}

// read runs fn on the WAL under the read lock. While the WAL is down (a
// reopen failed) reads fail; the next write opens it again.
func (s *walStore) read(fn func(*wal.WAL) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.wal == nil {
		if s.closed {
			return wal.ErrClosed
		}
		return fmt.Errorf("raft log %s is not open: a write failed and reopening it failed too; the next write tries again", s.dir)
	}
	return fn(s.wal)
}

// FirstIndex implements raft.LogStore.
func (s *walStore) FirstIndex() (idx uint64, err error) {
	err = s.read(func(w *wal.WAL) error { idx, err = w.FirstIndex(); return err })
	return idx, err
}

// LastIndex implements raft.LogStore.
func (s *walStore) LastIndex() (idx uint64, err error) {
	err = s.read(func(w *wal.WAL) error { idx, err = w.LastIndex(); return err })
	return idx, err
}

// GetLog implements raft.LogStore.
func (s *walStore) GetLog(index uint64, log *raft.Log) error {
	return s.read(func(w *wal.WAL) error { return w.GetLog(index, log) })
}

// StoreLog implements raft.LogStore.
func (s *walStore) StoreLog(log *raft.Log) error { return s.StoreLogs([]*raft.Log{log}) }

// StoreLogs implements raft.LogStore.
func (s *walStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	return s.write("append", logs[0].Index-1, func(w *wal.WAL) error { return w.StoreLogs(logs) })
}

// DeleteRange implements raft.LogStore. A delete that fails leaves every
// entry raft counts as written: it runs beside appends, whose entries must
// stay.
func (s *walStore) DeleteRange(lo, hi uint64) error {
	return s.write("delete", math.MaxUint64, func(w *wal.WAL) error { return w.DeleteRange(lo, hi) })
}

// IsMonotonic implements raft.MonotonicLogStore: raft-wal takes no gaps.
func (s *walStore) IsMonotonic() bool { return true }

// Set implements raft.StableStore.
func (s *walStore) Set(key, val []byte) error {
	return noSpace(s.dataDir, s.meta.SetStable(key, val))
}

// Get implements raft.StableStore.
func (s *walStore) Get(key []byte) ([]byte, error) { return s.meta.GetStable(key) }

// SetUint64 implements raft.StableStore, in raft-wal's encoding.
func (s *walStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.LittleEndian.AppendUint64(nil, val))
}

// GetUint64 implements raft.StableStore, in raft-wal's encoding.
func (s *walStore) GetUint64(key []byte) (uint64, error) {
	raw, err := s.Get(key)
	switch {
	case err != nil:
		return 0, err
	case len(raw) == 0:
		return 0, nil
	case len(raw) != 8:
		return 0, fmt.Errorf("raft log %s: stable key %q holds %d bytes, not a uint64", s.dir, key, len(raw))
	}
	return binary.LittleEndian.Uint64(raw), nil
}

// Close closes the WAL and its meta database.
func (s *walStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.wal != nil {
		errs = append(errs, s.wal.Close())
		s.wal = nil
	}
	errs = append(errs, s.meta.Close())
	return errors.Join(errs...)
}
