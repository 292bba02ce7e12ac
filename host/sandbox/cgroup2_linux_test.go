package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/plughost/plughost/host/governance"
	"github.com/plughost/plughost/internal/testenv"
)

// mountCgroup2 mounts a cgroup2 hierarchy on a fresh directory (0755, so a
// plugin uid can reach its files) and unmounts it when the test ends. On a
// host whose controllers are bound to cgroup v1 the hierarchy still places
// processes; it just offers no memory, cpu or pids controller.
func mountCgroup2(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "plughost-cgroup2-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("none", dir, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		_ = os.Remove(dir)
		t.Skipf("cannot mount a cgroup2 hierarchy: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
		if err := os.Remove(dir); err != nil {
			t.Errorf("removing %s: %v", dir, err)
		}
	})
	return dir
}

// v2CgroupOf returns the cgroup v2 line ("0::<path>") of /proc/<pid>/cgroup.
func v2CgroupOf(lines []string) (string, bool) {
	for _, l := range lines {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p, true
		}
	}
	return "", false
}

// TestTrampolineStartsInsideV2Cgroup runs a real plugin process (the test
// binary) through the trampoline, as its own uid, with a governance Manager
// pointed (Config.Root) at a cgroup2 hierarchy mounted for the test: the
// process is cloned into its instance cgroup (UseCgroupFD), so the first
// thing it reads of /proc/self/cgroup is that cgroup and governance never
// had to move it; it cannot move itself out; Delete kills it and removes
// the cgroup. The limits, whose controllers this hierarchy does not offer
// where v1 holds them, say so and why.
func TestTrampolineStartsInsideV2Cgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting cgroup2 and changing uid need root")
	}
	root := mountCgroup2(t)
	var logs testenv.SyncBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Debug})
	parent := fmt.Sprintf("sandbox-test-%d", os.Getpid())
	m, err := governance.NewManager(governance.Config{Root: root, Parent: parent, Group: "agent", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("closing the manager: %v", err)
		}
		if _, err := os.Stat(filepath.Join(root, parent)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after Close (%v)", filepath.Join(root, parent), err)
		}
	})
	if m.Mode() != governance.ModeV2 {
		t.Fatalf("Mode %q with Root %s, want %q (reason %q)", m.Mode(), root, governance.ModeV2, m.Reason())
	}
	offered := strings.Fields(readFile(t, filepath.Join(root, "cgroup.controllers")))
	t.Logf("cgroup2 at %s offers %q; manager reason %q", root, offered, m.Reason())

	g, err := m.New("inst", governance.Limits{MemoryBytes: 64 << 20, CPU: 0.5, Pids: 64})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, g.Path())
	for _, s := range g.Enforcement() {
		t.Logf("%s %s: enforced=%v %s", s.Resource, s.Limit, s.Enforced, s.Reason)
		has := false
		for _, c := range offered {
			has = has || c == s.Resource
		}
		switch {
		case !has && s.Enforced:
			t.Errorf("%s is enforced although %s does not offer its controller", s.Resource, root)
		case !has && (!strings.Contains(s.Reason, fmt.Sprintf("%q", s.Resource)) || !strings.Contains(s.Reason, "does not offer it")):
			t.Errorf("%s not enforced, but the reason %q does not say its controller is not offered", s.Resource, s.Reason)
		case !s.Enforced && !strings.Contains(m.Reason(), s.Reason):
			t.Errorf("manager reason %q omits %q", m.Reason(), s.Reason)
		}
	}

	s := newSandbox(t, Config{Identity: "t"})
	p, err := s.Prepare("cg2")
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer exe.Close()
	cmd := p.Command(exe)
	// It tries the hierarchy's root and its own Manager's cgroup.
	cmd.Env = append(cmd.Env, cgroupReportEnv+"="+root+":"+filepath.Join(root, parent, "agent"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	var stderr testenv.SyncBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(cmd, cmd.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	done := make(chan error, 1)
	var lines []string
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if sc.Text() == "ready" {
				done <- nil
				return
			}
		}
		done <- fmt.Errorf("output ended (%v) before ready", sc.Err())
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%v: %q\nstderr: %s", err, lines, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no report from the plugin in 30s\nstderr: %s", stderr.String())
	}
	pid := cmd.Process.Pid
	t.Logf("plugin %d reported %q", pid, lines)

	var first []string
	for _, l := range lines {
		if f, ok := strings.CutPrefix(l, "first: "); ok {
			first = append(first, f)
		}
	}
	if got, ok := v2CgroupOf(first); !ok || got != g.Path() {
		t.Errorf("the plugin first saw itself in cgroup v2 %q (found %v), want %q", got, ok, g.Path())
	}
	if strings.Contains(logs.String(), "started outside its cgroup") {
		t.Errorf("governance had to move the plugin into its cgroup after it started:\n%s", logs.String())
	}
	for _, target := range []string{root, filepath.Join(root, parent, "agent")} {
		want := "move " + target + ": "
		var res string
		for _, l := range lines {
			if r, ok := strings.CutPrefix(l, want); ok {
				res = r
			}
		}
		if res == "" || res == "<nil>" || !strings.Contains(res, "permission denied") {
			t.Errorf("the plugin moving itself to %s: %q, want permission denied", target, res)
		}
	}
	now, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := v2CgroupOf(strings.Split(strings.TrimSpace(string(now)), "\n")); got != g.Path() {
		t.Errorf("after its escape attempts the plugin is in %q, want %q", got, g.Path())
	}
	if procs := strings.TrimSpace(readFile(t, filepath.Join(dir, "cgroup.procs"))); procs != strconv.Itoa(pid) {
		t.Errorf("%s/cgroup.procs = %q, want only the plugin %d", dir, procs, pid)
	}
	for _, part := range p.Status(g.Path(), "") {
		if part.Part == PartCgroup && (!part.Enforced || !strings.Contains(part.Setting, g.Path())) {
			t.Errorf("cgroup part %+v, want enforced in %s", part, g.Path())
		}
	}

	if err := g.Delete(); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	werr := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("plugin ended with %v, want killed by Delete", werr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there after Delete (%v)", dir, err)
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
