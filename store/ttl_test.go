package store

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// fakeClock is a wall clock the test moves by hand.
type fakeClock struct{ ms atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ms.Store(1_700_000_000_000)
	return c
}
func (c *fakeClock) now() time.Time          { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

// recorder collects a watch's responses in the background.
type recorder struct {
	mu    sync.Mutex
	resps []*storev1.WatchResponse
	done  chan error
}

func startWatch(t *testing.T, s *Store, req *storev1.WatchRequest) *recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{done: make(chan error, 1)}
	go func() {
		r.done <- s.Watch(ctx, req, func(resp *storev1.WatchResponse) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.resps = append(r.resps, resp)
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func (r *recorder) events() []*storev1.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*storev1.Event
	for _, resp := range r.resps {
		out = append(out, resp.GetEvents()...)
	}
	return out
}

func (r *recorder) responses() []*storev1.WatchResponse {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*storev1.WatchResponse(nil), r.resps...)
}

func TestTTLExpiresAtOneRevision(t *testing.T) {
	clock := newFakeClock()
	s := newMemStore(t, func(c *Config) { c.clock = clock.now })
	w := startWatch(t, s, &storev1.WatchRequest{Namespace: "app", StartRevision: s.Revision() + 1})

	// Keys with different TTLs, written at different revisions, all past
	// due when the leader next looks: they expire together.
	for i, ttl := range []int64{1000, 2000, 3000} {
		resp, err := s.Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte{'k', byte('0' + i)}, Value: []byte("v"), TtlMs: ttl})
		if err != nil {
			t.Fatal(err)
		}
		if want := clock.now().UnixMilli() + ttl; resp.GetKv().GetExpiresAtUnixMs() != want {
			t.Errorf("expires_at %d, want %d", resp.GetKv().GetExpiresAtUnixMs(), want)
		}
	}
	put(t, s, "app", "forever", "v")
	if kv := get(t, s, "app", "k0"); kv.GetExpiresAtUnixMs() == 0 {
		t.Errorf("Get lost the expiry: %v", kv)
	}

	clock.advance(5 * time.Second)
	testenv.Eventually(t, 5*time.Second, "keys to expire", func() bool { return len(listAll(t, s, "app")) == 1 })
	if kv := get(t, s, "app", "forever"); kv == nil {
		t.Fatal("a key without TTL expired")
	}

	testenv.Eventually(t, 5*time.Second, "expire events", func() bool { return len(w.events()) == 7 })
	resps := w.responses()
	last := resps[len(resps)-1]
	if len(last.GetEvents()) != 3 {
		t.Fatalf("the expiry revision has %d events, want all 3 keys: %v", len(last.GetEvents()), last)
	}
	for i, ev := range last.GetEvents() {
		if ev.GetType() != storev1.EventType_EVENT_TYPE_EXPIRE || string(ev.GetKv().GetKey()) != string([]byte{'k', byte('0' + i)}) || ev.GetKv().GetValue() != nil {
			t.Errorf("expire event %d = %v", i, ev)
		}
	}
}

func TestTTLRewrittenKeyNotExpired(t *testing.T) {
	clock := newFakeClock()
	s := newMemStore(t, func(c *Config) { c.clock = clock.now })
	ttlPut := func(key string, ttl int64) {
		if _, err := s.Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte(key), Value: []byte("v"), TtlMs: ttl}); err != nil {
			t.Fatal(err)
		}
	}
	ttlPut("longer", 1000)
	ttlPut("longer", 10_000) // rewritten with a later expiry
	ttlPut("kept", 1000)
	ttlPut("kept", 0) // rewritten without a TTL
	ttlPut("gone", 1000)
	ttlPut("txn", 1000)
	if _, err := s.Txn(testenv.Context(t, 20*time.Second), &storev1.TxnRequest{Namespace: "app", Success: []*storev1.TxnOp{putTxnOp("txn", "v2", 0)}}); err != nil {
		t.Fatal(err)
	}

	clock.advance(2 * time.Second)
	testenv.Eventually(t, 5*time.Second, "gone to expire", func() bool { return get(t, s, "app", "gone") == nil })
	for _, k := range []string{"longer", "kept", "txn"} {
		if get(t, s, "app", k) == nil {
			t.Errorf("%s was rewritten after its TTL was set, but expired with the old TTL", k)
		}
	}
	clock.advance(10 * time.Second)
	testenv.Eventually(t, 5*time.Second, "longer to expire", func() bool { return get(t, s, "app", "longer") == nil })
	if get(t, s, "app", "kept") == nil || get(t, s, "app", "txn") == nil {
		t.Error("keys without TTL expired")
	}
}
