package placement

import (
	"fmt"
	"testing"

	"github.com/plughost/plughost/host/bundle"
)

// benchCluster is 16 nodes over 4 fault domains and 4 upgrade domains, and
// 100 plugins: a third every-node, a third count 1..6, a third singletons
// (half with a standby), a quarter of them constrained to edge nodes.
func benchCluster() ([]Node, []Spec) {
	ns := make([]Node, 16)
	for i := range ns {
		role := "core"
		if i%2 == 0 {
			role = "edge"
		}
		ns[i] = Node{Name: fmt.Sprintf("n%02d", i), FaultDomain: fmt.Sprintf("fd%d", i%4), UpgradeDomain: fmt.Sprintf("ud%d", i/4),
			Tags: map[string]string{"role": role, "disk": "ssd"}, Alive: true, Eligible: true}
	}
	specs := make([]Spec, 100)
	for i := range specs {
		p := bundle.Placement{}
		if i%4 == 0 {
			p.Constraint = `role == "edge" and disk == "ssd"`
		}
		switch i % 3 {
		case 0:
			p.Mode = bundle.PlacementEveryNode
		case 1:
			p.Mode, p.Count = bundle.PlacementCount, 1+i%6
		case 2:
			p.Mode, p.Standby = bundle.PlacementSingleton, i%2
		}
		specs[i] = Spec{Plugin: fmt.Sprintf("plugin-%03d", i), Version: "1.0.0", Placement: p}
	}
	return ns, specs
}

// BenchmarkSchedule is one decision for 16 nodes x 100 plugins: from
// nothing, in the settled state, and after a node dies and another is
// drained (the figure: at most 50 ms).
func BenchmarkSchedule(b *testing.B) {
	ns, specs := benchCluster()
	settled := Schedule(ns, specs, nil).Assign
	for i := range settled {
		settled[i].Healthy = true
	}
	changed := append([]Node(nil), ns...)
	changed[3].Alive = false
	changed[6].Eligible = false
	for _, bc := range []struct {
		name  string
		nodes []Node
		cur   []Instance
	}{
		{"empty", ns, nil},
		{"settled", ns, settled},
		{"node-lost-and-drain", changed, settled},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Schedule(bc.nodes, specs, bc.cur)
			}
		})
	}
}
