package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOwnCgroup: agents on one machine get cgroups of their own, even with
// one node name; the same data dir gets the same cgroup again.
func TestOwnCgroup(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	own := func(node, dir string) cgroupRecord {
		t.Helper()
		rec, err := ownCgroup(&Config{Node: node, DataDir: dir, CgroupParent: "plughost"})
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	a, b := own("n1", dirA), own("n1", dirB)
	if a.Group == b.Group {
		t.Errorf("two data dirs share cgroup %s", a.Group)
	}
	if again := own("n1", dirA); again != a {
		t.Errorf("the same data dir got %+v, then %+v", a, again)
	}
	if !strings.HasPrefix(a.Group, "agent-n1-") || a.Parent != "plughost" || a.DataDir != dirA {
		t.Errorf("own cgroup %+v", a)
	}
	if long := own(strings.Repeat("n", 300), dirA); len(long.Group) > 100 {
		t.Errorf("a long node name makes a %d-byte cgroup name", len(long.Group))
	}

	if err := writeCgroupRecord(dirA, a); err != nil {
		t.Fatal(err)
	}
	if got, err := readCgroupRecord(dirA); err != nil || got != a {
		t.Errorf("record read back as %+v, %v; want %+v", got, err, a)
	}
}

// TestLockCgroupWaitsForTheReaper: while the reaper of an earlier run holds
// the data dir's cgroup lock, a starting agent waits, and says what holds
// it when it gives up; once the reaper is done, the agent takes it.
func TestLockCgroupWaitsForTheReaper(t *testing.T) {
	dir := t.TempDir()
	reaper, err := os.OpenFile(filepath.Join(dir, cgroupLockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer reaper.Close()
	if err := syscall.Flock(int(reaper.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if f, err := lockCgroup(context.Background(), dir, 200*time.Millisecond); err == nil {
		f.Close()
		t.Fatal("took the cgroup lock that the reaper holds")
	} else if !strings.Contains(err.Error(), "still holds "+filepath.Join(dir, cgroupLockFile)) {
		t.Errorf("error %q does not say what holds the lock", err)
	}

	reaper.Close() // the reaper exits
	f, err := lockCgroup(context.Background(), dir, time.Second)
	if err != nil {
		t.Fatalf("lock after the reaper exited: %v", err)
	}
	f.Close()
}

// TestSameAgent: a recorded cgroup is cleaned only when its name carries
// this data dir's hash; a crafted record (an empty group, another agent's,
// a path) is not.
func TestSameAgent(t *testing.T) {
	own := "agent-n1-1a2b3c4d"
	for _, tc := range []struct {
		group string
		want  bool
	}{
		{"agent-n1-1a2b3c4d", true},
		{"agent-renamed-1a2b3c4d", true},
		{"", false},
		{"agent--1a2b3c4d", false},
		{"agent-n2-ffffffff", false},
		{"n1-1a2b3c4d", false},
		{"agent-x/../y-1a2b3c4d", false},
		{"..", false},
	} {
		if got := sameAgent(tc.group, own); got != tc.want {
			t.Errorf("sameAgent(%q, %q) = %v, want %v", tc.group, own, got, tc.want)
		}
	}
}
