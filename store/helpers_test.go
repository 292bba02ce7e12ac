package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// testTiming is fast enough for a one-process test on loopback.
var testTiming = timing{
	Heartbeat:   100 * time.Millisecond,
	Election:    100 * time.Millisecond,
	LeaderLease: 100 * time.Millisecond,
	Commit:      5 * time.Millisecond,
	ExpiryScan:  10 * time.Millisecond,
}

// newMemStore opens an in-memory leader, closed when the test ends.
func newMemStore(t testing.TB, configure ...func(*Config)) *Store {
	t.Helper()
	cfg := DefaultConfig()
	cfg.InMemory, cfg.Bootstrap = true, true
	tm := testTiming
	cfg.timing = &tm
	if testing.Verbose() {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "store", Level: hclog.Warn})
	}
	for _, c := range configure {
		c(&cfg)
	}
	s, err := openMemory(cfg)
	if err != nil {
		t.Fatalf("open memory store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// diskConfig is a durable single-node configuration on dir, on loopback.
func diskConfig(dir string) Config {
	cfg := DefaultConfig()
	cfg.NodeID = "node1"
	cfg.Dir = dir
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.Bootstrap = true
	tm := testTiming
	cfg.timing = &tm
	return cfg
}

// openDisk opens a durable store and waits until it leads. The caller
// closes it (tests reopen the same directory).
func openDisk(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("open store on %s: %v", cfg.Dir, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.WaitForLeader(ctx); err != nil {
		s.Close()
		t.Fatalf("wait for leader: %v", err)
	}
	return s
}

func put(t testing.TB, s *Store, ns, key, value string) *storev1.PutResponse {
	t.Helper()
	resp, err := s.Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: ns, Key: []byte(key), Value: []byte(value)})
	if err != nil {
		t.Fatalf("put %s/%s: %v", ns, key, err)
	}
	return resp
}

func get(t testing.TB, s *Store, ns, key string) *storev1.KeyValue {
	t.Helper()
	resp, err := s.Get(testenv.Context(t, 20*time.Second), &storev1.GetRequest{Namespace: ns, Key: []byte(key)})
	if err != nil {
		t.Fatalf("get %s/%s: %v", ns, key, err)
	}
	return resp.GetKv()
}

// listAll pages through a whole namespace.
func listAll(t testing.TB, s *Store, ns string) []*storev1.KeyValue {
	t.Helper()
	var out []*storev1.KeyValue
	var tok []byte
	for {
		resp, err := s.List(testenv.Context(t, 20*time.Second), &storev1.ListRequest{Namespace: ns, PageToken: tok})
		if err != nil {
			t.Fatalf("list %s: %v", ns, err)
		}
		out = append(out, resp.GetKvs()...)
		if tok = resp.GetNextPageToken(); len(tok) == 0 {
			return out
		}
	}
}

func rev(r int64) *int64 { return &r }

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
}

func equalKVs(a, b []*storev1.KeyValue) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
