package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/internal/testenv"
	counterv1 "github.com/plughost/plughost/plugins/counter/proto/counter/v1"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// swapManifest is a manifest with quick health settings for swap tests.
func swapManifest(name, version, strategy string, minHealthy, deadline, drain time.Duration, services ...string) *bundle.Manifest {
	return &bundle.Manifest{
		Name: name, Version: version, APIVersions: []int{1}, Services: services,
		Health: bundle.Health{
			// Checks every second with a second to answer: quick enough for
			// the tests, tolerant of a loaded 2-core CI machine.
			Interval: bundle.Dur(time.Second), Timeout: bundle.Dur(time.Second), FailureThreshold: 3,
			MinHealthyTime: bundle.Dur(minHealthy), HealthyDeadline: bundle.Dur(deadline),
		},
		Upgrade: bundle.Upgrade{Strategy: strategy, DrainTimeout: bundle.Dur(drain)},
	}
}

// buildBundle builds pkg as name@version and bundles it with m.
func buildBundle(t *testing.T, pkg string, m *bundle.Manifest, fixtureName string) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), m.Name)
	if err := goBuild(pkg, exe, m.Version, fixtureName); err != nil {
		t.Fatal(err)
	}
	out, err := bundle.Build(exe, m, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// load is an open-loop load of unary calls at a fixed rate.
type load struct {
	mu       sync.Mutex
	ok       int
	failed   []error
	versions map[string]int
	wg       sync.WaitGroup
	stop     context.CancelFunc
}

// startLoad calls fn rate times a second until Stop.
func startLoad(rate int, fn func(ctx context.Context) (string, error)) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{versions: map[string]int{}, stop: cancel}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				cctx, ccancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer ccancel()
				v, err := fn(cctx)
				l.mu.Lock()
				defer l.mu.Unlock()
				if err != nil {
					l.failed = append(l.failed, err)
					return
				}
				l.ok++
				l.versions[v]++
			}()
		}
	}()
	return l
}

// Stop ends the load and waits for every call in flight.
func (l *load) Stop() (ok int, failed []error, versions map[string]int) {
	l.stop()
	l.wg.Wait()
	return l.ok, l.failed, l.versions
}

// pin pins a version through the API and returns the streamed progress and
// the stream's final error (nil when the new version serves).
func pin(t *testing.T, a *Agent, name, version string) ([]*operatorv1.SwapProgress, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := a.Operator().PinVersion(ctx, &operatorv1.PinVersionRequest{Name: name, Version: version})
	if err != nil {
		t.Fatal(err)
	}
	var steps []*operatorv1.SwapProgress
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return steps, nil
		}
		if err != nil {
			return steps, err
		}
		// A plugin that runs follows a rollout: the records of the rollout
		// come between the answering node's swap steps (area: surface).
		if m.GetProgress() != nil {
			steps = append(steps, m.GetProgress())
		}
	}
}

func lastPhase(steps []*operatorv1.SwapProgress) operatorv1.SwapPhase {
	if len(steps) == 0 {
		return operatorv1.SwapPhase_SWAP_PHASE_UNSPECIFIED
	}
	return steps[len(steps)-1].GetPhase()
}

