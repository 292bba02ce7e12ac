package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/governance"
	"github.com/plughost/plughost/host/launch"
	"github.com/plughost/plughost/host/loadgen"
	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// BenchmarkCall compares echo calls routed through a real agent with calls
// made straight to an echo process over go-plugin's transport, at 1 and 64
// concurrent callers — the go test twin of 'plughost bench call'. As there,
// the direct echo runs under the limits the agent gives its own.
func BenchmarkCall(b *testing.B) {
	a := NewAgent(b, AgentOptions{})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")

	unpacked, err := bundle.Open(bundlePath("echo", "1.0.0"), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	group, err := governance.Standalone(a.CgroupParent()+"-direct", echoLimits(b, a))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = group.Delete()
		removeCgroupParent(b, a.CgroupParent()+"-direct")
	})
	inst, stop, err := launch.StartStandalone(context.Background(), launch.Spec{
		Executable: unpacked.Executable, SHA256: unpacked.Manifest.SHA256, Dir: unpacked.Dir, Place: group.Start,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stop)

	req := &echov1.EchoRequest{Message: "0123456789abcdef"}
	paths := map[string]echov1.EchoServiceClient{
		"direct": echov1.NewEchoServiceClient(inst.Conn),
		"routed": echov1.NewEchoServiceClient(a.Conn()),
	}
	for _, clients := range []int{1, 64} {
		for _, path := range []string{"direct", "routed"} {
			c := paths[path]
			b.Run(fmt.Sprintf("%s/clients=%d", path, clients), func(b *testing.B) {
				res, err := loadgen.Run(context.Background(), loadgen.Config{Clients: clients, Total: b.N},
					func(ctx context.Context, _ int) error { _, err := c.Echo(ctx, req); return err })
				if err != nil || res.Errors > 0 {
					b.Fatalf("%v, %d errors (%s)", err, res.Errors, res.FirstError)
				}
				b.ReportMetric(float64(res.P50.Microseconds()), "p50-µs")
				b.ReportMetric(float64(res.P99.Microseconds()), "p99-µs")
				b.ReportMetric(res.OpsPerSec, "calls/s")
			})
		}
	}
}

// echoLimits are the limits the agent enforces on its running echo.
func echoLimits(tb testing.TB, a *Agent) governance.Limits {
	st, err := a.Operator().GetPluginStatus(context.Background(), &operatorv1.GetPluginStatusRequest{Name: "echo"})
	if err != nil {
		tb.Fatal(err)
	}
	var l governance.Limits
	for _, in := range st.GetInstances() {
		for _, ls := range in.GetLimits() {
			if ls.GetEnforced() {
				if err := l.Set(ls.GetResource(), ls.GetValue()); err != nil {
					tb.Fatal(err)
				}
			}
		}
	}
	return l
}

