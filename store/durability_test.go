package store

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// writeMix writes a little of everything and returns the namespace's keys
// as acknowledged.
func writeMix(t *testing.T, s *Store, ns string, n int) {
	t.Helper()
	for i := range n {
		put(t, s, ns, "key/"+itoa(int64(i)), "value "+itoa(int64(i)))
	}
	put(t, s, ns, "key/0", "overwritten")
	if _, err := s.Delete(testenv.Context(t, 20*time.Second), &storev1.DeleteRequest{Namespace: ns, Key: []byte("key/1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: ns, Key: []byte("ttl"), Value: []byte("v"), TtlMs: int64(time.Hour / time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Txn(testenv.Context(t, 20*time.Second), &storev1.TxnRequest{Namespace: ns, Success: []*storev1.TxnOp{putTxnOp("txn/a", "1", 0), putTxnOp("txn/b", "2", 0)}}); err != nil {
		t.Fatal(err)
	}
}

// logStores runs test once for each raft log store.
func logStores(t *testing.T, test func(t *testing.T, kind string)) {
	for _, kind := range []string{LogStoreWAL, LogStoreBoltDB} {
		t.Run(kind, func(t *testing.T) { test(t, kind) })
	}
}

// logFiles is where each log store keeps its log under the data dir.
var logFiles = map[string]string{LogStoreWAL: walDir, LogStoreBoltDB: boltFile}

func TestDurableReopen(t *testing.T) { logStores(t, testDurableReopen) }

func testDurableReopen(t *testing.T, kind string) {
	dir := t.TempDir()
	cfg := diskConfig(dir)
	cfg.LogStore = kind
	s := openDisk(t, cfg)
	writeMix(t, s, "app", 50)
	writeMix(t, s, SystemNamespace, 5)
	wantApp, wantSys := listAll(t, s, "app"), listAll(t, s, SystemNamespace)
	lastRev := s.Revision()
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, logFiles[kind])); err != nil {
		t.Fatalf("no %s raft log on disk: %v", kind, err)
	}

	s = openDisk(t, cfg) // a new port: the node's address is updated
	defer s.Close()
	if got := listAll(t, s, "app"); !equalKVs(got, wantApp) {
		t.Fatalf("after reopen:\n got %v\nwant %v", got, wantApp)
	}
	if got := listAll(t, s, SystemNamespace); !equalKVs(got, wantSys) {
		t.Fatalf("_sys after reopen:\n got %v\nwant %v", got, wantSys)
	}
	if s.Revision() < lastRev {
		t.Fatalf("revision went back from %d to %d", lastRev, s.Revision())
	}
	if p := put(t, s, "app", "after", "v"); p.GetRevision() <= lastRev {
		t.Fatalf("new write at revision %d, not after %d", p.GetRevision(), lastRev)
	}
	// The log replay rebuilt the watch history.
	w := startWatch(t, s, &storev1.WatchRequest{Namespace: "app", StartRevision: 1})
	testenv.Eventually(t, 5*time.Second, "replayed history", func() bool { return len(w.responses()) >= 55 })
	checkOrdered(t, w.responses())

	testenv.Eventually(t, 5*time.Second, "raft address to follow the new port", func() bool {
		fut := s.node.raft.GetConfiguration()
		if fut.Error() != nil {
			return false
		}
		srv := fut.Configuration().Servers
		return len(srv) == 1 && srv[0].Address == s.node.addr
	})
}

func TestSnapshotThenReopen(t *testing.T) { logStores(t, testSnapshotThenReopen) }

