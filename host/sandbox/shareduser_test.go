package sandbox

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// startScript starts, sandboxed as p, a shell script with body and extra
// environment; it is killed when the test ends.
func startScript(t *testing.T, p *Process, body string, env ...string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	private := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(private, "plugin")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := p.Command(f)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	out := new(strings.Builder)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, out
}

// TestPluginUserSharesAUID: with plugin_user, two plugins run as that one
// uid and one can signal the other, and status says so; with the default
// (a dynamic uid per plugin) they run as uids of their own and cannot.
func TestPluginUserSharesAUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing uid needs root")
	}
	for _, tc := range []struct {
		name, user string
		canSignal  bool
	}{
		{"plugin_user", "nobody", true},
		{"default", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t, Config{Identity: "t" + tc.name, User: tc.user})
			a, err := s.Prepare("a")
			if err != nil {
				t.Fatal(err)
			}
			b, err := s.Prepare("b")
			if err != nil {
				t.Fatal(err)
			}
			if shared := a.UID() == b.UID(); shared != tc.canSignal {
				t.Fatalf("plugins a and b run as uids %d and %d", a.UID(), b.UID())
			}
			victim, _ := startScript(t, a, "exec sleep 60")
			attacker, out := startScript(t, b, `kill -0 "$TARGET" && echo signalled`, "TARGET="+strconv.Itoa(victim.Process.Pid))
			err = attacker.Wait()
			denied := strings.Contains(out.String(), "not permitted")
			if got := strings.Contains(out.String(), "signalled"); got != tc.canSignal || (err == nil) != tc.canSignal || denied == tc.canSignal {
				t.Errorf("plugin b (uid %d) signalling a (uid %d, pid %d): %v %q, want able=%v", b.UID(), a.UID(), victim.Process.Pid, err, out.String(), tc.canSignal)
			}
			for _, part := range b.Status("/plughost/x", "") {
				if part.Part != PartUser {
					continue
				}
				t.Logf("user part: %+v", part)
				if says := strings.Contains(part.Setting, "shared by every plugin: they can signal and read one another"); says != tc.canSignal {
					t.Errorf("user part %+v: says plugins share a uid = %v, want %v", part, says, tc.canSignal)
				}
			}
		})
	}
}
