package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// hostileReport is what test/fixtures/hostile answers an attack with.
type hostileReport struct {
	Attempts []struct {
		What   string `json:"what"`
		Got    bool   `json:"got"`
		Result string `json:"result"`
	} `json:"attempts"`
	ChildPid int `json:"child_pid"`
}

// hostileBundle builds test/fixtures/hostile as plugin hostile 1.0.0,
// serving echo.v1.EchoService.
func hostileBundle(t *testing.T) string {
	t.Helper()
	exe := fixture(t, "hostile", "hostile", "1.0.0")
	m := &bundle.Manifest{Name: "hostile", Version: "1.0.0", APIVersions: []int{1}, Services: []string{"echo.v1.EchoService"}}
	out, err := bundle.Build(exe, m, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// uidOf is the real uid of process pid, -1 if it is gone.
func uidOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Uid:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return -1
}

// processesOf lists the live processes whose real uid is uid.
func processesOf(uid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && uidOf(pid) == uid && !isZombie(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// secretsIn lists what in the agent's data dir a plugin must not read: the
// raft log and store files, the dev token, and a planted world-readable
// file.
func secretsIn(t *testing.T, dataDir string) []string {
	t.Helper()
	planted := filepath.Join(dataDir, "planted-secret")
	if err := os.WriteFile(planted, []byte("another plugin's secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	files := []string{dataDir, planted}
	_ = filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		base := d.Name()
		if strings.Contains(p, "/store/") || strings.Contains(base, "token") {
			files = append(files, p)
		}
		return nil
	})
	return files
}

// TestSandboxedPluginCannotAttack: a hostile plugin, built with the SDK,
// tries to read the agent's memory, environment, raft log, token and
// another plugin's working dir, to signal the agent, to become root, to
// leave its cgroup and to leave a child outside it. Every attempt fails,
// plugin status says every part of the sandbox holds, and once the agent
// is killed with -9 its reaper leaves nothing of the plugin running.
func TestSandboxedPluginCannotAttack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sandboxing plugins needs a root agent")
	}
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	t.Cleanup(func() { reapOrphans(t, a) })
	// As the agent leaves it from issue 14 on (file permissions), and
	// as plugin status otherwise tells the operator to do.
	if err := os.Chmod(a.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	a.Drop(bundlePath("counter", "1.0.0"))
	a.Drop(hostileBundle(t))
	a.WaitRunning("counter", "1.0.0")
	a.WaitRunning("hostile", "1.0.0")

	counter, err := pluginStatus(t, a, "counter")
	if err != nil {
		t.Fatal(err)
	}
	counterDir, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", counter.Instances[0].Pid))
	if err != nil {
		t.Fatal(err)
	}
	note := filepath.Join(counterDir, "note")
	if err := os.WriteFile(note, []byte("counter's own"), 0o644); err != nil {
		t.Fatal(err)
	}
	read := append(secretsIn(t, a.DataDir), counterDir, note)
	attack, _ := json.Marshal(map[string]any{"agent_pid": a.cmd.Process.Pid, "read": read})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := echov1.NewEchoServiceClient(a.Conn()).Echo(ctx, &echov1.EchoRequest{Message: string(attack)})
	if err != nil {
		t.Fatal(err)
	}
	var rep hostileReport
	if err := json.Unmarshal([]byte(resp.GetMessage()), &rep); err != nil {
		t.Fatalf("hostile answered %q: %v", resp.GetMessage(), err)
	}
	want := map[string]bool{"mem": false, "environ": false, "kill": false, "setuid": false, "own pid": false,
		"child": false, "no_new_privs": false, "CapEff": false, "store/": false, "token-or-planted": false, "counter": false}
	for _, at := range rep.Attempts {
		t.Logf("%s: got=%v %s", at.What, at.Got, at.Result)
		if at.Got {
			t.Errorf("the plugin could %s: %s", at.What, at.Result)
		}
		for k := range want {
			if strings.Contains(at.What, k) {
				want[k] = true
			}
		}
		if strings.Contains(at.What, "planted-secret") || strings.Contains(at.What, "token") {
			want["token-or-planted"] = true
		}
		if strings.Contains(at.What, counterDir) {
			want["counter"] = true
		}
	}
	for k, tried := range want {
		if !tried {
			t.Errorf("no attempt at %q in the report", k)
		}
	}

	st, err := pluginStatus(t, a, "hostile")
	if err != nil {
		t.Fatal(err)
	}
	out, _, _ := a.CLI("plugin", "status", "hostile")
	for _, part := range []string{"user", "capabilities", "no_new_privs", "files", "agent", "cgroup"} {
		if !strings.Contains(out, "sandbox "+part) || strings.Contains(out, "NOT enforced") {
			t.Errorf("plugin status does not say the %s part holds:\n%s", part, out)
		}
	}
	hostilePid := st.Instances[0].Pid
	uid := uidOf(hostilePid)
	if uid <= 0 || uid == uidOf(counter.Instances[0].Pid) {
		t.Fatalf("hostile runs as uid %d, counter as %d", uid, uidOf(counter.Instances[0].Pid))
	}
	if rep.ChildPid == 0 || uidOf(rep.ChildPid) != uid {
		t.Fatalf("the hostile's child %d is not running as its uid %d", rep.ChildPid, uid)
	}
	t.Logf("hostile pid %d and its child %d run as uid %d", hostilePid, rep.ChildPid, uid)

	a.Kill9()
	testenv.WaitFor(t, 20*time.Second, "nothing of the hostile plugin to run once the agent was killed", func() error {
		if left := processesOf(uid); len(left) > 0 {
			return fmt.Errorf("uid %d still runs %v", uid, left)
		}
		return nil
	})
}

// Argv0 of what test/fixtures/probehog leaves running.
const (
	probeSleeper = "probehog-sleeper"
	probeHog     = "probehog-hog"
)

// leftBy lists the live processes whose argv0 is one of names and whose
// executable was in dataDir: what a bundle left running.
func leftBy(dataDir string, names ...string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || isZombie(pid) {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		exe, _ := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if copied, ok := strings.CutPrefix(exe, "/memfd:"); ok {
			exe = strings.TrimSuffix(copied, " (deleted)")
		}
		argv0, _, _ := strings.Cut(string(cmd), "\x00")
		for _, n := range names {
			if argv0 == n && strings.HasPrefix(exe, dataDir+"/") {
				out = append(out, pid)
			}
		}
	}
	return out
}

// TestBundleProbeIsConfined: a bundle whose first start leaves a sleeper
// and a memory hog behind, in sessions of their own that ignore SIGTERM,
// is probed in a cgroup of its own under the agent's, with the default
// memory limit (the hog is held to it), as a uid that is not root; once
// 'bundle add' has its answer nothing of the bundle runs and the probe's
// cgroup is gone.
func TestBundleProbeIsConfined(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sandboxing the probe needs a root agent")
	}
	t.Parallel()
	a := NewAgent(t, AgentOptions{Config: `{"default_resources": {"memory_mb": 64}}`})
	t.Cleanup(func() {
		for _, pid := range leftBy(a.DataDir, probeSleeper, probeHog) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	exe := fixture(t, "probehog", "probehog", "1.0.0")
	// The manifest lists a service the plugin does not serve: the probe
	// refuses the bundle (if the memory limit did not end it first), and
	// nothing of it is started again.
	m := &bundle.Manifest{Name: "probehog", Version: "1.0.0", APIVersions: []int{1}, Services: []string{"fixture.v1.NotServed"}}
	b, err := bundle.Build(exe, m, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	type added struct {
		stderr string
		code   int
	}
	done := make(chan added, 1)
	go func() {
		_, stderr, code := a.CLI("bundle", "add", b)
		done <- added{stderr, code}
	}()

	var seen []proc
	var probeCgroup string
	testenv.WaitFor(t, 20*time.Second, "the probe's sleeper and hog in a cgroup of the probe's own", func() error {
		seen = seen[:0]
		for _, p := range inCgroupsUnder(a.CgroupParent()) {
			if strings.HasPrefix(p.cmdline, probeSleeper) || strings.HasPrefix(p.cmdline, probeHog) {
				seen = append(seen, p)
				if _, id := filepath.Split(p.cgroup); strings.HasPrefix(id, "probe-") {
					probeCgroup = p.cgroup
				}
			}
		}
		if len(seen) == 0 || probeCgroup == "" {
			return fmt.Errorf("found %v in the agent's cgroups", seen)
		}
		for _, p := range seen {
			if uid := uidOf(p.pid); uid <= 0 {
				return fmt.Errorf("%s runs as uid %d", p, uid)
			}
		}
		return nil
	})
	memDir := filepath.Join(cgroupRoot, "memory", probeCgroup)
	limit, err := readUint(filepath.Join(memDir, "memory.limit_in_bytes"))
	if err != nil || limit != 64<<20 {
		t.Fatalf("the probe's memory limit is %d (%v), want 64 MiB", limit, err)
	}
	testenv.WaitFor(t, 10*time.Second, "the hog to be held to the probe's memory limit", func() error {
		kills, err := readKey(filepath.Join(memDir, "memory.oom_control"), "oom_kill")
		if err != nil {
			return err
		}
		if kills == 0 {
			return fmt.Errorf("no OOM kill in %s yet", memDir)
		}
		return nil
	})
	t.Logf("during the probe: %v in %s, memory limit %d", seen, probeCgroup, limit)

	var res added
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("bundle add did not return")
	}
	// Refused: for the service it does not serve, or killed at its limit.
	if res.code == 0 || !strings.Contains(res.stderr, "probehog") {
		t.Errorf("bundle add: exit %d, %q; want a refusal", res.code, res.stderr)
	}
	for _, p := range seen {
		if p.alive() {
			t.Errorf("%s outlived the probe", p)
		}
	}
	if left := leftBy(a.DataDir, probeSleeper, probeHog); len(left) > 0 {
		t.Errorf("the bundle left %v running", left)
	}
	if _, err := os.Stat(memDir); !os.IsNotExist(err) {
		t.Errorf("the probe's cgroup %s is still there (%v)", memDir, err)
	}
}
