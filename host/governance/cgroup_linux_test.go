package governance

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
)

// These tests run against the host's own layout (Root ""): cgroup v1 on a
// v1 or hybrid host, cgroup v2 on a unified one.

func TestMemoryLimitOOMKills(t *testing.T) {
	requireRoot(t)
	m := newTestManager(t, Config{})
	requireCgroups(t, m)
	const limit = 64 << 20
	g, err := m.New("memhog", Limits{MemoryBytes: limit, Pids: 64})
	if err != nil {
		t.Fatal(err)
	}
	requireEnforced(t, g, ResourceMemory)

	cmd, out := childCmd(t, "memhog")
	cmd.SysProcAttr = withPdeathsig(nil)
	if err := g.Start(cmd, cmd.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := waitExit(t, cmd, 30*time.Second); !killedBy(err, "killed") {
		t.Fatalf("memory hog ended with %v, want SIGKILL from the OOM killer; output %q", err, out)
	}
	oom, err := g.OOMKilled()
	if err != nil || !oom {
		t.Fatalf("OOMKilled = %v, %v; want true", oom, err)
	}
	u, err := g.Usage()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: OOM kills %d, peak %.1f MiB of a %d MiB limit, now %.1f MiB",
		m.Mode(), u.OOMKills, mib(u.MemoryPeakBytes), limit>>20, mib(u.MemoryBytes))
	if u.MemoryPeakBytes == 0 {
		t.Log("this kernel keeps no memory peak for the group (cgroup v2 before memory.peak)")
	} else if u.MemoryPeakBytes < limit*9/10 || u.MemoryPeakBytes > limit+(1<<20) {
		t.Errorf("peak %d bytes, want close to the %d byte limit", u.MemoryPeakBytes, limit)
	}
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

func TestCPUQuota(t *testing.T) {
	requireRoot(t)
	m := newTestManager(t, Config{})
	requireCgroups(t, m)
	g, err := m.New("cpuhog", Limits{CPU: 0.25, MemoryBytes: 256 << 20, Pids: 64})
	if err != nil {
		t.Fatal(err)
	}
	requireEnforced(t, g, ResourceCPU)

	// Measure from the moment the child starts spinning, so that its
	// (throttled) start-up does not count.
	cmd, out := childCmd(t, "cpuhog", "GOVTEST_SECONDS=3")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = pw
	cmd.SysProcAttr = withPdeathsig(nil)
	if err := g.Start(cmd, cmd.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	pw.Close()
	spinning := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(pr).ReadString('\n')
		spinning <- line
		pr.Close()
	}()
	select {
	case line := <-spinning:
		if line != "spinning\n" {
			t.Fatalf("cpu hog said %q, want \"spinning\"; output %q", line, out)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("cpu hog did not start spinning within 20s; output %q", out)
	}
	before, err := g.Usage()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := waitExit(t, cmd, 20*time.Second); err != nil {
		t.Fatalf("cpu hog: %v; output %q", err, out)
	}
	wall := time.Since(start)
	after, err := g.Usage()
	if err != nil {
		t.Fatal(err)
	}
	used := time.Duration(after.CPUUsageNanos - before.CPUUsageNanos)
	throttled := time.Duration(after.CPUThrottledNanos - before.CPUThrottledNanos)
	share := used.Seconds() / wall.Seconds()
	t.Logf("%s: a 0.25-core hog got %.3f core: %s of CPU in %s, throttled for %s",
		m.Mode(), share, used.Round(time.Millisecond), wall.Round(time.Millisecond), throttled.Round(time.Millisecond))
	if share < 0.15 || share > 0.35 {
		t.Errorf("CPU share %.3f core, want 0.25 ± 0.10", share)
	}
	if throttled <= 0 {
		t.Errorf("throttled time %s, want > 0", throttled)
	}
}

func TestPidsLimit(t *testing.T) {
	requireRoot(t)
	m := newTestManager(t, Config{})
	requireCgroups(t, m)
	const maxPids = 32
	g, err := m.New("forkbomb", Limits{Pids: maxPids, MemoryBytes: 256 << 20})
	if err != nil {
		t.Fatal(err)
	}
	requireEnforced(t, g, ResourcePids)
	pidsDir := controllerDir(t, g, "pids")

	cmd, out := childCmd(t, "forkbomb")
	cmd.SysProcAttr = withPdeathsig(nil)
	if err := g.Start(cmd, cmd.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	var most uint64
	testenv.Eventually(t, 20*time.Second, "the kernel to refuse a fork at pids.max", func() bool {
		u, err := g.Usage()
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, u.Pids)
		if u.Pids > maxPids {
			t.Fatalf("pids.current %d is above pids.max %d", u.Pids, maxPids)
		}
		refused, _ := readKey(filepath.Join(pidsDir, "pids.events"), "max")
		return refused > 0
	})
	refused, _ := readKey(filepath.Join(pidsDir, "pids.events"), "max")
	t.Logf("%s: fork bomb held at pids.max %d: most seen %d, forks refused so far %d", m.Mode(), maxPids, most, refused)
	if u, err := g.Usage(); err != nil || u.PidsLimitHits < refused {
		t.Errorf("Usage reports %d forks refused (%v); pids.events said %d a moment earlier", u.PidsLimitHits, err, refused)
	}
	if peak, ok := readNumber(filepath.Join(pidsDir, "pids.peak")); ok {
		t.Logf("pids.peak %d", peak)
		if peak != maxPids {
			t.Errorf("pids.peak %d, want exactly pids.max %d", peak, maxPids)
		}
	}

	if err := g.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if procs, err := g.b.procs(); err != nil || len(procs) != 0 {
		t.Fatalf("after Kill the group holds %v (%v), want nothing", procs, err)
	}
	if err := waitExit(t, cmd, 10*time.Second); !killedBy(err, "killed") {
		t.Fatalf("fork bomb ended with %v, want killed; output %q", err, out)
	}
}

// TestPlacement: right after Start the child is in the group in every
// controller, no thread of the agent was left in the group, and the thread
// that started the child is back in its own cgroups.
func TestPlacement(t *testing.T) {
	requireRoot(t)
	m := newTestManager(t, Config{})
	requireCgroups(t, m)
	g, err := m.New("placed", Limits{MemoryBytes: 128 << 20, CPU: 1, Pids: 64})
	if err != nil {
		t.Fatal(err)
	}

	runtime.LockOSThread() // so that thread-self is the thread Start runs on
	defer runtime.UnlockOSThread()
	homeV1, homeV2 := procCgroups(t, "thread-self")
	cmd, sawV1, sawV2 := startWhereami(t, g, withPdeathsig(nil))
	nowV1, nowV2 := procCgroups(t, "thread-self")
	if !maps.Equal(homeV1, nowV1) || homeV2 != nowV2 {
		t.Errorf("the starting thread did not return home:\nbefore %v %q\nafter  %v %q", homeV1, homeV2, nowV1, nowV2)
	}

	pid := strconv.Itoa(cmd.Process.Pid)
	childV1, childV2 := procCgroups(t, pid)
	switch m.Mode() {
	case ModeV1:
		for _, c := range []string{"memory", "cpu", "cpuacct", "pids"} {
			if sawV1[c] != g.Path() {
				t.Errorf("child saw itself in %s cgroup %q first thing, want %q", c, sawV1[c], g.Path())
			}
			if childV1[c] != g.Path() {
				t.Errorf("child is in %s cgroup %q, want %q", c, childV1[c], g.Path())
			}
		}
	case ModeV2:
		if sawV2 != g.Path() || childV2 != g.Path() {
			t.Errorf("child saw itself in cgroup %q first thing and is in %q now, want %q", sawV2, childV2, g.Path())
		}
	}
	t.Logf("%s: child %s saw itself in %s as the first thing it did", m.Mode(), pid, g.Path())

	for c, dir := range groupDirs(t, g) {
		procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(string(procs)); !slices.Equal(got, []string{pid}) {
			t.Errorf("%s cgroup.procs = %v, want only the child %s", c, got, pid)
		}
	}

	if err := g.Delete(); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := waitExit(t, cmd, 10*time.Second); !killedBy(err, "killed") {
		t.Fatalf("child ended with %v, want killed by Delete", err)
	}
	for c, dir := range groupDirs(t, g) {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s cgroup %s still there after Delete (%v)", c, dir, err)
		}
	}
	if _, err := g.Usage(); !errors.Is(err, ErrGroupDeleted) {
		t.Errorf("Usage after Delete: %v, want ErrGroupDeleted", err)
	}
	if err := g.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

// TestCleanStale: a group left with a live process by an agent that
// crashed is found by the next agent's CleanStale, its process killed and
// its cgroup removed; a live group of the same Manager is left alone.
func TestCleanStale(t *testing.T) {
	requireRoot(t)
	crashed := newTestManager(t, Config{})
	requireCgroups(t, crashed)
	g, cmd := startSleeper(t, crashed, "left-behind")

	if cleaned, err := crashed.CleanStale(); err != nil || len(cleaned) != 0 {
		t.Fatalf("CleanStale by the group's own Manager = %v, %v; want nothing cleaned", cleaned, err)
	}

	next, err := NewManager(Config{Parent: testParent(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cleaned, err := next.CleanStale()
	if err != nil {
		t.Fatalf("CleanStale: %v", err)
	}
	if !slices.Equal(cleaned, []string{g.Path()}) {
		t.Fatalf("CleanStale cleaned %v, want [%s]", cleaned, g.Path())
	}
	if err := waitExit(t, cmd, 10*time.Second); !killedBy(err, "killed") {
		t.Fatalf("stale process ended with %v, want killed", err)
	}
	for c, dir := range groupDirs(t, g) {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s cgroup %s still there after CleanStale (%v)", c, dir, err)
		}
	}
	if again, err := next.CleanStale(); err != nil || len(again) != 0 {
		t.Errorf("second CleanStale = %v, %v; want nothing", again, err)
	}
}

// TestNewReplacesLeftover: New for an instance whose cgroup an earlier run
// left behind kills what is in it and starts from a fresh cgroup.
func TestNewReplacesLeftover(t *testing.T) {
	requireRoot(t)
	crashed := newTestManager(t, Config{})
	requireCgroups(t, crashed)
	old, err := crashed.New("instance", Limits{MemoryBytes: 128 << 20, Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	cmd, _ := childCmd(t, "sleep")
	cmd.SysProcAttr = withPdeathsig(nil)
	if err := old.Start(cmd, cmd.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	next, err := NewManager(Config{Parent: testParent(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	g, err := next.New("instance", Limits{MemoryBytes: 64 << 20, Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	requireEnforced(t, g, ResourceMemory, ResourcePids)
	if err := waitExit(t, cmd, 10*time.Second); !killedBy(err, "killed") {
		t.Fatalf("leftover process ended with %v, want killed", err)
	}
	if u, err := g.Usage(); err != nil || u.Pids != 0 {
		t.Fatalf("fresh group usage %+v, %v; want no processes", u, err)
	}
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentStarts: groups started from many goroutines at once each
// get their own child, and no thread of the agent stays in any of them.
func TestConcurrentStarts(t *testing.T) {
	requireRoot(t)
	m := newTestManager(t, Config{})
	requireCgroups(t, m)
	const n = 8
	groups := make([]*Group, n)
	cmds := make([]*exec.Cmd, n)
	errs := make(chan error, n)
	for i := range n {
		g, err := m.New(fmt.Sprintf("parallel-%d", i), Limits{MemoryBytes: 128 << 20, Pids: 16})
		if err != nil {
			t.Fatal(err)
		}
		groups[i] = g
		cmds[i], _ = childCmd(t, "sleep")
		cmds[i].SysProcAttr = withPdeathsig(nil)
	}
	for i := range n {
		go func() { errs <- groups[i].Start(cmds[i], cmds[i].Start) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("Start: %v", err)
		}
	}
	self := strconv.Itoa(os.Getpid())
	for i, g := range groups {
		pid := strconv.Itoa(cmds[i].Process.Pid)
		for c, dir := range groupDirs(t, g) {
			procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Fields(string(procs))
			if !slices.Equal(got, []string{pid}) {
				t.Errorf("%s %s cgroup.procs = %v, want only its child %s (agent is %s)", g.Path(), c, got, pid, self)
			}
		}
	}
	for i, g := range groups {
		if err := g.Delete(); err != nil {
			t.Errorf("Delete: %v", err)
		}
		if err := waitExit(t, cmds[i], 10*time.Second); !killedBy(err, "killed") {
			t.Errorf("child %d ended with %v, want killed", i, err)
		}
	}
}

// TestStartMovesMisplacedProcess: when start breaks the contract (starts
// cmd from another goroutine, drops the cgroup descriptor), Start finds the
// process outside the group and moves it in.
func TestStartMovesMisplacedProcess(t *testing.T) {
	requireRoot(t)
	m := newTestManager(t, Config{})
	requireCgroups(t, m)
	g, err := m.New("misplaced", Limits{MemoryBytes: 128 << 20, Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	cmd, _ := childCmd(t, "sleep")
	careless := func() error {
		cmd.SysProcAttr = nil
		done := make(chan error, 1)
		go func() { done <- cmd.Start() }()
		return <-done
	}
	if err := g.Start(cmd, careless); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	childV1, childV2 := procCgroups(t, strconv.Itoa(cmd.Process.Pid))
	if m.Mode() == ModeV2 && childV2 != g.Path() {
		t.Errorf("child is in cgroup %q, want %q", childV2, g.Path())
	}
	if m.Mode() == ModeV1 && (childV1["memory"] != g.Path() || childV1["pids"] != g.Path()) {
		t.Errorf("child is in %v, want %q", childV1, g.Path())
	}
	if err := g.Delete(); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := waitExit(t, cmd, 10*time.Second); !killedBy(err, "killed") {
		t.Fatalf("child ended with %v, want killed by Delete", err)
	}
}

// TestSiblingManagers: Managers that share a parent cgroup, as agents on
// one machine do, keep to their own cgroups. When one restarts, its
// CleanStale removes its own leftovers and none of the sibling's; its Close
// removes its own cgroup and leaves the parent, which holds the sibling's;
// the last Close removes the parent. It runs on the host's layout and on
// a cgroup2 mount where there is one.
func TestSiblingManagers(t *testing.T) {
	requireRoot(t)
	t.Run("host", func(t *testing.T) { testSiblingManagers(t, "") })
	t.Run("cgroup2", func(t *testing.T) {
		mount, err := cgroup2Mount()
		if err != nil {
			t.Skipf("no cgroup v2 mount: %v", err)
		}
		testSiblingManagers(t, mount)
	})
}

func testSiblingManagers(t *testing.T, root string) {
	parent := testParent(t)
	crashed := newTestManager(t, Config{Parent: parent, Group: "agent-a", Root: root})
	requireCgroups(t, crashed)
	sibling := newTestManager(t, Config{Parent: parent, Group: "agent-b", Root: root})
	left, leftCmd := startSleeper(t, crashed, "echo-1")
	serving, servingCmd := startSleeper(t, sibling, "echo-1")
	servingExited := make(chan error, 1)
	go func() { servingExited <- servingCmd.Wait() }()
	stillServing := func(when string) {
		t.Helper()
		select {
		case err := <-servingExited:
			t.Fatalf("%s, the sibling's process ended: %v", when, err)
		default:
		}
		pids, err := serving.b.procs()
		if err != nil || !slices.Contains(pids, uint64(servingCmd.Process.Pid)) {
			t.Fatalf("%s, the sibling's group holds %v, %v; want its process %d", when, pids, err, servingCmd.Process.Pid)
		}
	}

	restarted, err := NewManager(Config{Parent: parent, Group: "agent-a", Root: root, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cleaned, err := restarted.CleanStale()
	if err != nil || !slices.Equal(cleaned, []string{left.Path()}) {
		t.Fatalf("CleanStale of the restarted Manager = %v, %v; want [%s] alone", cleaned, err, left.Path())
	}
	if err := waitExit(t, leftCmd, 10*time.Second); !killedBy(err, "killed") {
		t.Fatalf("the stale process ended with %v, want killed", err)
	}
	stillServing("after the sibling's CleanStale")

	if err := restarted.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := restarted.New("echo-2", Limits{}); !errors.Is(err, ErrClosed) {
		t.Errorf("New after Close: %v, want ErrClosed", err)
	}
	for _, dir := range cgroupDirs(restarted, restarted.own) {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the closed Manager's cgroup %s is still there (%v)", dir, err)
		}
	}
	for _, dir := range cgroupDirs(sibling, sibling.own) {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("the sibling's cgroup: %v", err)
		}
	}
	stillServing("after the sibling's Close")

	if err := serving.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := sibling.Close(); err != nil {
		t.Fatalf("Close of the last Manager: %v", err)
	}
	for _, dir := range append(cgroupDirs(sibling, sibling.own), cgroupDirs(sibling, sibling.parent)...) {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there after the last Close (%v)", dir, err)
		}
	}
}

// TestStandalone: a Standalone group lives in a cgroup of its own under
// the parent, beside an agent's, and its Delete removes both its cgroups
// and then the parent, once nothing else is in it.
func TestStandalone(t *testing.T) {
	requireRoot(t)
	parent := testParent(t)
	agent := newTestManager(t, Config{Parent: parent, Group: "agent-n1"})
	requireCgroups(t, agent)
	g, err := Standalone(parent, Limits{Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	cmd, _ := childCmd(t, "sleep")
	cmd.SysProcAttr = withPdeathsig(nil)
	if err := g.Start(cmd, cmd.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	if dir := path.Dir(g.Path()); path.Dir(dir) != "/"+parent || !strings.HasPrefix(path.Base(dir), "standalone-") {
		t.Fatalf("Standalone group at %s, want <parent>/standalone-*/process", g.Path())
	}
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(t, cmd, 10*time.Second); !killedBy(err, "killed") {
		t.Fatalf("the standalone process ended with %v, want killed", err)
	}
	for _, dir := range cgroupDirs(g.m, g.m.own) {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the standalone cgroup %s is still there (%v)", dir, err)
		}
	}
	for _, dir := range cgroupDirs(agent, agent.own) {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("the agent's cgroup beside it: %v", err)
		}
	}
	if err := agent.Close(); err != nil {
		t.Fatal(err)
	}
	for _, dir := range cgroupDirs(agent, agent.parent) {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the empty parent %s is still there (%v)", dir, err)
		}
	}
}

// startSleeper starts a child that sleeps in a new group id of m, killed
// when the test ends.
func startSleeper(t *testing.T, m *Manager, id string) (*Group, *exec.Cmd) {
	t.Helper()
	g, err := m.New(id, Limits{MemoryBytes: 128 << 20, Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	cmd, _ := childCmd(t, "sleep")
	cmd.SysProcAttr = withPdeathsig(nil)
	if err := g.Start(cmd, cmd.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return g, cmd
}
