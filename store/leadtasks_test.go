package store

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
)

// running counts, per node, the OnLead tasks under way.
type running struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *running) task(id string) func(context.Context) {
	return func(ctx context.Context) {
		r.mu.Lock()
		r.n[id]++
		r.mu.Unlock()
		<-ctx.Done()
		r.mu.Lock()
		r.n[id]--
		r.mu.Unlock()
	}
}

func (r *running) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.n {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func TestOnLeadRunsOnTheLeaderOnlyAndMovesWithIt(t *testing.T) {
	nodes := newCluster(t, 3, newFakeClock())
	r := &running{n: map[string]int{}}
	// Registered while node0 leads: it starts at once there.
	for _, s := range nodes {
		s.OnLead(r.task(s.cfg.NodeID))
	}
	old := leaderOf(t, nodes)
	testenv.Eventually(t, 10*time.Second, "the task runs on the leader only", func() bool {
		got := r.snapshot()
		return len(got) == 1 && got[old.cfg.NodeID] == 1
	})

	old.Close() // ends its term: Close waits for the task to return
	if got := r.snapshot(); got[old.cfg.NodeID] != 0 {
		t.Fatalf("the closed leader's task still runs: %v", got)
	}
	var rest []*Store
	for _, s := range nodes {
		if s != old {
			rest = append(rest, s)
		}
	}
	leader := leaderOf(t, rest)
	testenv.Eventually(t, 20*time.Second, "the task runs on the new leader only", func() bool {
		got := r.snapshot()
		return len(got) == 1 && got[leader.cfg.NodeID] == 1
	})
}

func TestOnLeadTasksStartAfterTheTermIsEstablished(t *testing.T) {
	s := newMemStore(t)
	ready := make(chan bool, 1)
	s.OnLead(func(ctx context.Context) { ready <- s.leaderReady() })
	select {
	case ok := <-ready:
		if !ok {
			t.Error("the task ran before the leader could serve linearizable reads")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a task registered on a ready leader did not start")
	}
}