// TestOverlapUpgradeUnderLoad upgrades echo with the overlap strategy while
// 250 unary calls a second and a stream of long-lived streams run through
// the agent: no unary call fails, and every stream either finishes or is
// one of those the drain timeout cut off, as the swap reports.
func TestOverlapUpgradeUnderLoad(t *testing.T) {
	t.Parallel()
	const minHealthy, drain = time.Second, 1500 * time.Millisecond
	v1 := buildBundle(t, "./plugins/echo", swapManifest("echo", "1.0.0", "overlap", minHealthy, 20*time.Second, drain, "echo.v1.EchoService"), "")
	v2 := buildBundle(t, "./plugins/echo", swapManifest("echo", "1.1.0", "overlap", minHealthy, 20*time.Second, drain, "echo.v1.EchoService"), "")
	a := NewAgent(t, AgentOptions{})
	a.Drop(v1)
	a.WaitRunning("echo", "1.0.0")
	if _, _, code := a.CLI("plugin", "pin", "-detach", "echo", "1.0.0"); code != 0 {
		t.Fatal("pin 1.0.0 failed")
	}
	a.Drop(v2) // pinned: 1.1.0 is registered but does not run yet
	testenv.WaitFor(t, 10*time.Second, "1.1.0 to register", func() error {
		vs, err := a.Operator().ListVersions(context.Background(), &operatorv1.ListVersionsRequest{Name: "echo"})
		if err != nil || len(vs.GetVersions()) != 2 {
			return fmt.Errorf("versions %v %v", vs, err)
		}
		return nil
	})

	echo := echov1.NewEchoServiceClient(a.Conn())
	unary := startLoad(250, func(ctx context.Context) (string, error) {
		r, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "load"})
		return r.GetVersion(), err
	})
	// Streams of 2.5 s, a new one every 100 ms: those still running on the
	// old version 1.5 s after the switch are cut off by the drain timeout.
	var streamsOK, streamsCut atomic.Int64
	var swg sync.WaitGroup
	sctx, sstop := context.WithCancel(context.Background())
	swg.Add(1)
	go func() {
		defer swg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for sctx.Err() == nil {
			<-tick.C
			swg.Add(1)
			go func() {
				defer swg.Done()
				st, err := echo.EchoStream(context.Background(), &echov1.EchoStreamRequest{Message: "s", Count: 25, IntervalMs: 100})
				n := 0
				for err == nil {
					if _, err = st.Recv(); err == nil {
						n++
					}
				}
				if errors.Is(err, io.EOF) && n == 25 {
					streamsOK.Add(1)
				} else {
					streamsCut.Add(1)
				}
			}()
		}
	}()
	steady := time.NewTimer(2 * time.Second)
	<-steady.C

	start := time.Now()
	steps, err := pin(t, a, "echo", "1.1.0")
	swapTime := time.Since(start)
	if err != nil {
		t.Fatalf("pin 1.1.0: %v (steps %v)", err, steps)
	}
	after := time.NewTimer(3 * time.Second)
	<-after.C
	sstop()
	swg.Wait()
	ok, failed, versions := unary.Stop()

	var cut, serving int64
	for _, s := range steps {
		cut = max(cut, s.GetCutOff())
		if s.GetPhase() == operatorv1.SwapPhase_SWAP_PHASE_SWITCHING {
			serving = s.GetElapsedMs()
		}
	}
	t.Logf("pin → new version serving %dms (min_healthy_time %s), pin → old drained %s; unary ok %d failed %d by version %v; streams finished %d, cut %d (reported %d)",
		serving, minHealthy, swapTime.Round(time.Millisecond), ok, len(failed), versions, streamsOK.Load(), streamsCut.Load(), cut)
	if len(failed) > 0 {
		t.Fatalf("%d unary calls failed during an overlap upgrade, first: %v", len(failed), failed[0])
	}
	if versions["1.0.0"] == 0 || versions["1.1.0"] == 0 {
		t.Fatalf("calls were not served by both versions: %v", versions)
	}
	if streamsCut.Load() != cut {
		t.Fatalf("%d streams ended early but the swap reported %d cut off", streamsCut.Load(), cut)
	}
	if lastPhase(steps) != operatorv1.SwapPhase_SWAP_PHASE_DONE {
		t.Fatalf("last progress %v", steps[len(steps)-1])
	}
	var sawGate, sawDrain bool
	for _, s := range steps {
		sawGate = sawGate || s.GetPhase() == operatorv1.SwapPhase_SWAP_PHASE_HEALTH_GATING
		sawDrain = sawDrain || s.GetPhase() == operatorv1.SwapPhase_SWAP_PHASE_DRAINING
	}
	if !sawGate || !sawDrain {
		t.Fatalf("progress did not show health-gating and draining: %v", steps)
	}
}

