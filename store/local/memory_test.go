package local

import (
	"context"
	"errors"
	"testing"
	"time"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// TestMemory runs the store's semantics over Memory's log: revisions in
// order, compare-and-set, session reads, watch, TTL expiry and close.
func TestMemory(t *testing.T) {
	m, err := OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	events := make(chan *storev1.WatchResponse, 8)
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- m.Watch(wctx, &storev1.WatchRequest{Namespace: "app", StartRevision: 1}, func(r *storev1.WatchResponse) error {
			events <- r
			return nil
		})
	}()

	put, err := m.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("k"), Value: []byte("v1")})
	if err != nil || put.GetRevision() != 1 {
		t.Fatalf("first put: revision %d, %v; want revision 1", put.GetRevision(), err)
	}
	stale := int64(0)
	if _, err := m.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("k"), Value: []byte("v2"), ExpectedModRevision: &stale}); !errors.Is(err, ErrCASFailed) {
		t.Fatalf("put expecting a missing key: %v, want ErrCASFailed", err)
	}
	if _, err := m.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("t"), Value: []byte("x"), TtlMs: 1}); err != nil {
		t.Fatal(err)
	}
	get, err := m.Get(ctx, &storev1.GetRequest{Namespace: "app", Key: []byte("k"),
		Consistency: storev1.Consistency_CONSISTENCY_SESSION, MinRevision: put.GetRevision()})
	if err != nil || string(get.GetKv().GetValue()) != "v1" {
		t.Fatalf("session get: %v, %v", get, err)
	}
	if _, err := m.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("big"), Value: make([]byte, DefaultMaxValueBytes+1)}); !errors.Is(err, ErrValueTooLarge) {
		t.Fatalf("oversized put: %v, want ErrValueTooLarge", err)
	}

	// The key with a TTL expires by itself, at a revision of its own.
	for {
		resp, err := m.Get(ctx, &storev1.GetRequest{Namespace: "app", Key: []byte("t")})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetKv() == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the key with a 1 ms TTL never expired")
		case <-time.After(5 * time.Millisecond):
		}
	}
	var revs []int64
	for len(revs) < 3 {
		select {
		case r := <-events:
			revs = append(revs, r.GetRevision())
		case <-ctx.Done():
			t.Fatalf("watch saw revisions %v, want three", revs)
		}
	}
	// Revision 2 is the failed compare-and-set: in the log, but no change.
	if revs[0] != 1 || revs[1] != 3 || revs[2] != 4 {
		t.Errorf("watch saw revisions %v, want 1 (put), 3 (put with TTL), 4 (expiry)", revs)
	}
	stopWatch()
	<-watchDone

	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("k"), Value: []byte("v")}); !errors.Is(err, ErrClosed) {
		t.Errorf("put after close: %v, want ErrClosed", err)
	}
	if _, err := m.Get(ctx, &storev1.GetRequest{Namespace: "app", Key: []byte("k"), Consistency: storev1.Consistency_CONSISTENCY_STALE}); !errors.Is(err, ErrClosed) {
		t.Errorf("stale get after close: %v, want ErrClosed", err)
	}
}
