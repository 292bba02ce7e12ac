package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	counterv1 "github.com/plughost/plughost/plugins/counter/proto/counter/v1"
	"github.com/plughost/plughost/sdk"
	"github.com/plughost/plughost/sdk/sdktest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var info = sdk.Info{Name: "counter", Version: "1.0.0"}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// hammer runs goroutines × increments of +1 on name, spread over clients,
// and fails the test on any error.
func hammer(t *testing.T, ctx context.Context, clients []counterv1.CounterServiceClient, name string, goroutines, increments int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		c := clients[g%len(clients)]
		wg.Go(func() {
			for range increments {
				if _, err := c.Increment(ctx, &counterv1.IncrementRequest{Name: name}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestIncrementConcurrent(t *testing.T) {
	ctx := testCtx(t)
	h := sdktest.Start(t, info, newServer("1.0.0"))
	c := counterv1.NewCounterServiceClient(h.Conn())

	hammer(t, ctx, []counterv1.CounterServiceClient{c}, "hits", 50, 20)
	got, err := c.Get(ctx, &counterv1.GetRequest{Name: "hits"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetValue() != 1000 || got.GetVersion() != "1.0.0" {
		t.Fatalf("hits = %d (version %s), want 1000", got.GetValue(), got.GetVersion())
	}
	kv, err := h.Store().Get(ctx, "counters/hits")
	if err != nil || string(kv.Value) != "1000" || kv.Version != 1000 {
		t.Fatalf("stored %+v, %v; want \"1000\" after 1000 writes", kv, err)
	}
}

// TestIncrementAcrossNodes runs three instances on one store, as three nodes
// would: their increments race on the store's compare-and-set.
func TestIncrementAcrossNodes(t *testing.T) {
	ctx := testCtx(t)
	h1 := sdktest.Start(t, info, newServer("1.0.0"))
	h2 := sdktest.StartWith(t, info, newServer("1.0.0"), sdktest.Options{ShareStoreWith: h1})
	h3 := sdktest.StartWith(t, info, newServer("1.1.0"), sdktest.Options{ShareStoreWith: h1})
	clients := []counterv1.CounterServiceClient{
		counterv1.NewCounterServiceClient(h1.Conn()),
		counterv1.NewCounterServiceClient(h2.Conn()),
		counterv1.NewCounterServiceClient(h3.Conn()),
	}
	hammer(t, ctx, clients, "shared", 30, 20)
	for _, c := range clients {
		got, err := c.Get(ctx, &counterv1.GetRequest{Name: "shared"})
		if err != nil || got.GetValue() != 600 {
			t.Fatalf("shared = %v, %v; want 600 on every node", got, err)
		}
	}
}

func TestIncrementDelta(t *testing.T) {
	ctx := testCtx(t)
	h := sdktest.Start(t, info, newServer("1.0.0"))
	c := counterv1.NewCounterServiceClient(h.Conn())
	for _, step := range []struct{ delta, want int64 }{{0, 1}, {5, 6}, {-10, -4}} {
		resp, err := c.Increment(ctx, &counterv1.IncrementRequest{Name: "d", Delta: step.delta})
		if err != nil || resp.GetValue() != step.want {
			t.Fatalf("increment by %d: %v, %v; want %d", step.delta, resp, err, step.want)
		}
	}
	if got, err := c.Get(ctx, &counterv1.GetRequest{Name: "never"}); err != nil || got.GetValue() != 0 {
		t.Fatalf("unknown counter: %v, %v; want 0", got, err)
	}
	if _, err := c.Get(ctx, &counterv1.GetRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty name: %v, want InvalidArgument", err)
	}
	if _, err := h.Store().Put(ctx, "counters/big", []byte("9223372036854775807"), sdk.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Increment(ctx, &counterv1.IncrementRequest{Name: "big"}); status.Code(err) != codes.OutOfRange {
		t.Fatalf("overflow: %v, want OutOfRange", err)
	}
	if _, err := h.Store().Put(ctx, "counters/bad", []byte("twelve"), sdk.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, &counterv1.GetRequest{Name: "bad"}); status.Code(err) != codes.DataLoss {
		t.Fatalf("corrupt value: %v, want DataLoss", err)
	}
}

// TestConflictSurfaces checks that a compare-and-set that lost the race is an
// ErrConflict an author can test for, on the Store the counter uses.
func TestConflictSurfaces(t *testing.T) {
	ctx := testCtx(t)
	h := sdktest.Start(t, info, newServer("1.0.0"))
	c := counterv1.NewCounterServiceClient(h.Conn())
	if _, err := c.Increment(ctx, &counterv1.IncrementRequest{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	st := h.Store()
	read, err := st.Get(ctx, "counters/x")
	if err != nil {
		t.Fatal(err)
	}
	// Another writer gets in between our read and our write.
	if _, err := c.Increment(ctx, &counterv1.IncrementRequest{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	_, err = st.Put(ctx, "counters/x", []byte("100"), sdk.PutOptions{IfModRevision: &read.ModRevision})
	if !errors.Is(err, sdk.ErrConflict) {
		t.Fatalf("stale compare-and-set: %v, want ErrConflict", err)
	}
	if got, err := c.Get(ctx, &counterv1.GetRequest{Name: "x"}); err != nil || got.GetValue() != 2 {
		t.Fatalf("x = %v, %v; want 2, the lost write not applied", got, err)
	}
}

// TestStoreErrorsReachTheCaller checks that a store limit reaches the
// counter's caller as RESOURCE_EXHAUSTED with the store's message.
func TestStoreErrorsReachTheCaller(t *testing.T) {
	ctx := testCtx(t)
	limited := status.Error(codes.ResourceExhausted, `namespace "counter" request rate limit exceeded`)
	s := newServer("1.0.0")
	err := s.Configure(ctx, &sdk.Env{Store: &sdktest.MockStore{
		GetF: func(context.Context, string) (sdk.KV, error) { return sdk.KV{}, sdk.ErrNotFound },
		TxnF: func(context.Context, sdk.Txn) (sdk.TxnResult, error) {
			return sdk.TxnResult{}, fmt.Errorf("store txn: %w: %w", sdk.ErrLimit, limited)
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Increment(ctx, &counterv1.IncrementRequest{Name: "x"})
	if !errors.Is(err, sdk.ErrLimit) || status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("increment under a store limit: %v (code %v), want ErrLimit / ResourceExhausted", err, status.Code(err))
	}
}