// TestBadVersionsFallBackUnderLoad pins versions that never become healthy
// or crash during their health gate while calls run: none fails, the old
// version serves throughout, and the fallback is recorded with its reason.
func TestBadVersionsFallBackUnderLoad(t *testing.T) {
	t.Parallel()
	const deadline = 3 * time.Second
	good := buildBundle(t, "./plugins/echo", swapManifest("echo", "1.0.0", "overlap", time.Second, deadline, time.Second, "echo.v1.EchoService"), "")
	never := buildBundle(t, "./test/fixtures/unhealthy", swapManifest("echo", "2.0.0", "overlap", time.Second, deadline, time.Second, "echo.v1.EchoService"), "echo")
	crash := buildBundle(t, "./test/fixtures/crashloop", swapManifest("echo", "2.0.1", "overlap", 2*time.Second, deadline, time.Second, "echo.v1.EchoService"), "echo")
	a := NewAgent(t, AgentOptions{})
	a.Drop(good)
	a.WaitRunning("echo", "1.0.0")
	if _, _, code := a.CLI("plugin", "pin", "-detach", "echo", "1.0.0"); code != 0 {
		t.Fatal("pin 1.0.0 failed")
	}
	a.Drop(never)
	a.Drop(crash)
	testenv.WaitFor(t, 20*time.Second, "the bad versions to register", func() error {
		vs, err := a.Operator().ListVersions(context.Background(), &operatorv1.ListVersionsRequest{Name: "echo"})
		if err != nil || len(vs.GetVersions()) != 3 {
			return fmt.Errorf("versions %v %v", vs, err)
		}
		return nil
	})
	echo := echov1.NewEchoServiceClient(a.Conn())
	for _, bad := range []struct{ version, reason string }{
		{"2.0.0", "healthy_deadline"},
		{"2.0.1", "exited with status 2"},
	} {
		t.Run(bad.version, func(t *testing.T) {
			l := startLoad(200, func(ctx context.Context) (string, error) {
				r, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "load"})
				return r.GetVersion(), err
			})
			start := time.Now()
			steps, err := pin(t, a, "echo", bad.version)
			took := time.Since(start)
			ok, failed, versions := l.Stop()
			t.Logf("fallback from %s took %s (healthy_deadline %s); ok %d failed %d versions %v", bad.version, took.Round(time.Millisecond), deadline, ok, len(failed), versions)
			if err == nil || lastPhase(steps) != operatorv1.SwapPhase_SWAP_PHASE_FELL_BACK {
				t.Fatalf("pin of %s: err %v, steps %v; want a fallback", bad.version, err, steps)
			}
			if len(failed) > 0 {
				t.Fatalf("%d calls failed, first: %v", len(failed), failed[0])
			}
			if len(versions) != 1 || versions["1.0.0"] != ok {
				t.Fatalf("calls were served by %v, want only 1.0.0", versions)
			}
			out, _, _ := a.CLI("plugin", "history", "echo")
			if !strings.Contains(out, "fell back") || !strings.Contains(out, bad.reason) {
				t.Fatalf("history does not record the fallback with %q:\n%s", bad.reason, out)
			}
			// The CLI reports a fallback with exit code 1.
			if _, _, code := a.CLI("plugin", "pin", "echo", bad.version); code != 1 {
				t.Fatalf("CLI pin of %s exited %d, want 1", bad.version, code)
			}
		})
	}
}

