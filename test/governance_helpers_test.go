package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// Helpers of the governance tests: the operator's view through the real
// CLI, cgroup files, processes in /proc, a neighbour that keeps calling.

// fixtureService is the service the misbehaving fixtures declare in these
// tests (test/fixtures/internal/fixture.Service), so that they run beside
// echo, which owns echo.v1.EchoService.
const fixtureService = "fixture.v1.FixtureService"

// cgroupRoot is where the cgroup v1 controllers are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// governedBundle builds fixture dir as plugin name 1.0.0, serving
// fixtureService, with the given resources, health settings and config.
func governedBundle(t *testing.T, dir, name string, res bundle.Resources, health bundle.Health, config string) string {
	t.Helper()
	exe := fixture(t, dir, name, "1.0.0")
	m := &bundle.Manifest{
		Name: name, Version: "1.0.0", APIVersions: []int{1}, Services: []string{fixtureService},
		Resources: res, Health: health,
	}
	if config != "" {
		m.Config = json.RawMessage(config)
	}
	out, err := bundle.Build(exe, m, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// statusJSON is what 'plughost plugin status -format json' prints.
type statusJSON struct {
	Name           string `json:"name"`
	State          string `json:"state"`
	RunningVersion string `json:"running_version"`
	LastError      string `json:"last_error"`
	Instances      []struct {
		InstanceID string `json:"instance_id"`
		State      string `json:"state"`
		Restarts   int    `json:"restarts"`
		Pid        int    `json:"pid"`
		Limits     []struct {
			Resource string `json:"resource"`
			Limit    string `json:"limit"`
			Enforced bool   `json:"enforced"`
			Reason   string `json:"reason"`
		} `json:"limits"`
		Usage struct {
			MemoryBytes     uint64 `json:"memory_bytes"`
			MemoryPeakBytes uint64 `json:"memory_peak_bytes"`
			CPUUsageNs      uint64 `json:"cpu_usage_ns"`
			CPUThrottledNs  uint64 `json:"cpu_throttled_ns"`
			Pids            uint64 `json:"pids"`
		} `json:"usage"`
	} `json:"instances"`
}

// eventJSON is one event of 'plughost plugin events -format json'.
type eventJSON struct {
	Time       string `json:"time"`
	Version    string `json:"version"`
	InstanceID string `json:"instance_id"`
	Type       string `json:"type"`
	Reason     string `json:"reason"`
}

// pluginStatus runs 'plughost plugin status -format json NAME'.
func pluginStatus(t *testing.T, a *Agent, name string) (statusJSON, error) {
	t.Helper()
	out, errOut, code := a.CLI("plugin", "status", "-format", "json", name)
	var st statusJSON
	if code != 0 {
		return st, fmt.Errorf("plugin status %s: exit %d: %s", name, code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("plugin status %s printed %q: %v", name, out, err)
	}
	return st, nil
}

// pluginEvents runs 'plughost plugin events -format json NAME', oldest first.
func pluginEvents(t *testing.T, a *Agent, name string) ([]eventJSON, error) {
	t.Helper()
	out, errOut, code := a.CLI("plugin", "events", "-n", "500", "-format", "json", name)
	if code != 0 {
		return nil, fmt.Errorf("plugin events %s: exit %d: %s", name, code, errOut)
	}
	var evs []eventJSON
	if strings.TrimSpace(out) == "null" {
		return nil, nil
	}
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		return nil, fmt.Errorf("plugin events %s printed %q: %v", name, out, err)
	}
	return evs, nil
}

// ofType returns the indexes in evs of events of type typ.
func ofType(evs []eventJSON, typ string) []int {
	var idx []int
	for i, e := range evs {
		if e.Type == typ {
			idx = append(idx, i)
		}
	}
	return idx
}

// after returns the index of the first event of type typ after index i, or -1.
func after(evs []eventJSON, i int, typ string) int {
	for j := i + 1; j < len(evs); j++ {
		if evs[j].Type == typ {
			return j
		}
	}
	return -1
}

func describeEvents(evs []eventJSON) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "\n  %s %-12s %s", e.Time, e.Type, e.Reason)
	}
	return b.String()
}

// cgroupFile is a file of an instance's cgroup in a v1 controller.
func cgroupFile(a *Agent, controller, instanceID, file string) string {
	return filepath.Join(cgroupRoot, controller, a.Cgroup(), instanceID, file)
}

// readUint reads a cgroup file holding one number.
func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// readKey reads "key value" out of a flat-keyed cgroup file such as
// pids.events or memory.oom_control.
func readKey(path, key string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == key {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s has no %q", path, key)
}

// runningInstance waits until name runs and returns its instance ID.
func runningInstance(t *testing.T, a *Agent, name string) string {
	t.Helper()
	var id string
	testenv.WaitFor(t, 30*time.Second, name+" to run", func() error {
		st, err := pluginStatus(t, a, name)
		if err != nil {
			return err
		}
		if st.State != "running" || len(st.Instances) != 1 {
			return fmt.Errorf("state %s, %d instances, last error %q", st.State, len(st.Instances), st.LastError)
		}
		id = st.Instances[0].InstanceID
		return nil
	})
	return id
}

// neighbour calls echo through the agent every few milliseconds until
// stopped, and counts what failed.
type neighbour struct {
	calls, failures atomic.Int64
	mu              sync.Mutex
	firstErr        error
	stop            context.CancelFunc
	done            chan struct{}
}

func startNeighbour(t *testing.T, a *Agent) *neighbour {
	t.Helper()
	echo := echov1.NewEchoServiceClient(a.Conn())
	ctx, cancel := context.WithCancel(context.Background())
	n := &neighbour{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := echo.Echo(cctx, &echov1.EchoRequest{Message: "neighbour"})
			ccancel()
			if ctx.Err() != nil {
				return
			}
			n.calls.Add(1)
			if err == nil && resp.GetMessage() != "neighbour" {
				err = fmt.Errorf("echo answered %q", resp.GetMessage())
			}
			if err != nil {
				n.failures.Add(1)
				n.mu.Lock()
				if n.firstErr == nil {
					n.firstErr = err
				}
				n.mu.Unlock()
			}
		}
	}()
	t.Cleanup(n.halt)
	return n
}

