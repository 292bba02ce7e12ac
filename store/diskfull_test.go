package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// smallDisk mounts a tmpfs of sizeMiB on a temporary directory for the
// test and unmounts it when the test ends, failed or not. It needs root;
// without the right to mount, the test is skipped.
func smallDisk(t *testing.T, sizeMiB int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%dm,mode=0700", sizeMiB)); err != nil {
		t.Skipf("this test fills a small disk and needs to mount a tmpfs (as root): mount on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			// Something still holds a file there: detach it anyway.
			if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
				t.Errorf("unmount the test's tmpfs %s: %v", dir, err)
			}
		}
	})
	return dir
}

// fillDisk writes a file in dir until the disk it is on is full and
// returns its path; removing it frees the space.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, chunk := range []int{1 << 20, 4 << 10, 1} {
		buf := make([]byte, chunk)
		for i := 0; i < 1<<16; i++ {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill %s: %v", path, err)
				}
				break
			}
		}
	}
	return path
}

// TestWALStoreFullDisk fills the disk under a raft-wal log: appends fail
// with ErrNoSpace naming the data directory, and once space is freed the
// same appends succeed, with no reopen by the caller; what was
// acknowledged is all there after a restart.
func TestWALStoreFullDisk(t *testing.T) {
	dir := smallDisk(t, 24)
	walPath := filepath.Join(dir, walDir)
	if err := os.Mkdir(walPath, 0o700); err != nil {
		t.Fatal(err)
	}
	logger := hclog.NewNullLogger()
	if testing.Verbose() {
		logger = hclog.New(&hclog.LoggerOptions{Name: "wal", Level: hclog.Info})
	}
	s, err := openWALStore(walPath, dir, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()

	data := func(i uint64) []byte { return bytes.Repeat([]byte{byte(i)}, 8<<10) }
	batch := func(first uint64) []*raft.Log {
		logs := make([]*raft.Log, 16)
		for i := range logs {
			idx := first + uint64(i)
			logs[i] = &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data(idx)}
		}
		return logs
	}
	next := uint64(1)
	for range 8 {
		if err := s.StoreLogs(batch(next)); err != nil {
			t.Fatalf("append before the disk is full: %v", err)
		}
		next += 16
	}
	// Full but for a little: the append that ends a segment fits, the
	// next segment does not.
	filler := fillDisk(t, dir)
	if err := os.Truncate(filler, fileSize(t, filler)-256<<10); err != nil {
		t.Fatal(err)
	}

	// Append until the WAL needs space it cannot get: a new segment.
	var full error
	for range 1000 {
		if err := s.StoreLogs(batch(next)); err != nil {
			full = err
			break
		}
		next += 16
	}
	if full == nil {
		t.Fatal("1000 appends on a full disk all succeeded")
	}
	t.Logf("first failed append: %v", full)
	if !errors.Is(full, ErrNoSpace) || !strings.Contains(full.Error(), dir) {
		t.Fatalf("append on a full disk: %v; want ErrNoSpace naming %s", full, dir)
	}
	for range 3 { // raft retries; the disk is still full
		if err := s.StoreLogs(batch(next)); !errors.Is(err, ErrNoSpace) {
			t.Fatalf("append again on a full disk: %v; want ErrNoSpace", err)
		}
	}
	if got, err := s.LastIndex(); err != nil || got != next-1 {
		t.Fatalf("last index on a full disk = %d, %v; want %d", got, err, next-1)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if err := s.StoreLogs(batch(next)); err != nil {
			t.Fatalf("append after space was freed: %v", err)
		}
		next += 16
	}
	check := func(s *walStore) {
		t.Helper()
		if got, err := s.LastIndex(); err != nil || got != next-1 {
			t.Fatalf("last index = %d, %v; want %d", got, err, next-1)
		}
		for i := uint64(1); i < next; i++ {
			var l raft.Log
			if err := s.GetLog(i, &l); err != nil || !bytes.Equal(l.Data, data(i)) {
				t.Fatalf("entry %d: %v (%d bytes)", i, err, len(l.Data))
			}
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = openWALStore(walPath, dir, logger); err != nil {
		t.Fatal(err)
	}
	check(s)
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestClusterFullDisk fills the disk of a three-node cluster's leader,
// with room left to finish its WAL segment but not to start the next one:
// writes go on at another leader or are refused with ErrNoSpace, never
// acknowledged and then lost, nor applied after a refusal; once the disk
// has room again the node follows the cluster's writes without a restart.
func TestClusterFullDisk(t *testing.T) {
	disk := smallDisk(t, 24)
	var nodes []*Store
	for i := range 3 {
		cfg := diskConfig(t.TempDir())
		if i == 0 {
			cfg.Dir = filepath.Join(disk, "data")
		}
		cfg.NodeID = fmt.Sprint("node", i+1)
		cfg.Bootstrap = i == 0
		cfg.LogStore = LogStoreWAL
		if testing.Verbose() {
			cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: cfg.NodeID, Level: hclog.Warn})
		}
		s, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		nodes = append(nodes, s)
	}
	if err := nodes[0].WaitForLeader(testenv.Context(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, s := range nodes[1:] {
		if err := nodes[0].node.raft.AddVoter(raft.ServerID(s.cfg.NodeID), s.node.addr, 0, 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	full := nodes[0]

	value := func(i int) []byte { return fmt.Appendf(bytes.Repeat([]byte{'v'}, 8<<10), "%d", i) }
	acked := map[string]int{}   // key: i of its value
	refused := map[string]int{} // key: ErrNoSpace
	var last int64
	write := func(i int) {
		key := fmt.Sprint("k", i)
		resp, err := leaderOf(t, nodes).Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte(key), Value: value(i)})
		switch {
		case err == nil:
			acked[key], last = i, resp.GetRevision()
		case errors.Is(err, ErrNoSpace):
			if !strings.Contains(err.Error(), disk) {
				t.Errorf("put %s: %v; the error does not name the data dir", key, err)
			}
			refused[key] = i
		case errors.Is(err, ErrNotLeader):
			// Leadership moved during the write (it may or may not have
			// been applied).
		default:
			t.Fatalf("put %s: %v; want success, ErrNoSpace or ErrNotLeader", key, err)
		}
	}
	for i := range 50 {
		write(i)
	}
	filler := fillDisk(t, disk)
	if err := os.Truncate(filler, fileSize(t, filler)-256<<10); err != nil {
		t.Fatal(err)
	}
	// 6 MiB of writes: past the end of the full node's segment and the
	// room left after it.
	for i := 50; i < 800; i++ {
		write(i)
	}
	if got := full.Revision(); got >= last {
		t.Fatalf("%s applied revision %d of %d on a full disk", full.cfg.NodeID, got, last)
	}
	t.Logf("%d writes acknowledged, %d refused for lack of space; %s at revision %d of %d",
		len(acked), len(refused), full.cfg.NodeID, full.Revision(), last)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for i := 800; i < 850; i++ {
		write(i)
	}
	testenv.Eventually(t, 15*time.Second, full.cfg.NodeID+" following the cluster's writes again", func() bool {
		return full.Revision() >= last
	})
	for _, s := range nodes {
		for key, i := range acked {
			if kv := sessionGet(t, s, "app", key, last).GetKv(); !bytes.Equal(kv.GetValue(), value(i)) {
				t.Fatalf("%s: acknowledged %s is %q", s.cfg.NodeID, key, kv.GetValue())
			}
		}
		for key := range refused {
			if kv := sessionGet(t, s, "app", key, last).GetKv(); kv != nil {
				t.Fatalf("%s: %s was refused for lack of space but is there", s.cfg.NodeID, key)
			}
		}
	}
}

// TestWALStoreFinishesSeal opens a WAL whose tail segment was sealed on
// disk but not in its meta database, as a segment rotation leaves it when
// the meta commit fails (the disk is full, or the process dies there):
// appends go on in a new segment.
func TestWALStoreFinishesSeal(t *testing.T) {
	dir := t.TempDir()
	walPath := filepath.Join(dir, walDir)
	if err := os.Mkdir(walPath, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := openWALStore(walPath, dir, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	entry := func(i uint64) *raft.Log {
		return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: fmt.Appendf(nil, "entry %d", i)}
	}
	for i := uint64(1); i <= 10; i++ {
		if err := s.StoreLogs([]*raft.Log{entry(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Seal the tail's file the way a rotation does, and stop there.
	meta := &metadb.BoltMetaDB{}
	st, err := meta.Load(walPath)
	if err != nil {
		t.Fatal(err)
	}
	sw, err := segment.NewFiler(walPath, walfs.New()).RecoverTail(st.Segments[len(st.Segments)-1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.ForceSeal(); err != nil {
		t.Fatal(err)
	}
	sw.Close()
	meta.Close()

	if s, err = openWALStore(walPath, dir, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := uint64(11); i <= 20; i++ {
		if err := s.StoreLogs([]*raft.Log{entry(i)}); err != nil {
			t.Fatalf("append %d after a rotation stopped half way: %v", i, err)
		}
	}
	for i := uint64(1); i <= 20; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil || !bytes.Equal(l.Data, entry(i).Data) {
			t.Fatalf("entry %d: %v %q", i, err, l.Data)
		}
	}
}
