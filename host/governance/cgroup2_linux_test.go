package governance

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cgroup2Mount finds a cgroup2 mount: /sys/fs/cgroup on a unified host,
// /sys/fs/cgroup/unified on a hybrid one.
func cgroup2Mount() (string, error) {
	if isMount(defaultRoot, unix.CGROUP2_SUPER_MAGIC) {
		return defaultRoot, nil
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		_, post, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(sc.Text())
		if ok && strings.HasPrefix(post, "cgroup2 ") && len(fields) > 4 {
			return fields[4], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("/proc/self/mountinfo lists no cgroup2 filesystem")
}

// TestCgroupV2 runs the v2 path against a cgroup2 mount, whichever layout
// the host has. The process must be cloned into the group (UseCgroupFD),
// which works even where no controller is enabled; each limit must be
// enforced exactly where its controller is enabled for the parent's
// children, and otherwise say which subtree_control lacks it.
func TestCgroupV2(t *testing.T) {
	requireRoot(t)
	mount, err := cgroup2Mount()
	if err != nil {
		t.Skipf("no cgroup v2 mount: %v", err)
	}
	m := newTestManager(t, Config{Root: mount})
	if m.Mode() != ModeV2 {
		t.Fatalf("Mode %q with Root %s, want %q (reason %q)", m.Mode(), mount, ModeV2, m.Reason())
	}
	t.Logf("cgroup2 at %s; manager reason: %q", mount, m.Reason())
	g, err := m.New("v2", Limits{MemoryBytes: 64 << 20, CPU: 0.25, Pids: 32})
	if err != nil {
		t.Fatal(err)
	}

	subtree := filepath.Join(mount, testParent(t), "cgroup.subtree_control")
	enabled := fieldsOf(subtree)
	for _, s := range g.Enforcement() {
		t.Logf("%s %s: enforced=%v %s", s.Resource, s.Limit, s.Enforced, s.Reason)
		switch {
		case contains(enabled, s.Resource) && !s.Enforced:
			t.Errorf("%s is enabled in %s yet not enforced: %s", s.Resource, subtree, s.Reason)
		case !contains(enabled, s.Resource) && s.Enforced:
			t.Errorf("%s is enforced although %s lacks it", s.Resource, subtree)
		case !contains(enabled, s.Resource) && !strings.Contains(s.Reason, subtree):
			t.Errorf("%s reason %q does not name %s", s.Resource, s.Reason, subtree)
		case !s.Enforced && !strings.Contains(m.Reason(), s.Reason):
			t.Errorf("manager reason %q omits %q", m.Reason(), s.Reason)
		}
	}

	callers := withPdeathsig(&syscall.SysProcAttr{Setpgid: true})
	cmd, _, sawV2 := startWhereami(t, g, callers)
	if cmd.SysProcAttr != callers || callers.UseCgroupFD {
		t.Errorf("Start left %+v in cmd.SysProcAttr, want the caller's own back untouched", cmd.SysProcAttr)
	}
	if pgid, err := syscall.Getpgid(cmd.Process.Pid); err != nil || pgid != cmd.Process.Pid {
		t.Errorf("child's process group %d (%v): the caller's Setpgid was lost", pgid, err)
	}
	_, childV2 := procCgroups(t, strconv.Itoa(cmd.Process.Pid))
	if sawV2 != g.Path() || childV2 != g.Path() {
		t.Fatalf("child saw itself in cgroup %q first thing and is in %q now, want %q", sawV2, childV2, g.Path())
	}
	procs, err := os.ReadFile(filepath.Join(controllerDir(t, g, ""), "cgroup.procs"))
	if err != nil || strings.TrimSpace(string(procs)) != strconv.Itoa(cmd.Process.Pid) {
		t.Fatalf("cgroup.procs = %q (%v), want only the child %d", procs, err, cmd.Process.Pid)
	}
	u, err := g.Usage()
	if err != nil {
		t.Fatalf("Usage: %v", err)
	}
	t.Logf("child %d cloned into %s; usage %+v", cmd.Process.Pid, g.Path(), u)

	if err := g.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if err := waitExit(t, cmd, 10*time.Second); !killedBy(err, "killed") {
		t.Fatalf("child ended with %v, want killed", err)
	}
	dir := controllerDir(t, g, "")
	if err := g.Delete(); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there after Delete (%v)", dir, err)
	}
}
