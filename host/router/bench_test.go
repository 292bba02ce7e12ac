package router

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// The unary benchmarks compare a client calling the echo backend directly
// over TCP loopback with the same client calling it through the router
// (client → router → backend, each hop TCP loopback), at 1 and 64
// concurrent callers sharing one client connection. Each reports, next to
// ns/op, the latency percentiles, the throughput, and the CPU time of the
// whole process per call (client, router and backend share it), which
// stays comparable when something else loads the machine:
//
//	go test -run xxx -bench . -benchtime 3s [-cpu 1,2] ./host/router/

func BenchmarkDirectUnary(b *testing.B) {
	be := startBackend(b, "1.0.0", reflectBoth)
	benchUnary(b, echov1.NewEchoServiceClient(dialClient(b, be.addr)))
}

func BenchmarkRoutedUnary(b *testing.B) {
	benchUnary(b, newEnv(b).echo)
}

// BenchmarkRemoteUnary is BenchmarkRoutedUnary for a call that arrives at
// a node without an instance: client → n1's router → n2's router over the
// cluster RPC port (mutual TLS) → backend. The figure: its p50 at
// most twice the routed call's.
func BenchmarkRemoteUnary(b *testing.B) {
	nodes := startCluster(b, "n1", "n2")
	nodes[1].runEcho(b, "2.0.0")
	if err := nodes[0].r.SetRemote(nodes[1].remote("2.0.0", true)); err != nil {
		b.Fatal(err)
	}
	benchUnary(b, echov1.NewEchoServiceClient(nodes[0].conn))
}

func benchUnary(b *testing.B, client echov1.EchoServiceClient) {
	for _, callers := range []int{1, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			req := &echov1.EchoRequest{Message: "hello, plughost"}
			ctx := testCtx(b)
			call := func() time.Duration {
				start := time.Now()
				if _, err := client.Echo(ctx, req); err != nil {
					b.Fatal(err)
				}
				return time.Since(start)
			}
			for range 100 { // connections up, buffers warm
				call()
			}
			var (
				mu  sync.Mutex
				all = make([]time.Duration, 0, b.N)
			)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU()
			start := time.Now()
			if callers == 1 {
				for range b.N {
					all = append(all, call())
				}
			} else {
				// RunParallel starts parallelism × GOMAXPROCS goroutines.
				b.SetParallelism((callers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.RunParallel(func(pb *testing.PB) {
					var mine []time.Duration
					for pb.Next() {
						mine = append(mine, call())
					}
					mu.Lock()
					all = append(all, mine...)
					mu.Unlock()
				})
			}
			elapsed := time.Since(start)
			cpu := processCPU() - cpu0
			b.StopTimer()
			slices.Sort(all)
			pct := func(p float64) float64 {
				return float64(all[int(p*float64(len(all)-1))].Nanoseconds()) / 1e3
			}
			b.ReportMetric(pct(0.50), "p50-µs")
			b.ReportMetric(pct(0.99), "p99-µs")
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "calls/s")
			// CPU time of the whole process (client, router and backend)
			// per call: the cost of a call, whatever else loads the machine.
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(len(all)), "cpu-µs/call")
		})
	}
}

// processCPU returns the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
