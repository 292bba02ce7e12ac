package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics/compat"
	"github.com/hashicorp/raft"

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

// BenchmarkClusterPut writes 256-byte values to a three-node cluster of
// durable stores (raft logs fsynced in temporary directories, each log
// store in turn; raft over TCP loopback) through the leader, from 1 and
// from 200 clients. Next to puts/s it reports where a commit's time goes,
// from raft's own metrics: the leader writing its log (leader-log-ms), a
// follower writing the same entries (follower-log-ms), a replication round
// trip (append-rpc-ms) and the whole commit (commit-ms). hashicorp/raft
// writes the leader's log before it replicates, so one client waits for
// two log writes in series; a bolt commit syncs twice, a WAL append once.
//
//	go test -run '^$' -bench ClusterPut -benchtime 2000x ./store/
func BenchmarkClusterPut(b *testing.B) {
	value := make([]byte, 256)
	for _, run := range []struct {
		log     string
		clients int
	}{{LogStoreWAL, 1}, {LogStoreWAL, 200}, {LogStoreBoltDB, 1}, {LogStoreBoltDB, 200}} {
		b.Run(fmt.Sprintf("log=%s/clients=%d", run.log, run.clients), func(b *testing.B) {
			inm := metrics.NewInmemSink(time.Hour, time.Hour)
			mc := metrics.DefaultConfig("bench")
			mc.EnableHostname, mc.EnableRuntimeMetrics = false, false
			if _, err := metrics.NewGlobal(mc, inm); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { metrics.NewGlobal(mc, &metrics.BlackholeSink{}) })
			leader := diskCluster(b, 3, run.log)
			ctx := context.Background()
			for i := range 100 { // connections up, caches warm
				if _, err := leader.Put(ctx, &storev1.PutRequest{Namespace: "bench", Key: fmt.Appendf(nil, "warm/%d", i), Value: value}); err != nil {
					b.Fatal(err)
				}
			}
			for _, iv := range inm.Data() {
				clear(iv.Samples)
			}
			runClients(b, run.clients, func(_, i int) error {
				_, err := leader.Put(ctx, &storev1.PutRequest{Namespace: "bench", Key: fmt.Appendf(nil, "key/%d", i%100000), Value: value})
				return err
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
			for name, key := range map[string]string{
				"commit-ms":       "bench.raft.commitTime",
				"leader-log-ms":   "bench.raft.leader.dispatchLog",
				"follower-log-ms": "bench.raft.rpc.appendEntries.storeLogs",
			} {
				b.ReportMetric(sampleMean(inm, key), name)
			}
			b.ReportMetric(sampleMean(inm, "bench.raft.replication.appendEntries.rpc;peer_id=node2"), "append-rpc-ms")
		})
	}
}

// sampleMean is the mean of the timer samples under key, in milliseconds.
func sampleMean(inm *metrics.InmemSink, key string) float64 {
	var sum float64
	var n int
	for _, iv := range inm.Data() {
		if s, ok := iv.Samples[key]; ok {
			sum += s.Sum
			n += s.Count
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// diskCluster starts n durable stores on TCP loopback, node1 bootstrapping
// and the others added as voters, and returns the leader.
func diskCluster(b *testing.B, n int, logStore string) *Store {
	b.Helper()
	var nodes []*Store
	for i := range n {
		cfg := diskConfig(b.TempDir())
		cfg.NodeID = fmt.Sprint("node", i+1)
		cfg.Bootstrap = i == 0
		cfg.LogStore = logStore
		cfg.timing = nil // production timing: the figures are the agent's
		s, err := Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		nodes = append(nodes, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := nodes[0].WaitForLeader(ctx); err != nil {
		b.Fatal(err)
	}
	for _, s := range nodes[1:] {
		if err := nodes[0].node.raft.AddVoter(raft.ServerID(s.cfg.NodeID), s.node.addr, 0, 10*time.Second).Error(); err != nil {
			b.Fatal(err)
		}
	}
	for _, s := range nodes[1:] {
		if err := s.WaitForLeader(ctx); err != nil {
			b.Fatal(err)
		}
	}
	return nodes[0]
}
