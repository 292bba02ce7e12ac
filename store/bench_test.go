package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// runClients runs b.N calls of op spread over n concurrent clients.
func runClients(b *testing.B, n int, op func(client, i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for c := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := op(c, int(i)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
}

// BenchmarkPut writes 256-byte values to a durable single-node store (raft
// log fsynced on a temporary directory), from 1 and from 200 clients.
func BenchmarkPut(b *testing.B) {
	value := make([]byte, 256)
	for _, clients := range []int{1, 200} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			s := openDisk(b, diskConfig(b.TempDir()))
			defer s.Close()
			ctx := context.Background()
			runClients(b, clients, func(_, i int) error {
				_, err := s.Put(ctx, &storev1.PutRequest{Namespace: "bench", Key: fmt.Appendf(nil, "key/%d", i%10000), Value: value})
				return err
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
		})
	}
}

// BenchmarkGetLinearizable reads with the default consistency from 1 and
// from 200 clients: each read confirms leadership (shared between
// concurrent readers) and waits for the commit index to be applied.
func BenchmarkGetLinearizable(b *testing.B) {
	for _, clients := range []int{1, 200} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			s := openDisk(b, diskConfig(b.TempDir()))
			defer s.Close()
			ctx := context.Background()
			for i := range 100 {
				if _, err := s.Put(ctx, &storev1.PutRequest{Namespace: "bench", Key: fmt.Appendf(nil, "key/%d", i), Value: make([]byte, 256)}); err != nil {
					b.Fatal(err)
				}
			}
			runClients(b, clients, func(_, i int) error {
				resp, err := s.Get(ctx, &storev1.GetRequest{Namespace: "bench", Key: fmt.Appendf(nil, "key/%d", i%100)})
				if err == nil && resp.GetKv() == nil {
					err = fmt.Errorf("key/%d missing", i%100)
				}
				return err
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "gets/s")
		})
	}
}
