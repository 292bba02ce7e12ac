package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// The raft log stores a node can keep its log and its term and vote in.
// Both fsync every append before raft counts it.
const (
	// LogStoreWAL is hashicorp/raft-wal: segment files written in order,
	// one fsync per append.
	LogStoreWAL = "wal"
	// LogStoreBoltDB is hashicorp/raft-boltdb v2: a bbolt B+tree, whose
	// commits fsync twice (the pages, then the meta page).
	LogStoreBoltDB = "boltdb"
)

// DefaultLogStore is the log store a new data directory gets. A directory
// that already holds a log keeps the kind it was written with.
const DefaultLogStore = LogStoreWAL

// Where each log store keeps its files under the data directory.
const (
	boltFile = "raft.db"
	walDir   = "wal"
)

func validLogStore(kind string) error {
	switch kind {
	case "", LogStoreWAL, LogStoreBoltDB:
		return nil
	}
	return fmt.Errorf("LogStore %q: use %q or %q", kind, LogStoreWAL, LogStoreBoltDB)
}

// existingLogStore says which log store dir holds, or "" when it holds none.
func existingLogStore(dir string) (string, error) {
	var found []string
	if _, err := os.Stat(filepath.Join(dir, boltFile)); err == nil {
		found = append(found, LogStoreBoltDB)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("store: inspect raft log: %w", err)
	}
	entries, err := os.ReadDir(filepath.Join(dir, walDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("store: inspect raft log: %w", err)
	}
	if len(entries) > 0 {
		found = append(found, LogStoreWAL)
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("store: data dir %s holds two raft logs, %s and %s/: keep the one this node last ran with and move the other aside",
		dir, boltFile, walDir)
}

// chooseLogStore picks the log store for dir: the one it already holds, or
// the one asked for (the default when none is asked for). Asking for a kind
// other than the one on disk is refused: the data would not be found.
func chooseLogStore(dir, asked string) (string, error) {
	have, err := existingLogStore(dir)
	if err != nil {
		return "", err
	}
	switch {
	case have == "" && asked == "":
		return DefaultLogStore, nil
	case have == "":
		return asked, nil
	case asked == "" || asked == have:
		return have, nil
	}
	return "", fmt.Errorf("store: data dir %s holds a %s raft log, but the %s log store was asked for: "+
		"run with -raft-log %s, or move the data to a %s log with 'plughost store backup', a new data dir and 'plughost store restore'",
		dir, have, asked, have, asked)
}

// openLogStore opens the raft log of the given kind in dir. It returns the
// log store, the stable store (term and vote) and what to close after raft.
func openLogStore(kind, dir string, logger hclog.Logger) (raft.LogStore, raft.StableStore, io.Closer, error) {
	switch kind {
	case LogStoreBoltDB:
		path := filepath.Join(dir, boltFile)
		bolt, err := raftboltdb.New(raftboltdb.Options{
			Path: path,
			// The freelist is rebuilt on open instead of written with every
			// commit (fewer pages per fsync; every append still syncs), and
			// the first 64 MiB are mapped up front so growth rarely remaps.
			BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType, InitialMmapSize: 64 << 20},
		})
		if err != nil {
			if isNoSpace(err) {
				return nil, nil, nil, fmt.Errorf("%w in %s: free space on that disk and start again", ErrNoSpace, dir)
			}
			return nil, nil, nil, fmt.Errorf("store: open raft log %s: %w", path, err)
		}
		b := boltLog{bolt, dir}
		return b, b, bolt, nil
	case LogStoreWAL:
		path := filepath.Join(dir, walDir)
		if err := os.MkdirAll(path, 0o700); err != nil {
			return nil, nil, nil, fmt.Errorf("store: raft log dir: %w", err)
		}
		w, err := openWALStore(path, dir, logger.Named("wal"))
		if err != nil {
			return nil, nil, nil, err
		}
		return w, w, w, nil
	}
	return nil, nil, nil, validLogStore(kind)
}

// boltLog is raft-boltdb with a full disk reported as ErrNoSpace. A bolt
// transaction that fails leaves nothing behind, so the next write after
// space is freed succeeds by itself.
type boltLog struct {
	*raftboltdb.BoltStore
	dir string // the data directory, named in errors
}

func (b boltLog) StoreLog(log *raft.Log) error {
	return noSpace(b.dir, b.BoltStore.StoreLog(log))
}

func (b boltLog) StoreLogs(logs []*raft.Log) error {
	return noSpace(b.dir, b.BoltStore.StoreLogs(logs))
}

func (b boltLog) DeleteRange(lo, hi uint64) error {
	return noSpace(b.dir, b.BoltStore.DeleteRange(lo, hi))
}

func (b boltLog) Set(key, val []byte) error {
	return noSpace(b.dir, b.BoltStore.Set(key, val))
}

func (b boltLog) SetUint64(key []byte, val uint64) error {
	return noSpace(b.dir, b.BoltStore.SetUint64(key, val))
}

// closers closes each of its members in order.
type closers []io.Closer

func (cs closers) Close() error {
	var errs []error
	for _, c := range cs {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// lockDir takes an exclusive lock on dir for as long as this process keeps
// the returned file open, so that two agents never share a raft log.
func lockDir(dir string) (io.Closer, error) {
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("store: data dir %s is in use by another process (it holds %s): stop it, or give this agent its own -data-dir", dir, path)
		}
		return nil, fmt.Errorf("store: lock data dir %s: %w", path, err)
	}
	return f, nil
}