func testSnapshotThenReopen(t *testing.T, kind string) {
	dir := t.TempDir()
	cfg := diskConfig(dir)
	cfg.LogStore = kind
	s := openDisk(t, cfg)
	writeMix(t, s, "app", 30)
	if err := s.node.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	snapRev := s.Revision()
	writeMix(t, s, "app-2", 10) // in the log after the snapshot
	put(t, s, "app", "key/2", "after the snapshot")
	wantApp, wantApp2 := listAll(t, s, "app"), listAll(t, s, "app-2")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	snaps, err := raft.NewFileSnapshotStore(dir, 1, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if list, err := snaps.List(); err != nil || len(list) == 0 {
		t.Fatalf("no snapshot on disk: %v %v", list, err)
	}

	s = openDisk(t, cfg)
	defer s.Close()
	if got := listAll(t, s, "app"); !equalKVs(got, wantApp) {
		t.Fatalf("app after snapshot+reopen:\n got %v\nwant %v", got, wantApp)
	}
	if got := listAll(t, s, "app-2"); !equalKVs(got, wantApp2) {
		t.Fatalf("app-2 after snapshot+reopen:\n got %v\nwant %v", got, wantApp2)
	}
	// TTLs survive the snapshot, and quotas' usage is rebuilt from it.
	if kv := get(t, s, "app", "ttl"); kv.GetExpiresAtUnixMs() == 0 {
		t.Errorf("TTL lost in the snapshot: %v", kv)
	}
	if u := s.fsm.Usage("app"); u.Keys != int64(len(wantApp)) {
		t.Errorf("usage after restore %+v, want %d keys", u, len(wantApp))
	}
	// History before the snapshot is gone, and says so.
	err = s.Watch(testenv.Context(t, 20*time.Second), &storev1.WatchRequest{Namespace: "app", StartRevision: snapRev - 1}, func(*storev1.WatchResponse) error { return nil })
	wantErr(t, err, ErrCompacted)
}

// TestOpenFailsCleanlyWhenRaftAddrTaken: a raft address in use is an error
// that names it, with the log and snapshot stores opened so far closed again
// (it once panicked closing them).
func TestOpenFailsCleanlyWhenRaftAddrTaken(t *testing.T) {
	logStores(t, testOpenFailsCleanlyWhenRaftAddrTaken)
}

func testOpenFailsCleanlyWhenRaftAddrTaken(t *testing.T, kind string) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := diskConfig(t.TempDir())
	cfg.LogStore = kind
	cfg.RaftAddr = taken.Addr().String()
	s, err := Open(cfg)
	if err == nil {
		s.Close()
		t.Fatalf("Open on a taken raft address %s succeeded", cfg.RaftAddr)
	}
	if !strings.Contains(err.Error(), "raft transport on "+cfg.RaftAddr) {
		t.Fatalf("error %q does not name the raft address", err)
	}
	// The raft log was closed: it opens again at once (both stores lock
	// their bolt file while open).
	taken.Close()
	s = openDisk(t, cfg)
	s.Close()
}

// A new data dir gets the default log; a dir keeps the log it was written
// with whatever the default; asking for the other kind is refused with the
// fix, and the data is still there after the refusal.
func TestLogStoreChoice(t *testing.T) {
	fresh := t.TempDir()
	s := openDisk(t, diskConfig(fresh))
	s.Close()
	if _, err := os.Stat(filepath.Join(fresh, logFiles[DefaultLogStore])); err != nil {
		t.Fatalf("a new data dir has no %s log: %v", DefaultLogStore, err)
	}

	for _, kind := range []string{LogStoreWAL, LogStoreBoltDB} {
		other := LogStoreWAL
		if kind == LogStoreWAL {
			other = LogStoreBoltDB
		}
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			cfg := diskConfig(dir)
			cfg.LogStore = kind
			s := openDisk(t, cfg)
			put(t, s, "app", "k", "v")
			s.Close()

			cfg.LogStore = other
			s, err := Open(cfg)
			if err == nil {
				s.Close()
				t.Fatalf("a %s data dir opened as %s", kind, other)
			}
			for _, want := range []string{"holds a " + kind + " raft log", "-raft-log " + kind, "plughost store backup"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("refusal %q does not say %q", err, want)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, logFiles[other])); err == nil {
				t.Errorf("the refused open left a %s log behind", other)
			}

			cfg.LogStore = "" // the default: whatever the dir holds
			s = openDisk(t, cfg)
			defer s.Close()
			if kv := get(t, s, "app", "k"); string(kv.GetValue()) != "v" {
				t.Fatalf("after the refusal the key reads %v", kv)
			}
		})
	}

	cfg := diskConfig(t.TempDir())
	cfg.LogStore = "rocksdb"
	if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), `LogStore "rocksdb": use "wal" or "boltdb"`) {
		t.Fatalf("an unknown log store: %v", err)
	}
}

// A data dir open in one store is refused to another, which names the dir
// and the fix instead of waiting on the log's lock.
func TestDataDirInUse(t *testing.T) {
	cfg := diskConfig(t.TempDir())
	s := openDisk(t, cfg)
	defer s.Close()
	second, err := Open(cfg)
	if err == nil {
		second.Close()
		t.Fatal("a second store opened a data dir in use")
	}
	if !strings.Contains(err.Error(), "data dir "+cfg.Dir+" is in use by another process") {
		t.Fatalf("refusal %q does not name the dir", err)
	}
	put(t, s, "app", "still", "serving")
}