// TestBenchCall runs 'plughost bench call' as an operator would: both
// paths measured at each level, the direct echo under the agent's limits
// for echo, and nothing left behind.
func TestBenchCall(t *testing.T) {
	a := NewAgent(t, AgentOptions{})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")
	before := len(a.PluginProcesses())

	stdout, stderr, code := a.CLI("bench", "call", "-clients", "1,4", "-duration", "400ms", "-rounds", "4", "-warmup", "50ms", "-format", "json")
	if code != 0 {
		t.Fatalf("bench call: exit %d\n%s%s", code, stdout, stderr)
	}
	var out struct {
		Rounds       int    `json:"rounds"`
		DirectLimits string `json:"direct_limits"`
		Results      []struct {
			Clients         int            `json:"clients"`
			Direct          loadgen.Result `json:"direct"`
			Routed          loadgen.Result `json:"routed"`
			P50Ratio        float64        `json:"p50_ratio"`
			ThroughputRatio float64        `json:"throughput_ratio"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("bench call -format json: %v\n%s", err, stdout)
	}
	if out.Rounds != 4 || len(out.Results) != 2 || out.Results[0].Clients != 1 || out.Results[1].Clients != 4 {
		t.Fatalf("bench call reported %+v", out)
	}
	for _, r := range out.Results {
		for path, res := range map[string]loadgen.Result{"direct": r.Direct, "routed": r.Routed} {
			if res.Ops == 0 || res.Errors != 0 || res.P50 <= 0 || res.P50 > res.P99 {
				t.Errorf("%d clients, %s: %+v", r.Clients, path, res)
			}
		}
		if r.P50Ratio <= 0 || r.ThroughputRatio <= 0 {
			t.Errorf("%d clients: ratios %v and %v", r.Clients, r.P50Ratio, r.ThroughputRatio)
		}
	}
	if want := echoLimits(t, a); want.CPU > 0 {
		if !strings.Contains(out.DirectLimits, "cpu "+strconv.FormatFloat(want.CPU, 'f', -1, 64)+" core") || strings.Contains(out.DirectLimits, "NOT") {
			t.Errorf("direct echo limits %q, want the agent's cpu limit of %v core enforced", out.DirectLimits, want.CPU)
		}
	}
	if n := len(a.PluginProcesses()); n != before {
		t.Errorf("%d plugin processes after bench call, %d before: the direct echo was left running", n, before)
	}
	if left, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", "plughost-bench", "standalone-*")); len(left) > 0 {
		t.Errorf("bench call left cgroups behind: %v", left)
	}
}

// BenchmarkBundleDropToFirstCall measures the time from a bundle landing in
// the bundles dir to the first successful call through the agent.
func BenchmarkBundleDropToFirstCall(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		a := NewAgent(b, AgentOptions{})
		echo := echov1.NewEchoServiceClient(a.Conn())
		b.StartTimer()
		start := time.Now()
		a.Drop(bundlePath("echo", "1.0.0"))
		testenv.WaitFor(b, 30*time.Second, "the first echo call", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "first"})
			return err
		})
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-to-first-call")
		b.StopTimer()
		a.Stop()
	}
}

// BenchmarkAgentIdleRSS reports the agent's resident memory, idle, with
// both example plugins running.
func BenchmarkAgentIdleRSS(b *testing.B) {
	for i := 0; i < b.N; i++ {
		a := NewAgent(b, AgentOptions{})
		a.Drop(bundlePath("echo", "1.0.0"))
		a.Drop(bundlePath("counter", "1.0.0"))
		a.WaitRunning("echo", "1.0.0")
		a.WaitRunning("counter", "1.0.0")
		idle := time.NewTimer(3 * time.Second)
		<-idle.C
		b.ReportMetric(float64(rssKiB(b, a.cmd.Process.Pid))/1024, "agent-RSS-MiB")
		a.Stop()
	}
}

// rssKiB reads a process's resident set size.
func rssKiB(tb testing.TB, pid int) int {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(rest)[0])
			return n
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}

// TestBenchUpgradeLoadsThePluginsMethod: without -method, 'plughost bench
// upgrade -plugin counter' loads counter's first unary method (not echo's),
// says which, and the calls reach counter.
func TestBenchUpgradeLoadsThePluginsMethod(t *testing.T) {
	a := NewAgent(t, AgentOptions{})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.Drop(bundlePath("counter", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")
	a.WaitRunning("counter", "1.0.0")

	stdout, stderr, code := a.CLI("bench", "upgrade", "-plugin", "counter", "-to", "1.0.0", "-rate", "20",
		"-before", "300ms", "-after", "300ms", "-d", `{"name":"bench"}`, "-format", "json")
	if code != 0 {
		t.Fatalf("bench upgrade: exit %d\n%s%s", code, stdout, stderr)
	}
	const want = "counter.v1.CounterService/Increment"
	if !strings.Contains(stderr, want) {
		t.Errorf("bench upgrade does not say it calls %s: %q", want, stderr)
	}
	var out struct {
		Method string `json:"method"`
		Calls  int    `json:"calls"`
		Failed int    `json:"failed"`
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("bench upgrade -format json: %v\n%s", err, stdout)
	}
	if out.Method != "/"+want || out.Calls == 0 || out.Failed != 0 {
		t.Fatalf("bench upgrade reported %+v", out)
	}
	got, errOut, code := a.CLI("call", "counter.v1.CounterService/Get", "-d", `{"name":"bench"}`)
	var resp struct{ Value string }
	if err := json.Unmarshal([]byte(got), &resp); code != 0 || err != nil || resp.Value == "" || resp.Value == "0" {
		t.Fatalf("counter bench after the run: exit %d, %q %q; want the load's increments", code, got, errOut)
	}
}
