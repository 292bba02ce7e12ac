package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
)

func TestParseUIDRange(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi uint32
		ok     bool
	}{
		{"61184-65519", 61184, 65519, true},
		{"100-100", 100, 100, true},
		{" 200 - 300 ", 200, 300, true},
		{"0-10", 0, 0, false},
		{"10-5", 0, 0, false},
		{"10", 0, 0, false},
		{"a-b", 0, 0, false},
		{"10-4294967295", 0, 0, false},
		{"-5-10", 0, 0, false},
	} {
		lo, hi, err := ParseUIDRange(tc.in)
		if (err == nil) != tc.ok || lo != tc.lo || hi != tc.hi {
			t.Errorf("ParseUIDRange(%q) = %d, %d, %v", tc.in, lo, hi, err)
		}
		if err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParseUIDRange(%q): %v is not ErrInvalidConfig", tc.in, err)
		}
	}
}

func newSandbox(t *testing.T, cfg Config) *Sandbox {
	t.Helper()
	if cfg.WorkDir == "" {
		cfg.WorkDir = filepath.Join(t.TempDir(), "work")
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestUIDsAreStablePerPluginAndDistinct: a plugin gets the same uid from
// every agent of the same identity (every restart), different plugins get
// different uids even when their hashes collide, and a full range says so.
func TestUIDsAreStablePerPluginAndDistinct(t *testing.T) {
	a := newSandbox(t, Config{Identity: "n1-abcd", UIDRange: "61184-61190"})
	b := newSandbox(t, Config{Identity: "n1-abcd", UIDRange: "61184-61190"})
	uid1, err := a.allocate("echo")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := a.allocate("echo")
	other, _ := b.allocate("echo")
	if again != uid1 || other != uid1 {
		t.Fatalf("echo got uids %d, %d and (another agent, same identity) %d", uid1, again, other)
	}
	seen := map[uint32]string{uid1: "echo"}
	for i := range 6 {
		name := "p" + strconv.Itoa(i)
		uid, err := a.allocate(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if uid < 61184 || uid > 61190 {
			t.Fatalf("%s got uid %d outside the range", name, uid)
		}
		if prev, dup := seen[uid]; dup {
			t.Fatalf("%s got uid %d, which %s has", name, uid, prev)
		}
		seen[uid] = name
	}
	if _, err := a.allocate("one-too-many"); !errors.Is(err, ErrNoUID) {
		t.Fatalf("an eighth plugin in a range of seven: %v, want ErrNoUID", err)
	}
	c := newSandbox(t, Config{Identity: "n2-ef01", UIDRange: "61184-65519"})
	d := newSandbox(t, Config{Identity: "n1-abcd", UIDRange: "61184-65519"})
	x, _ := c.allocate("counter")
	y, _ := d.allocate("counter")
	if x == y {
		t.Logf("two agents' counter uids collided at %d (possible, 1 in 4336)", x)
	}
}

// TestUIDsSkipUsersAndOtherAgents: a uid in the user database is never
// given, nor one another agent on the machine holds.
func TestUIDsSkipUsersAndOtherAgents(t *testing.T) {
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	n, _ := strconv.Atoi(u.Uid)
	r := strconv.Itoa(n) + "-" + strconv.Itoa(n+1)
	locks := t.TempDir()
	a := newSandbox(t, Config{Identity: "a", UIDRange: r, LockDir: locks})
	uid, err := a.allocate("echo")
	if err != nil {
		t.Fatal(err)
	}
	if int(uid) == n {
		t.Fatalf("got uid %d, which is nobody's", uid)
	}
	b := newSandbox(t, Config{Identity: "b", UIDRange: r, LockDir: locks})
	if got, err := b.allocate("echo"); !errors.Is(err, ErrNoUID) {
		t.Fatalf("another agent got uid %d (%v) while the first holds it", got, err)
	}
	_ = a.Close()
	if _, err := b.allocate("echo"); err != nil {
		t.Fatalf("after the first agent closed: %v", err)
	}
}

// runSandboxed runs exe through the trampoline as p and returns its
// stdout, with extra environment.
func runSandboxed(t *testing.T, p *Process, exe string, env ...string) string {
	t.Helper()
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := p.Command(f)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("sandboxed %s: %v\n%s", exe, err, stderr.String())
	}
	return out.String()
}

// TestTrampolineDropsEverything runs the test binary itself sandboxed
// from a root-only directory: it runs as the plugin's uid and gid with no
// groups, no capabilities in any set, no_new_privs, /dev/null as stdin, no
// leftover descriptor, in its working dir, with only PATH, HOME and TMPDIR,
// and cannot become root again.
func TestTrampolineDropsEverything(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing uid needs root")
	}
	data := t.TempDir()
	if err := os.Chmod(data, 0o700); err != nil {
		t.Fatal(err)
	}
	s := newSandbox(t, Config{Identity: "t", DataDir: data})
	p, err := s.Prepare("demo")
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A copy in a directory only root may enter: the plugin executes what
	// the agent opened, not a path.
	private := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(private, "plugin")
	if err := exec.Command("cp", self, exe).Run(); err != nil {
		t.Fatal(err)
	}
	out := runSandboxed(t, p, exe, reportEnv+"=1")
	if strings.Contains(out, "fd3: "+exe) {
		t.Errorf("the executable's descriptor stayed open in the plugin:\n%s", out)
	}
	id := strconv.Itoa(p.UID())
	for _, want := range []string{
		"Uid: " + id + " " + id + " " + id + " " + id, "Gid: " + id + " " + id + " " + id + " " + id, "Groups:\n",
		"CapInh: 0000000000000000", "CapPrm: 0000000000000000", "CapEff: 0000000000000000",
		"CapBnd: 0000000000000000", "CapAmb: 0000000000000000", "NoNewPrivs: 1",
		"cwd: " + p.Dir(), "stdin: /dev/null", "setuid 0: operation not permitted",
		"env: PATH=" + Path + " HOME=" + p.Dir() + " TMPDIR=" + filepath.Join(p.Dir(), "tmp") + " " + reportEnv + "=1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("sandboxed process reported no %q:\n%s", want, out)
		}
	}
	fi, err := os.Stat(p.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := statOwner(fi); int(st.uid) != p.UID() || fi.Mode().Perm() != 0o700 {
		t.Errorf("working dir is %v owned by %d, want 0700 owned by %d", fi.Mode(), st.uid, p.UID())
	}
	for _, part := range p.Status("/plughost/x", "") {
		if !part.Enforced {
			t.Errorf("part %s not enforced: %s", part.Part, part.Reason)
		}
	}
}

// TestTrampolineRunsScripts: a script runs sandboxed too (its interpreter
// reads it from the descriptor the agent opened).
func TestTrampolineRunsScripts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing uid needs root")
	}
	s := newSandbox(t, Config{Identity: "t"})
	p, err := s.Prepare("script")
	if err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(private, "plugin")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\nid -u\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out := runSandboxed(t, p, exe); strings.TrimSpace(out) != strconv.Itoa(p.UID()) {
		t.Fatalf("script said %q, want its uid %d", out, p.UID())
	}
}

