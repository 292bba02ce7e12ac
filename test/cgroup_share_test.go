package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// TestAgentsShareCgroupParent: two agents on one machine, both with the
// default cgroup parent, keep out of each other's cgroups. While one agent
// is started, stopped, killed with -9 (its reaper runs) and restarted, the
// other's echo serves every call, is never restarted and records no exit.
func TestAgentsShareCgroupParent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for cgroups")
	}
	b := NewAgent(t, AgentOptions{DefaultCgroupParent: true})
	b.Drop(bundlePath("echo", "1.0.0"))
	b.WaitRunning("echo", "1.0.0")
	bPids := b.PluginProcesses()
	if len(bPids) == 0 {
		t.Fatalf("no echo process under %s", b.DataDir)
	}
	bGroup, bErr := b.recordedCgroup()
	if bErr != nil {
		t.Error(bErr)
	}
	calls := startEchoCalls(t, b)

	a := NewAgent(t, AgentOptions{DefaultCgroupParent: true})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")
	aGroup, aErr := a.recordedCgroup()
	if aErr != nil {
		t.Error(aErr)
	} else if aGroup == bGroup {
		t.Fatalf("both agents use cgroup %s", aGroup)
	}

	a.Stop()
	if left := cgroupDirs(aGroup); aGroup != "" && len(left) > 0 {
		t.Errorf("the stopped agent left its cgroup behind: %v", left)
	}
	a.Start()
	a.WaitRunning("echo", "1.0.0")
	a.Kill9()
	testenv.WaitFor(t, 30*time.Second, "the killed agent's reaper to remove its plugins and cgroup", func() error {
		if pids := a.PluginProcesses(); len(pids) > 0 {
			return fmt.Errorf("plugin processes %v still run", pids)
		}
		if left := cgroupDirs(aGroup); aGroup != "" && len(left) > 0 {
			return fmt.Errorf("cgroups %v are still there", left)
		}
		return nil
	})
	a.Start()
	a.WaitRunning("echo", "1.0.0")
	calls.waitMore(t, 20)

	n, failures := calls.stop()
	t.Logf("%d calls to the other agent's echo, %d failed", n, len(failures))
	if len(failures) > 0 {
		t.Errorf("%d of %d calls to the other agent's echo failed; the first:%s", len(failures), n, describeFailures(failures[:min(5, len(failures))]))
	}
	if now := b.PluginProcesses(); !slices.Equal(now, bPids) {
		t.Errorf("the other agent's plugin processes are %v, were %v: its echo was restarted", now, bPids)
	}
	if dirs := cgroupDirs(bGroup); bGroup != "" && len(dirs) == 0 {
		t.Errorf("the other agent's cgroup %s is gone", bGroup)
	}
	evs, err := pluginEvents(t, b, "echo")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Type != "started" {
			t.Errorf("the other agent's echo has events beyond its start:%s", describeEvents(evs))
			break
		}
	}

	// Stopped, the agents leave neither their cgroups nor an empty parent
	// (one that holds another agent's cgroups stays).
	a.Stop()
	b.Stop()
	for _, own := range []string{aGroup, bGroup} {
		if own == "" {
			continue // not recorded: said above
		}
		for _, dir := range cgroupDirs(own) {
			t.Errorf("cgroup %s is still there after its agent stopped", dir)
		}
	}
	for _, dir := range cgroupDirs(b.CgroupParent()) {
		if subdirs, _ := filepath.Glob(filepath.Join(dir, "*", "")); !slices.ContainsFunc(subdirs, isDir) {
			t.Errorf("the agents left their empty cgroup parent %s behind", dir)
		}
	}
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// cgroupDirs lists the directories of cgroup rel (below the hierarchy root)
// in every mounted hierarchy.
func cgroupDirs(rel string) []string {
	dirs, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", rel))
	return dirs
}

// echoCalls calls an agent's echo in a loop, one call at a time, until
// stopped, for at most 10 minutes or 100000 calls.
type echoCalls struct {
	done chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	n        int
	failures []error
}

func startEchoCalls(t *testing.T, a *Agent) *echoCalls {
	c := &echoCalls{done: make(chan struct{})}
	echo := echov1.NewEchoServiceClient(a.Conn())
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		deadline := time.Now().Add(10 * time.Minute)
		for i := 0; i < 100000 && time.Now().Before(deadline); i++ {
			select {
			case <-c.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			msg := fmt.Sprintf("call %d", i)
			resp, err := echo.Echo(ctx, &echov1.EchoRequest{Message: msg})
			cancel()
			if err == nil && resp.GetMessage() != msg {
				err = fmt.Errorf("echo answered %q to %q", resp.GetMessage(), msg)
			}
			c.mu.Lock()
			c.n++
			if err != nil {
				c.failures = append(c.failures, fmt.Errorf("call %d at %s: %w", i, time.Now().Format(time.TimeOnly), err))
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.stop() })
	return c
}

// waitMore waits until k more calls are made.
func (c *echoCalls) waitMore(t *testing.T, k int) {
	t.Helper()
	c.mu.Lock()
	target := c.n + k
	c.mu.Unlock()
	testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("%d more echo calls", k), func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.n < target {
			return fmt.Errorf("%d calls made, want %d", c.n, target)
		}
		return nil
	})
}

// stop ends the loop and returns how many calls were made and which failed.
func (c *echoCalls) stop() (int, []error) {
	select {
	case <-c.done:
	default:
		close(c.done)
	}
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, append([]error(nil), c.failures...)
}

// describeFailures joins errs for a message.
func describeFailures(errs []error) string {
	var b strings.Builder
	for _, err := range errs {
		fmt.Fprintf(&b, "\n  %v", err)
	}
	return b.String()
}
