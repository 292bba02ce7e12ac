package test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// BenchmarkRemoteCall compares, on real agents, a call that arrives at a
// node without an instance (n1, relayed to n2 over the cluster RPC port)
// with a call routed to the local instance (n2), in alternating turns so
// both see the same machine. The figure: remote p50 at most twice
// the local one.
//
//	go test -run xxx -bench RemoteCall -benchtime 3000x ./test/
func BenchmarkRemoteCall(b *testing.B) {
	agents := NewCluster(b, 3)
	bundle := withPlacement(b, "echo", "1.0.0", map[string]any{"mode": "count", "count": 1, "constraint": `zone == "n2"`})
	if _, errOut, code := agents[0].CLI("bundle", "add", bundle); code != 0 {
		b.Fatalf("bundle add echo: %s", errOut)
	}
	local := echov1.NewEchoServiceClient(agents[1].Conn())
	remote := echov1.NewEchoServiceClient(agents[0].Conn())
	req := &echov1.EchoRequest{Message: "hello, plughost"}
	call := func(c echov1.EchoServiceClient) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := c.Echo(ctx, req)
		return time.Since(start), err
	}
	testenv.WaitFor(b, 60*time.Second, "echo to answer through n1 and n2", func() error {
		for _, c := range []echov1.EchoServiceClient{local, remote} {
			if _, err := call(c); err != nil {
				return err
			}
		}
		return nil
	})
	for range 200 { // connections up, buffers warm
		_, _ = call(local)
		_, _ = call(remote)
	}
	var locals, remotes []time.Duration
	b.ResetTimer()
	for range b.N {
		for _, c := range []echov1.EchoServiceClient{local, remote} {
			d, err := call(c)
			if err != nil {
				b.Fatal(err)
			}
			if c == local {
				locals = append(locals, d)
			} else {
				remotes = append(remotes, d)
			}
		}
	}
	b.StopTimer()
	p50 := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Nanoseconds()) / 1e3
	}
	p99 := func(ds []time.Duration) float64 { return float64(ds[len(ds)*99/100].Nanoseconds()) / 1e3 }
	l, r := p50(locals), p50(remotes)
	b.ReportMetric(l, "local-p50-µs")
	b.ReportMetric(r, "remote-p50-µs")
	b.ReportMetric(p99(locals), "local-p99-µs")
	b.ReportMetric(p99(remotes), "remote-p99-µs")
	b.ReportMetric(r/l, "remote/local-p50")
}
