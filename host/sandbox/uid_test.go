package sandbox

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testUID is the first of a few uids the tests give to processes and
// files: inside the default range, which nothing on a test machine uses.
const testUID = 1879113000

// startSleepAs runs sleep as uid and gid until stop is called or the test
// ends, whichever is first.
func startSleepAs(t *testing.T, uid, gid uint32) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cmd := exec.CommandContext(ctx, "sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: true}}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("sleep as uid %d gid %d: %v", uid, gid, err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			_ = cmd.Wait() // reaped: gone from /proc
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestUIDsSkipRunningProcesses: a uid that a running process has as its
// uid, or as its gid, is never given to a plugin (a plugin with it could
// signal and trace that process), though no user database lists it (as
// for systemd's dynamic users, which /etc/passwd does not).
func TestUIDsSkipRunningProcesses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting a process as another uid needs root")
	}
	r := strconv.Itoa(testUID) + "-" + strconv.Itoa(testUID+1)
	cfg := Config{Identity: "a", UIDRange: r, SubIDFiles: []string{}, DynamicUIDDir: t.TempDir()}
	stopA := startSleepAs(t, testUID, 65534)
	stopB := startSleepAs(t, 65534, testUID+1)
	s := newSandbox(t, cfg)
	if uid, err := s.allocate("echo"); !errors.Is(err, ErrNoUID) {
		t.Fatalf("a plugin got uid %d (%v) while processes run as uid %d and gid %d", uid, err, testUID, testUID+1)
	}
	stopA()
	stopB()
	if uid, err := s.allocate("echo"); err != nil {
		t.Fatalf("once the processes ended: uid %d, %v", uid, err)
	}
}

// TestUIDsSkipOtherAllocators: a uid inside a subordinate id range
// (/etc/subuid for the uid, /etc/subgid for the same number as gid), or
// one systemd gave a DynamicUser= service (a lock file or a "direct:"
// symlink in its dynamic-uid dir), is never given to a plugin.
func TestUIDsSkipOtherAllocators(t *testing.T) {
	dir := t.TempDir()
	subuid, subgid, dyn := filepath.Join(dir, "subuid"), filepath.Join(dir, "subgid"), filepath.Join(dir, "dynamic-uid")
	write := func(file, text string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n := func(i int) string { return strconv.Itoa(testUID + i) }
	write(subuid, "# containers\nalice:"+n(0)+":1\nbroken line\nbob:x:y\n")
	write(subgid, "carol:"+n(1)+":1\n")
	if err := os.Mkdir(dyn, 0o755); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(dyn, n(2)), "")
	if err := os.Symlink("some-service", filepath.Join(dyn, "direct:"+n(3))); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Identity: "a", UIDRange: n(0) + "-" + n(3), SubIDFiles: []string{subuid, subgid}, DynamicUIDDir: dyn}
	s := newSandbox(t, cfg)
	if uid, err := s.allocate("echo"); !errors.Is(err, ErrNoUID) {
		t.Fatalf("a plugin got uid %d (%v): %s and %s are in subordinate id ranges, %s and %s systemd's", uid, err, n(0), n(1), n(2), n(3))
	}
	// Without those records, the same range has room.
	cfg.SubIDFiles, cfg.DynamicUIDDir = []string{filepath.Join(dir, "absent")}, filepath.Join(dir, "absent-dir")
	if uid, err := newSandbox(t, cfg).allocate("echo"); err != nil {
		t.Fatalf("with no records: uid %d, %v", uid, err)
	}
}

// TestDefaultUIDRangeAvoidsOtherAllocators: the default range shares no
// uid with systemd's DynamicUser= pool or container ranges, the
// subordinate ids useradd hands out, nobody, or 2^31 and above.
func TestDefaultUIDRangeAvoidsOtherAllocators(t *testing.T) {
	lo, hi, err := ParseUIDRange(DefaultUIDRange)
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range []struct {
		what   string
		lo, hi uint64
	}{
		{"systemd DynamicUser= uids", 61184, 65519},
		{"nobody and 16-bit -1", 65534, 65535},
		// useradd: SUB_UID_MIN 100000 to SUB_UID_MAX 600100000, 65536 each.
		{"useradd's /etc/subuid and /etc/subgid ranges", 100000, 600100000 + 65536 - 1},
		{"systemd container uid ranges", 524288, 1879048191},
		{"uids at or above 2^31-1", 1<<31 - 1, 1<<32 - 1},
	} {
		if uint64(lo) <= other.hi && other.lo <= uint64(hi) {
			t.Errorf("default plugin_uid_range %s overlaps %s (%d-%d)", DefaultUIDRange, other.what, other.lo, other.hi)
		}
	}
	if hi-lo+1 < 65536 {
		t.Errorf("default plugin_uid_range %s has %d uids, want 65536", DefaultUIDRange, hi-lo+1)
	}
}

// TestUIDsFindTheLastFree: when a single uid of the range is free, a
// plugin gets it, though the hashed candidates may all miss it.
func TestUIDsFindTheLastFree(t *testing.T) {
	subuid := filepath.Join(t.TempDir(), "subuid")
	if err := os.WriteFile(subuid, []byte("alice:"+strconv.Itoa(testUID)+":65535\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	last := uint32(testUID + 65535)
	s := newSandbox(t, Config{Identity: "a", UIDRange: strconv.Itoa(testUID) + "-" + strconv.Itoa(int(last)), SubIDFiles: []string{subuid}, DynamicUIDDir: t.TempDir()})
	if uid, err := s.allocate("echo"); err != nil || uid != last {
		t.Fatalf("got uid %d, %v; want %d, the one free", uid, err, last)
	}
}
