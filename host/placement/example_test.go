package placement_test

import (
	"fmt"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/placement"
)

// A count plugin constrained to edge nodes, of which there are two in a
// five-node cluster over three fault domains, and a singleton with a warm
// standby.
func ExampleSchedule() {
	node := func(name, fd, role string) placement.Node {
		return placement.Node{Name: name, FaultDomain: fd, Tags: map[string]string{"role": role}, Alive: true, Eligible: true}
	}
	nodes := []placement.Node{node("n1", "fd1", "edge"), node("n2", "fd1", "core"), node("n3", "fd2", "edge"), node("n4", "fd2", "core"), node("n5", "fd3", "core")}
	specs := []placement.Spec{
		{Plugin: "cache", Version: "1.0.0", Placement: bundle.Placement{Mode: bundle.PlacementCount, Count: 3, Constraint: `role == "edge"`}},
		{Plugin: "counter", Version: "2.1.0", Placement: bundle.Placement{Mode: bundle.PlacementSingleton, Standby: 1}},
	}
	res := placement.Schedule(nodes, specs, nil)
	for _, in := range res.Assign {
		if in.Role == "" {
			fmt.Println(in.Plugin, in.Version, in.Node)
			continue
		}
		fmt.Println(in.Plugin, in.Version, in.Node, in.Role)
	}
	for _, d := range res.Diagnostics {
		fmt.Println(d.Plugin, d.Severity+":", d.Message)
	}
	// Output:
	// cache 1.0.0 n1
	// cache 1.0.0 n3
	// counter 2.1.0 n2 active
	// counter 2.1.0 n4 standby
	// cache warning: count 3 wanted, 2 placed: only 2 fault domains match role == "edge"
}
