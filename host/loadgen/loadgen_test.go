package loadgen

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunTotal(t *testing.T) {
	var calls atomic.Int64
	res, err := Run(context.Background(), Config{Clients: 4, Total: 1000}, func(context.Context, int) error {
		if calls.Add(1)%10 == 0 {
			return errors.New("every tenth call fails")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1000 || res.Ops != 900 || res.Errors != 100 || res.FirstError != "every tenth call fails" {
		t.Errorf("1000 calls: %d made, result %+v; want 900 ops and 100 errors", calls.Load(), res)
	}
	if res.P50 > res.P99 || res.P99 > res.Max || res.OpsPerSec <= 0 {
		t.Errorf("summary out of order: %+v", res)
	}
}

// Interleave runs its ops in alternating turns and summarizes each over all
// of its own turns.
func TestInterleave(t *testing.T) {
	var (
		mu    sync.Mutex
		order []string
		calls [2]atomic.Int64
	)
	op := func(name string, i int) Op {
		return func(context.Context, int) error {
			calls[i].Add(1)
			mu.Lock()
			if len(order) == 0 || order[len(order)-1] != name {
				order = append(order, name)
			}
			mu.Unlock()
			if calls[i].Load()%100 == 0 {
				return errors.New(name + " fails now and then")
			}
			return nil
		}
	}
	res, err := Interleave(context.Background(), Config{Clients: 1, Duration: 60 * time.Millisecond}, 3, op("a", 0), op("b", 1))
	if err != nil {
		t.Fatal(err)
	}
	// Turns a b, b a, a b: the runs of the same op in a row merge.
	if want := []string{"a", "b", "a", "b"}; !slices.Equal(order, want) {
		t.Errorf("turn order %v, want %v", order, want)
	}
	for i, r := range res {
		if int64(r.Ops+r.Errors) != calls[i].Load() || r.Errors == 0 || r.FirstError == "" {
			t.Errorf("op %d: %d calls made, result %+v", i, calls[i].Load(), r)
		}
		if r.Elapsed <= 0 || r.Clients != 1 {
			t.Errorf("op %d: result %+v", i, r)
		}
	}
	if _, err := Interleave(context.Background(), Config{Clients: 1, Total: 10}, 3, op("a", 0)); err == nil {
		t.Error("Interleave without a duration: no error")
	}
}
