package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/types"
)

// Modes of what the store writes: the raft log, its snapshots and the WAL's
// meta database hold every key of every namespace. Libraries create them
// with modes of their own (raft's snapshots 0755 and 0666, raft-wal's
// segments 0644) less the umask; the store sets these after.
const (
	privateDirMode  os.FileMode = 0o700
	privateFileMode os.FileMode = 0o600
)

// privateDir sets dir to 0700 and each file directly in it to 0600.
func privateDir(dir string) error {
	if err := os.Chmod(dir, privateDirMode); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.Type().IsRegular() {
			errs = append(errs, os.Chmod(filepath.Join(dir, e.Name()), privateFileMode))
		}
	}
	return errors.Join(errs...)
}

// privateSnapshots is raft's file snapshot store with its directories 0700
// and files 0600.
type privateSnapshots struct {
	*raft.FileSnapshotStore
	dir string // <store dir>/snapshots
}

var _ raft.SnapshotStore = (*privateSnapshots)(nil)

func newPrivateSnapshots(base string, retain int, logger hclog.Logger) (*privateSnapshots, error) {
	fss, err := raft.NewFileSnapshotStoreWithLogger(base, retain, logger)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(base, "snapshots")
	if err := os.Chmod(dir, privateDirMode); err != nil {
		return nil, err
	}
	return &privateSnapshots{FileSnapshotStore: fss, dir: dir}, nil
}

// Create starts a snapshot, which raft writes into <id>.tmp and renames to
// <id> when the sink closes: the first is made private now, the second
// once it is whole.
func (s *privateSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	if err := privateDir(filepath.Join(s.dir, sink.ID()+".tmp")); err != nil {
		_ = sink.Cancel()
		return nil, fmt.Errorf("store: snapshot %s: %w", sink.ID(), err)
	}
	return &privateSink{SnapshotSink: sink, dir: filepath.Join(s.dir, sink.ID())}, nil
}

// privateSink makes the finished snapshot's directory and files private.
type privateSink struct {
	raft.SnapshotSink
	dir string
}

func (s *privateSink) Close() error {
	if err := s.SnapshotSink.Close(); err != nil {
		return err
	}
	if err := privateDir(s.dir); err != nil {
		return fmt.Errorf("store: snapshot %s: %w", s.ID(), err)
	}
	return nil
}

// privateVFS is raft-wal's file system with new segment files 0600.
type privateVFS struct{ *walfs.FS }

func (v privateVFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	f, err := v.FS.Create(dir, name, size)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(filepath.Join(dir, name), privateFileMode); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
