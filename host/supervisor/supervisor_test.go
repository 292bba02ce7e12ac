package supervisor

import (
	"context"
	"testing"
	"time"

	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/router"
	"github.com/plughost/plughost/store"
)

// TestRunWaitsForTheStore: a supervisor that starts while its store cannot
// answer (no leader yet) waits for it instead of returning an error, which
// used to end the whole agent a few seconds after its start.
func TestRunWaitsForTheStore(t *testing.T) {
	cfg := store.DefaultConfig()
	cfg.InMemory = true
	cfg.NodeID = "n1"
	st, err := store.Open(cfg) // not bootstrapped: no leader until BootstrapCluster
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := New(Config{Catalog: catalog.New(st), Store: st, Router: router.New(router.Config{})})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	select {
	case err := <-done:
		t.Fatalf("Run returned while the store had no leader: %v", err)
	case <-time.After(2 * time.Second):
	}

	if err := st.BootstrapCluster([]store.RaftServer{{ID: "n1", Address: st.RaftAddr(), Suffrage: store.Voter}}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := st.WaitForLeader(wctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned once the store had a leader: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// TestSingletonsSwapByRestarting: a singleton's instance, active or
// standby, swaps by the restart strategy whatever its manifest says (two
// versions overlapping would both hold the active's role and epoch); other
// plugins swap as their manifest says.
func TestSingletonsSwapByRestarting(t *testing.T) {
	for _, tc := range []struct{ role, manifest, want string }{
		{intent.RoleActive, StrategyOverlap, StrategyRestart},
		{intent.RoleStandby, StrategyOverlap, StrategyRestart},
		{intent.RoleActive, StrategyRestart, StrategyRestart},
		{"", StrategyOverlap, StrategyOverlap},
		{"", StrategyRestart, StrategyRestart},
	} {
		if got := swapStrategy(tc.role, tc.manifest); got != tc.want {
			t.Errorf("swapStrategy(%q, %q) = %q, want %q", tc.role, tc.manifest, got, tc.want)
		}
	}
}
