package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/launch"
	"github.com/plughost/plughost/host/loadgen"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// BenchmarkCall compares echo calls routed through a real agent with calls
// made straight to an echo process over go-plugin's transport, at 1 and 64
// concurrent callers — the go test twin of 'plughost bench call'.
func BenchmarkCall(b *testing.B) {
	a := NewAgent(b, AgentOptions{})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")

	unpacked, err := bundle.Open(bundlePath("echo", "1.0.0"), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	inst, stop, err := launch.StartStandalone(context.Background(), launch.Spec{
		Executable: unpacked.Executable, SHA256: unpacked.Manifest.SHA256, Dir: unpacked.Dir,
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
		waitFor(b, 30*time.Second, "the first echo call", func() error {
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