func (n *neighbour) halt() {
	n.stop()
	<-n.done
}

// check stops the neighbour and fails t unless every call succeeded.
func (n *neighbour) check(t *testing.T) {
	t.Helper()
	n.halt()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.calls.Load() == 0 || n.failures.Load() > 0 {
		t.Errorf("neighbour echo: %d of %d calls failed (first: %v)", n.failures.Load(), n.calls.Load(), n.firstErr)
	} else {
		t.Logf("neighbour echo: all %d calls succeeded", n.calls.Load())
	}
}

// agentHealthy fails t unless the agent process runs and answers /v1/health.
func agentHealthy(t *testing.T, a *Agent) {
	t.Helper()
	select {
	case <-a.exited:
		t.Fatalf("agent exited: %v", a.exitErr)
	default:
	}
	resp, err := a.HTTPGet("/v1/health")
	if err != nil {
		t.Fatalf("agent /v1/health: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("agent /v1/health: %s", resp.Status)
	}
}

// numCPU counts the CPUs the host has online.
func numCPU() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return 0
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, ok := strings.Cut(r, "-")
		if !ok {
			n++
			continue
		}
		l, _ := strconv.Atoi(lo)
		h, _ := strconv.Atoi(hi)
		n += h - l + 1
	}
	return n
}

// holdsFor polls cond for d and fails t the first time it returns an
// error: the way to assert that something does not happen.
func holdsFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); waitTick() {
		if err := cond(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

// waitTick is the pause between two samples of a cgroup counter.
func waitTick() {
	t := time.NewTimer(50 * time.Millisecond)
	<-t.C
}

// waitEvents polls a plugin's events until ok accepts them.
func waitEvents(t *testing.T, a *Agent, name, what string, ok func([]eventJSON) bool) []eventJSON {
	t.Helper()
	var evs []eventJSON
	testenv.WaitFor(t, 30*time.Second, what, func() error {
		var err error
		if evs, err = pluginEvents(t, a, name); err != nil {
			return err
		}
		if !ok(evs) {
			return fmt.Errorf("events:%s", describeEvents(evs))
		}
		return nil
	})
	return evs
}

// reapOrphans kills what a dead agent's plugins left running and removes
// their cgroups, so that a failed orphan test leaves nothing behind. It
// does nothing while the agent runs: the agent cleans up after itself.
func reapOrphans(t *testing.T, a *Agent) {
	select {
	case <-a.exited:
	default:
		return
	}
	left := inCgroupsUnder(a.CgroupParent())
	for _, p := range left {
		if p.alive() {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
	}
	if len(left) > 0 {
		t.Logf("killed %d processes the dead agent's plugins left", len(left))
	}
	testenv.WaitFor(t, 10*time.Second, "the orphans to die", func() error {
		if n := len(inCgroupsUnder(a.CgroupParent())); n > 0 {
			return fmt.Errorf("%d left", n)
		}
		return nil
	})
	own, err := a.recordedCgroup()
	if err != nil {
		return
	}
	dirs, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", own, "*"))
	dirs = append(dirs, cgroupDirs(own)...)
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			_ = os.Remove(d)
		}
	}
}

// proc is a process seen in /proc.
type proc struct {
	pid       int
	startTime string // field 22 of /proc/<pid>/stat: tells a recycled pid apart
	cmdline   string
	cgroup    string
}

func (p proc) String() string { return fmt.Sprintf("pid %d %q in %s", p.pid, p.cmdline, p.cgroup) }

// alive reports whether the same process still runs (not a zombie).
func (p proc) alive() bool {
	st, ok := procStart(p.pid)
	return ok && st == p.startTime && !isZombie(p.pid)
}

// procStart reads a process's start time; ok is false if it is gone.
func procStart(pid int) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", false
	}
	fields := strings.Fields(s[i+1:]) // from field 3, state
	if len(fields) < 20 {
		return "", false
	}
	return fields[19], true
}

// inCgroupsUnder lists the live processes that are, in any cgroup
// hierarchy, in parent or below it.
func inCgroupsUnder(parent string) []proc {
	var out []proc
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := os.Open(filepath.Join("/proc", e.Name(), "cgroup"))
		if err != nil {
			continue
		}
		var where string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// 8:pids:/plughost-test-x/forkbomb-1_0_0-abcd
			parts := strings.SplitN(sc.Text(), ":", 3)
			if len(parts) == 3 && (parts[2] == "/"+parent || strings.HasPrefix(parts[2], "/"+parent+"/")) {
				where = parts[2]
				break
			}
		}
		f.Close()
		if where == "" || isZombie(pid) {
			continue
		}
		start, ok := procStart(pid)
		if !ok {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out = append(out, proc{pid: pid, startTime: start, cmdline: strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")), cgroup: where})
	}
	return out
}

// logLineHas reports whether one line of log holds every part.
func logLineHas(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// scrape reads the agent's /metrics into series → value.
func scrape(a *Agent) (map[string]float64, error) {
	resp, err := a.HTTPGet("/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}
