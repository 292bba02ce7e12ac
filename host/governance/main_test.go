package governance

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/internal/testenv"
)

// childEnv makes the test binary run a child behaviour instead of tests:
//
//	memhog    allocate and touch memory, 1 MiB at a time, up to 1 GiB
//	cpuhog    print "spinning", then spin on one core for GOVTEST_SECONDS
//	          (default 3) of wall time
//	forkbomb  start `sleep 60` children as fast as it can, for at most 60 s
//	sleep     wait GOVTEST_SECONDS (default 60) and exit 0
//	whereami  print /proc/self/cgroup and a line "END" first thing, then sleep
//	exit      exit 0 at once
const childEnv = "GOVTEST_CHILD"

func TestMain(m *testing.M) {
	if behaviour := os.Getenv(childEnv); behaviour != "" {
		os.Exit(runChild(behaviour))
	}
	cleanAbandoned()
	os.Exit(m.Run())
}

func runChild(behaviour string) int {
	seconds := func(def float64) time.Duration {
		if v, err := strconv.ParseFloat(os.Getenv("GOVTEST_SECONDS"), 64); err == nil {
			def = v
		}
		return time.Duration(def * float64(time.Second))
	}
	switch behaviour {
	case "memhog":
		var hoard [][]byte
		for range 1024 {
			b := make([]byte, 1<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			hoard = append(hoard, b)
		}
		fmt.Printf("allocated %d MiB and was not killed\n", len(hoard))
		return 3
	case "cpuhog":
		d := seconds(3)
		fmt.Println("spinning")
		for start := time.Now(); time.Since(start) < d; {
		}
		return 0
	case "forkbomb":
		name, args := "sleep", []string{"60"}
		if _, err := exec.LookPath(name); err != nil {
			name, args = os.Args[0], nil
			os.Setenv(childEnv, "sleep")
		}
		var started, refused int
		for end := time.Now().Add(60 * time.Second); time.Now().Before(end); {
			if err := exec.Command(name, args...).Start(); err != nil {
				refused++ // pids.max reached: keep pushing
				continue
			}
			started++
		}
		fmt.Printf("started %d, refused %d\n", started, refused)
		return 0
	case "sleep":
		<-time.After(seconds(60)) // the behaviour under test is "a process that stays"
		return 0
	case "whereami":
		b, err := os.ReadFile("/proc/self/cgroup")
		if err != nil {
			fmt.Println(err)
			return 1
		}
		fmt.Printf("%sEND\n", b)
		<-time.After(seconds(60))
		return 0
	case "exit":
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown %s=%q\n", childEnv, behaviour)
	return 2
}

// childCmd returns a command that runs this test binary as behaviour.
func childCmd(t testing.TB, behaviour string, env ...string) (*exec.Cmd, *testenv.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	// Under -race a child would otherwise sleep a second at exit.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(append(os.Environ(), childEnv+"="+behaviour, "GORACE="+gorace), env...)
	out := new(testenv.SyncBuffer)
	cmd.Stdout, cmd.Stderr = out, out
	return cmd, out
}

// waitExit waits for cmd to end and returns cmd.Wait's error; it fails the
// test if cmd runs past timeout.
func waitExit(t testing.TB, cmd *exec.Cmd, timeout time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("child %d still running after %s", cmd.Process.Pid, timeout)
		return nil
	}
}

// testParent is a parent cgroup of this test alone, so that test runs,
// and other users of the host, never meet.
func testParent(t testing.TB) string {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return fmt.Sprintf("plughost-test-%d-%s", os.Getpid(), name)
}

// testLogger logs through t.
func testLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "governance", Level: hclog.Debug, Output: logWriter{t}})
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newTestManager returns a Manager on a parent cgroup of the test's own,
// which is emptied and removed when the test ends.
func newTestManager(t testing.TB, cfg Config) *Manager {
	t.Helper()
	if cfg.Parent == "" {
		cfg.Parent = testParent(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("removing the test's cgroups: %v", err)
		}
	})
	return m
}

// killedBy reports whether err, from cmd.Wait, says the process died of a
// signal whose name is sig (e.g. "killed").
func killedBy(err error, sig string) bool {
	var exit *exec.ExitError
	return errors.As(err, &exit) && !exit.Exited() && strings.Contains(exit.String(), "signal: "+sig)
}

func statusOf(t testing.TB, g *Group, resource string) LimitStatus {
	t.Helper()
	for _, s := range g.Enforcement() {
		if s.Resource == resource {
			return s
		}
	}
	t.Fatalf("no LimitStatus for %q in %+v", resource, g.Enforcement())
	return LimitStatus{}
}
