package controller_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/controller"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/store"
)

// BenchmarkPassNoChange is a pass over 16 nodes and 100 plugins (every
// mode) that finds nothing to change: the cost of each wake-up of the
// controller on the leader, reads included.
func BenchmarkPassNoChange(b *testing.B) {
	st, err := store.OpenMemory()
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	db := intent.New(st)
	var names []string
	for i := range 16 {
		names = append(names, fmt.Sprint("n", i))
	}
	m := newMembers(names...)
	for i := range 100 {
		in := &intent.Intent{Plugin: fmt.Sprint("p", i), Version: "1.0.0"}
		switch i % 3 {
		case 0:
			in.Placement = bundle.Placement{Mode: bundle.PlacementEveryNode}
		case 1:
			in.Placement = bundle.Placement{Mode: bundle.PlacementCount, Count: 3}
		case 2:
			in.Placement = bundle.Placement{Mode: bundle.PlacementSingleton, Standby: 1}
		}
		if _, err := db.Put(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
	p := controller.New(controller.Config{Store: st, Members: m})
	for range 3 { // place, stamp, settle
		if _, err := p.Pass(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		w, err := p.Pass(ctx)
		if err != nil || w.Total() != 0 {
			b.Fatalf("pass wrote %+v: %v", w, err)
		}
	}
}
