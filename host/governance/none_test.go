package governance

import (
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestNoneMode: with governance disabled, or no cgroup filesystem at Root,
// every limit reports why it is not enforced and Start still starts the
// process; Kill still kills it.
func TestNoneMode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		reason string
	}{
		{"disabled", Config{Disabled: true}, "disabled by configuration"},
		{"unusable root", Config{Root: t.TempDir()}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = testLogger(t)
			m, err := NewManager(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if m.Mode() != ModeNone || m.Reason() == "" {
				t.Fatalf("Mode %q, Reason %q; want none with a reason", m.Mode(), m.Reason())
			}
			if tc.reason != "" && !strings.Contains(m.Reason(), tc.reason) {
				t.Fatalf("Reason %q does not say %q", m.Reason(), tc.reason)
			}
			if tc.cfg.Root != "" && runtime.GOOS == "linux" && !strings.Contains(m.Reason(), tc.cfg.Root) {
				t.Fatalf("Reason %q does not name the root %s", m.Reason(), tc.cfg.Root)
			}
			t.Logf("reason: %s", m.Reason())

			g, err := m.New("plugin-1", Limits{MemoryBytes: 64 << 20, CPU: 0.25, Pids: 32})
			if err != nil {
				t.Fatal(err)
			}
			st := g.Enforcement()
			if len(st) != 3 {
				t.Fatalf("Enforcement has %d entries, want 3: %+v", len(st), st)
			}
			for _, s := range st {
				if s.Enforced || s.Reason != m.Reason() {
					t.Errorf("%s: Enforced=%v Reason=%q; want not enforced because %q", s.Resource, s.Enforced, s.Reason, m.Reason())
				}
			}
			if want := (LimitStatus{Resource: ResourceMemory, Limit: "64 MiB", Value: 64 << 20, Reason: m.Reason()}); st[0] != want {
				t.Errorf("memory status %+v, want %+v", st[0], want)
			}
			if g.Path() != "" {
				t.Errorf("Path %q, want empty", g.Path())
			}
			if _, err := g.Usage(); !errors.Is(err, ErrNoCgroup) {
				t.Errorf("Usage: %v, want ErrNoCgroup", err)
			}

			cmd, out := childCmd(t, "sleep")
			if err := g.Start(cmd, cmd.Start); err != nil {
				t.Fatalf("Start: %v", err)
			}
			if err := g.Kill(); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			if err := waitExit(t, cmd, 10*time.Second); !killedBy(err, "killed") {
				t.Fatalf("child ended with %v, want killed; output %q", err, out)
			}
			if err := g.Delete(); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if err := g.Start(cmd, cmd.Start); !errors.Is(err, ErrGroupDeleted) {
				t.Fatalf("Start after Delete: %v, want ErrGroupDeleted", err)
			}
		})
	}
}
