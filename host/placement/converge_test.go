package placement

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/plughost/plughost/host/bundle"
)

// randomCluster returns up to 16 nodes over up to 4 fault domains and a
// mix of specs.
func randomCluster(r *rand.Rand, plugins int) ([]Node, []Spec) {
	ns := make([]Node, 3+r.IntN(14))
	fds := 1 + r.IntN(4)
	for i := range ns {
		ns[i] = Node{Name: fmt.Sprintf("n%02d", i), FaultDomain: fmt.Sprintf("fd%d", r.IntN(fds)), UpgradeDomain: fmt.Sprintf("ud%d", r.IntN(3)),
			Tags: map[string]string{"role": []string{"edge", "core"}[r.IntN(2)]}, Alive: r.IntN(8) > 0, Eligible: r.IntN(8) > 0}
	}
	constraints := []string{"", "", `role == "edge"`, `role != "edge"`}
	specs := make([]Spec, plugins)
	for i := range specs {
		p := bundle.Placement{Constraint: constraints[r.IntN(len(constraints))]}
		switch r.IntN(3) {
		case 0:
			p.Mode = bundle.PlacementEveryNode
		case 1:
			p.Mode, p.Count = bundle.PlacementCount, 1+r.IntN(6)
		case 2:
			p.Mode, p.Standby = bundle.PlacementSingleton, r.IntN(2)
		}
		specs[i] = Spec{Plugin: fmt.Sprintf("p%03d", i), Version: "1.0.0", Placement: p}
	}
	return ns, specs
}

// converge runs Schedule, reporting every instance healthy, until the
// assignment stops changing.
func converge(t *testing.T, ns []Node, specs []Spec, cur []Instance) []Instance {
	t.Helper()
	for range 6 {
		res := Schedule(ns, specs, cur)
		checkInvariants(t, ns, specs, cur, res)
		next := make([]Instance, len(res.Assign))
		for i, in := range res.Assign {
			in.Healthy = true
			next[i] = in
		}
		if reflect.DeepEqual(next, cur) {
			return cur
		}
		cur = next
	}
	t.Fatalf("no fixed point after 6 rounds: %v", cur)
	return nil
}

// checkSettled checks a converged assignment against the specs.
func checkSettled(t *testing.T, ns []Node, specs []Spec, cur []Instance, evenSpread bool) {
	t.Helper()
	for _, sp := range specs {
		c, _ := bundle.CompileConstraint(sp.Placement.Constraint)
		usable := map[string]Node{}
		fdNodes := map[string]int{}
		for _, n := range ns {
			if n.Alive && n.Eligible && c.Match(n.Tags) {
				usable[n.Name] = n
				fdNodes[n.FaultDomain]++
			}
		}
		on, actives, standbys := 0, 0, 0
		perFD := map[string]int{}
		for _, in := range cur {
			if in.Plugin != sp.Plugin {
				continue
			}
			if n, ok := usable[in.Node]; ok {
				on++
				perFD[n.FaultDomain]++
			}
			switch in.Role {
			case RoleActive:
				actives++
			case RoleStandby:
				standbys++
			}
			if in.Draining && len(usable) > 0 {
				t.Errorf("%s: draining at a fixed point with %d usable nodes", show(in), len(usable))
			}
		}
		switch p := sp.Placement; p.Mode {
		case bundle.PlacementEveryNode:
			if on != len(usable) {
				t.Errorf("%s every-node: %d of %d usable nodes", sp.Plugin, on, len(usable))
			}
		case bundle.PlacementCount:
			if on > p.Count || on == 0 && len(usable) > 0 {
				t.Errorf("%s count %d: %d placed", sp.Plugin, p.Count, on)
			}
			lo, hi := -1, 0
			for fd := range fdNodes {
				lo, hi = minLo(lo, perFD[fd]), max(hi, perFD[fd])
			}
			if res := Schedule(ns, specs, cur); hi-lo > 1 && (evenSpread || !hasDiag(res, sp.Plugin, "fault domains uneven")) {
				t.Errorf("%s count %d: fault domains %v differ by more than one", sp.Plugin, p.Count, perFD)
			}
			if on < p.Count && on < len(usable) && (hi-lo) == 0 && len(fdNodes) > 0 {
				// Only the spread rule may stop short of nodes: some
				// domain must be full.
				full := false
				for fd, k := range fdNodes {
					full = full || perFD[fd] == k
				}
				if !full {
					t.Errorf("%s count %d: %d placed on %d usable nodes without a full fault domain", sp.Plugin, p.Count, on, len(usable))
				}
			}
		case bundle.PlacementSingleton:
			if len(usable) > 0 && (actives != 1 || on < min(len(usable), 1+p.Standby)) {
				t.Errorf("%s singleton standby %d: %d actives, %d placed of %d usable", sp.Plugin, p.Standby, actives, on, len(usable))
			}
			if standbys > p.Standby {
				t.Errorf("%s singleton standby %d: %d standbys", sp.Plugin, p.Standby, standbys)
			}
		}
	}
}