// TestRestartUpgradeOfCounterUnderLoad swaps counter with the restart
// strategy while increments run: calls are held, not failed, and the count
// is exact afterwards.
func TestRestartUpgradeOfCounterUnderLoad(t *testing.T) {
	t.Parallel()
	v1 := buildBundle(t, "./plugins/counter", swapManifest("counter", "1.0.0", "restart", 500*time.Millisecond, 20*time.Second, 2*time.Second, "counter.v1.CounterService"), "")
	v2 := buildBundle(t, "./plugins/counter", swapManifest("counter", "1.1.0", "restart", 500*time.Millisecond, 20*time.Second, 2*time.Second, "counter.v1.CounterService"), "")
	a := NewAgent(t, AgentOptions{})
	a.Drop(v1)
	a.WaitRunning("counter", "1.0.0")
	if _, _, code := a.CLI("plugin", "pin", "-detach", "counter", "1.0.0"); code != 0 {
		t.Fatal("pin failed")
	}
	a.Drop(v2)
	testenv.WaitFor(t, 10*time.Second, "1.1.0 to register", func() error {
		vs, err := a.Operator().ListVersions(context.Background(), &operatorv1.ListVersionsRequest{Name: "counter"})
		if err != nil || len(vs.GetVersions()) != 2 {
			return fmt.Errorf("versions %v %v", vs, err)
		}
		return nil
	})
	counter := counterv1.NewCounterServiceClient(a.Conn())
	l := startLoad(200, func(ctx context.Context) (string, error) {
		r, err := counter.Increment(ctx, &counterv1.IncrementRequest{Name: "swap", Delta: 1})
		return r.GetVersion(), err
	})
	warm := time.NewTimer(time.Second)
	<-warm.C
	steps, err := pin(t, a, "counter", "1.1.0")
	if err != nil {
		t.Fatalf("restart upgrade: %v (%v)", err, steps)
	}
	settle := time.NewTimer(time.Second)
	<-settle.C
	ok, failed, versions := l.Stop()
	if len(failed) > 0 {
		t.Fatalf("%d increments failed during a restart upgrade, first: %v", len(failed), failed[0])
	}
	got, err := counter.Get(context.Background(), &counterv1.GetRequest{Name: "swap"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("increments ok %d by version %v; counter %d", ok, versions, got.GetValue())
	if got.GetValue() != int64(ok) {
		t.Fatalf("counter = %d after %d acknowledged increments", got.GetValue(), ok)
	}
	if versions["1.1.0"] == 0 {
		t.Fatalf("1.1.0 served nothing: %v", versions)
	}
	// The restart strategy held calls while no instance served.
	out, _, _ := a.CLI("plugin", "history", "counter")
	if !strings.Contains(out, "restart") || !strings.Contains(out, "done") {
		t.Fatalf("history:\n%s", out)
	}
}

// TestVersionControlSurvivesRestart drives pin, unpin, rollback and history
// through the real CLI, restarting the agent in between: the operator's
// choices and failed versions persist.
func TestVersionControlSurvivesRestart(t *testing.T) {
	t.Parallel()
	const q = 300 * time.Millisecond
	b1 := buildBundle(t, "./plugins/echo", swapManifest("echo", "1.0.0", "overlap", q, 10*time.Second, time.Second, "echo.v1.EchoService"), "")
	b2 := buildBundle(t, "./plugins/echo", swapManifest("echo", "1.1.0", "overlap", q, 10*time.Second, time.Second, "echo.v1.EchoService"), "")
	bad := buildBundle(t, "./test/fixtures/unhealthy", swapManifest("echo", "2.0.0", "overlap", q, 2*time.Second, time.Second, "echo.v1.EchoService"), "echo")
	a := NewAgent(t, AgentOptions{})
	a.Drop(b1)
	a.Drop(b2)
	a.WaitRunning("echo", "1.1.0")

	run := func(want int, args ...string) string {
		t.Helper()
		out, errOut, code := a.CLI(args...)
		if code != want {
			t.Fatalf("plughost %v: exit %d, want %d\n%s%s", args, code, want, out, errOut)
		}
		return out
	}
	out := run(0, "plugin", "pin", "echo", "1.0.0")
	for _, phase := range []string{"starting", "health-gating", "switching", "draining", "done"} {
		if !strings.Contains(out, phase) {
			t.Errorf("pin progress lacks %q:\n%s", phase, out)
		}
	}
	a.Stop()
	a.Start()
	a.WaitRunning("echo", "1.0.0") // the pin survived the restart
	run(0, "plugin", "rollback", "echo")
	a.WaitRunning("echo", "1.1.0") // rollback: back to what served before 1.0.0
	run(0, "plugin", "unpin", "echo")

	a.Drop(bad) // the highest version now, and never healthy
	testenv.WaitFor(t, 30*time.Second, "2.0.0 to fail and 1.1.0 to keep serving", func() error {
		out, _, _ := a.CLI("plugin", "history", "echo")
		if !strings.Contains(out, "fell back") {
			return errors.New("no fallback yet")
		}
		return nil
	})
	a.WaitRunning("echo", "1.1.0")
	a.Stop()
	a.Start()
	// After a restart the failed version is not tried again by itself.
	a.WaitRunning("echo", "1.1.0")
	out = run(0, "plugin", "history", "echo")
	for _, want := range []string{"register", "pin", "rollback", "unpin", "swap", "fell back"} {
		if !strings.Contains(out, want) {
			t.Errorf("history lacks %q:\n%s", want, out)
		}
	}
	out = run(0, "plugin", "status", "echo")
	if !strings.Contains(out, "Running:   1.1.0") {
		t.Fatalf("status:\n%s", out)
	}
}
