package rollout_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/placement"
	"github.com/plughost/plughost/host/rollout"
	"github.com/plughost/plughost/store"
)

// BenchmarkPassSettled is a rollout pass over 16 nodes and 50 every-node
// plugins, each settled by a completed rollout, that finds nothing to do:
// the cost of each wake-up of the controller on the leader (a placement
// write or an observation anywhere makes one), reads included.
func BenchmarkPassSettled(b *testing.B) {
	st, err := store.OpenMemory()
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	db, cat := intent.New(st), catalog.New(st)
	m := &members{changes: make(chan struct{}, 1)}
	for i := range 16 {
		m.nodes = append(m.nodes, placement.Node{Name: fmt.Sprint("n", i), UpgradeDomain: fmt.Sprint("ud", i%4), Alive: true})
	}
	for i := range 50 {
		name := fmt.Sprint("p", i)
		man := &bundle.Manifest{Name: name, Version: "1.1.0", APIVersions: []int{1}, Executable: "x",
			SHA256: strings.Repeat("a", 64), Services: []string{"x.v1.XService"}}
		man.SetDefaults()
		if _, err := cat.Register(ctx, man, "bench"); err != nil {
			b.Fatal(err)
		}
		r := &intent.Rollout{ID: intent.RolloutID(name, 1), Plugin: name, Seq: 1, From: "1.0.0", To: "1.1.0", Trigger: intent.TriggerBundle,
			State: intent.RolloutCompleted, Created: time.Now(), Snapshot: &intent.RolloutSnapshot{Skipped: "none"},
			Policy: intent.RolloutPolicy{Mode: intent.PolicyAuto, Strategy: bundle.StrategyOverlap, MaxParallel: 1,
				MinHealthyTime: bundle.Dur(time.Second), HealthyDeadline: bundle.Dur(time.Minute), ProgressDeadline: bundle.Dur(time.Hour),
				FailureAction: intent.FailureRollback}}
		if _, err := db.Put(ctx, r); err != nil {
			b.Fatal(err)
		}
		for _, n := range m.nodes {
			if _, err := db.Put(ctx, &intent.Assignment{Node: n.Name, Plugin: name, Version: "1.1.0"}); err != nil {
				b.Fatal(err)
			}
			if _, err := db.Put(ctx, &intent.Observation{Node: n.Name, Plugin: name, Version: "1.1.0", State: "running", Healthy: true}); err != nil {
				b.Fatal(err)
			}
		}
	}
	c := rollout.New(rollout.Config{Store: st, Catalog: cat, Members: m, Node: "n0"})
	if _, err := c.Pass(ctx); err != nil {
		b.Fatal(err)
	}
	rev := st.Revision()
	b.ResetTimer()
	for b.Loop() {
		active, err := c.Pass(ctx)
		if err != nil || active {
			b.Fatalf("pass: active %v, %v", active, err)
		}
	}
	b.StopTimer()
	if st.Revision() != rev {
		b.Fatalf("settled passes wrote: revision %d -> %d", rev, st.Revision())
	}
}