func hasDiag(res Result, plugin, text string) bool {
	for _, d := range res.Diagnostics {
		if d.Plugin == plugin && strings.Contains(d.Message, text) {
			return true
		}
	}
	return false
}

func minLo(lo, v int) int {
	if lo < 0 || v < lo {
		return v
	}
	return v
}

// TestConvergeFromJunk: whatever the current assignment holds (unknown
// nodes and plugins, duplicates, stray roles, draining flags), Schedule
// settles in a few rounds into one that meets the specs.
func TestConvergeFromJunk(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 15))
	roles := []string{"", "", RoleActive, RoleStandby, "bogus"}
	for i := range 100 {
		ns, specs := randomCluster(r, 8)
		var cur []Instance
		for range r.IntN(60) {
			node := fmt.Sprintf("n%02d", r.IntN(len(ns)+2))      // some unknown
			plugin := fmt.Sprintf("p%03d", r.IntN(len(specs)+2)) // some without a spec
			cur = append(cur, Instance{Node: node, Plugin: plugin, Version: []string{"1.0.0", "0.9.0", ""}[r.IntN(3)],
				Role: roles[r.IntN(len(roles))], Healthy: r.IntN(2) == 0, Draining: r.IntN(4) == 0})
		}
		checkShuffled(t, ns, specs, cur, Schedule(ns, specs, cur))
		settled := converge(t, ns, specs, cur)
		checkSettled(t, ns, specs, settled, false)
		if t.Failed() {
			t.Fatalf("cluster %d: nodes %+v\ncurrent %+v", i, ns, cur)
		}
	}
}

// TestConverge: random clusters settle in a few rounds into an assignment
// that meets the specs; after a node is drained or dies they settle again
// without moving a healthy instance off a node that can still run it.
func TestConverge(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 15))
	for i := range 100 {
		ns, specs := randomCluster(r, 12)
		cur := converge(t, ns, specs, nil)
		checkSettled(t, ns, specs, cur, true)
		if i%10 == 0 {
			checkShuffled(t, ns, specs, cur, Schedule(ns, specs, cur))
		}

		victim := r.IntN(len(ns))
		if r.IntN(2) == 0 {
			ns[victim].Eligible = false
		} else {
			ns[victim].Alive = false
		}
		after := converge(t, ns, specs, cur)
		// Healthy instances are not moved to even out the spread: it
		// may be uneven, with a warning.
		checkSettled(t, ns, specs, after, false)
		kept := map[[2]string]bool{}
		for _, in := range after {
			kept[[2]string{in.Plugin, in.Node}] = true
		}
		for _, in := range cur {
			if in.Node != ns[victim].Name && !kept[[2]string{in.Plugin, in.Node}] {
				t.Errorf("cluster %d: %s moved after %s changed", i, show(in), ns[victim].Name)
			}
		}
		if t.Failed() {
			t.Fatalf("cluster %d: nodes %+v", i, ns)
		}
	}
}