// TestStatusSaysWhatDoesNotHold: without root, without a cgroup, with an
// open data dir, the parts that do not hold say so and why.
func TestStatusSaysWhatDoesNotHold(t *testing.T) {
	data := t.TempDir()
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	s := newSandbox(t, Config{Identity: "t", DataDir: data})
	p, err := s.Prepare("demo")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Part{}
	for _, part := range p.Status("", "no cgroup filesystem is mounted") {
		got[part.Part] = part
	}
	if c := got[PartCgroup]; c.Enforced || !strings.Contains(c.Reason, "no cgroup filesystem is mounted") {
		t.Errorf("cgroup part without a cgroup: %+v", c)
	}
	if os.Geteuid() == 0 {
		if f := got[PartFiles]; f.Enforced || !strings.Contains(f.Reason, "chmod 0700") {
			t.Errorf("files part with a 0755 data dir: %+v", f)
		}
		return
	}
	if u := got[PartUser]; u.Enforced || !strings.Contains(u.Reason, "not root") {
		t.Errorf("user part without root: %+v", u)
	}
	if a := got[PartAgent]; a.Enforced {
		t.Errorf("agent part without root: %+v", a)
	}
}

// TestKillAllEndsWhatAProbeLeft: without a cgroup, what a probe left in a
// session of its own is found by the probe's uid and killed; a plugin's
// process, whose uid lives on, is not a probe's to kill.
func TestKillAllEndsWhatAProbeLeft(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing uid needs root")
	}
	s := newSandbox(t, Config{Identity: "t"})
	p, err := s.PrepareProbe()
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\nsetsid sleep 600 &\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := p.Command(f)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }()
	testenv.WaitFor(t, 10*time.Second, "the probe and its child", func() error {
		if ps := processesOf(p.UID()); len(ps) < 2 {
			return fmt.Errorf("uid %d runs %v", p.UID(), ps)
		}
		return nil
	})
	if err := p.KillAll(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if left := processesOf(p.UID()); len(left) > 0 {
		t.Fatalf("uid %d still runs %v", p.UID(), left)
	}
	plugin, err := s.Prepare("demo")
	if err != nil {
		t.Fatal(err)
	}
	if err := plugin.KillAll(time.Second); !errors.Is(err, ErrNotKillable) {
		t.Fatalf("KillAll of a plugin's process: %v, want ErrNotKillable", err)
	}
}

// TestTrampolineWithoutRoot: where the agent cannot change uids (it is not
// root) the process keeps the agent's user but still gets no_new_privs,
// /dev/null as stdin and a clean environment, and status says the user
// part does not hold.
func TestTrampolineWithoutRoot(t *testing.T) {
	s := newSandbox(t, Config{Identity: "t"})
	s.asRoot = false // as for an agent that is not root
	p, err := s.Prepare("demo")
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := runSandboxed(t, p, self, reportEnv+"=1")
	id := strconv.Itoa(os.Getuid())
	for _, want := range []string{"Uid: " + id + " ", "NoNewPrivs: 1", "stdin: /dev/null", "cwd: " + p.Dir(),
		"env: PATH=" + Path + " HOME=" + p.Dir() + " TMPDIR=" + filepath.Join(p.Dir(), "tmp") + " " + reportEnv + "=1\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("sandboxed process reported no %q:\n%s", want, out)
		}
	}
	for _, part := range p.Status("/x", "") {
		if part.Part == PartUser && (part.Enforced || !strings.Contains(part.Reason, "not root")) {
			t.Errorf("user part: %+v", part)
		}
	}
}
