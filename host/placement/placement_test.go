package placement

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/plughost/plughost/host/bundle"
)

// n makes an alive, eligible node: n("n1 fd1 ud1 role=edge").
func n(desc string) Node {
	f := strings.Fields(desc)
	nd := Node{Name: f[0], Alive: true, Eligible: true, Tags: map[string]string{}}
	for i, w := range f[1:] {
		switch {
		case w == "dead":
			nd.Alive = false
		case w == "drained":
			nd.Eligible = false
		case strings.Contains(w, "="):
			k, v, _ := strings.Cut(w, "=")
			nd.Tags[k] = v
		case i == 0:
			nd.FaultDomain = w
		default:
			nd.UpgradeDomain = w
		}
	}
	return nd
}

func nodes(descs ...string) []Node {
	out := make([]Node, len(descs))
	for i, d := range descs {
		out[i] = n(d)
	}
	return out
}

// inst parses "plugin@node[,active|,standby][,healthy][,draining]".
func inst(desc string) Instance {
	parts := strings.Split(desc, ",")
	p, node, _ := strings.Cut(parts[0], "@")
	in := Instance{Plugin: p, Node: node, Version: "1.0.0"}
	for _, w := range parts[1:] {
		switch w {
		case RoleActive, RoleStandby:
			in.Role = w
		case "healthy":
			in.Healthy = true
		case "draining":
			in.Draining = true
		default:
			panic("inst: " + w)
		}
	}
	return in
}

func insts(descs ...string) []Instance {
	out := make([]Instance, len(descs))
	for i, d := range descs {
		out[i] = inst(d)
	}
	return out
}

// show writes an instance the way inst reads it.
func show(in Instance) string {
	s := in.Plugin + "@" + in.Node
	if in.Role != "" {
		s += "," + in.Role
	}
	if in.Healthy {
		s += ",healthy"
	}
	if in.Draining {
		s += ",draining"
	}
	return s
}

func every(plugin, constraint string) Spec {
	return Spec{Plugin: plugin, Version: "1.0.0", Placement: bundle.Placement{Mode: bundle.PlacementEveryNode, Constraint: constraint}}
}

func count(plugin string, n int, constraint string) Spec {
	return Spec{Plugin: plugin, Version: "1.0.0", Placement: bundle.Placement{Mode: bundle.PlacementCount, Count: n, Constraint: constraint}}
}

func single(plugin string, standby int, constraint string) Spec {
	return Spec{Plugin: plugin, Version: "1.0.0", Placement: bundle.Placement{Mode: bundle.PlacementSingleton, Standby: standby, Constraint: constraint}}
}

// fiveNodes: three fault domains, two edge nodes in different ones.
var fiveNodes = []string{"n1 fd1 ud1 role=edge", "n2 fd1 ud2", "n3 fd2 ud1 role=edge", "n4 fd2 ud2", "n5 fd3 ud3"}

type scheduleCase struct {
	name    string
	nodes   []string
	specs   []Spec
	current []string
	want    []string // Result.Assign as show writes it
	diags   []string // "plugin severity wanted/placed: message"
}

func TestSchedule(t *testing.T) {
	edge := `role == "edge"`
	tests := []scheduleCase{
		// every-node
		{name: "every-node on every node", nodes: fiveNodes, specs: []Spec{every("e", "")},
			want: []string{"e@n1", "e@n2", "e@n3", "e@n4", "e@n5"}},
		{name: "every-node constraint", nodes: fiveNodes, specs: []Spec{every("e", edge)},
			want: []string{"e@n1", "e@n3"}},
		{name: "every-node keeps health of kept instances", nodes: fiveNodes[:2], specs: []Spec{every("e", "")},
			current: []string{"e@n1,healthy"}, want: []string{"e@n1,healthy", "e@n2"}},
		{name: "every-node dead node keeps its instance, gets nothing new",
			nodes: []string{"n1 fd1", "n2 fd2 dead", "n3 fd3 dead"}, specs: []Spec{every("e", "")},
			current: []string{"e@n1,healthy", "e@n2,healthy"}, want: []string{"e@n1,healthy", "e@n2"}},
		{name: "every-node no node matches", nodes: fiveNodes, specs: []Spec{every("e", `role == "gpu"`)},
			diags: []string{`e error 0/0: every-node wanted, 0 placed: no alive eligible node matches role == "gpu"`}},
		{name: "every-node drained node goes once another serves", nodes: []string{"n1 fd1 drained", "n2 fd2"}, specs: []Spec{every("e", "")},
			current: []string{"e@n1,healthy", "e@n2,healthy"}, want: []string{"e@n2,healthy"}},
		{name: "every-node drained node stays until another serves", nodes: []string{"n1 fd1 drained", "n2 fd2"}, specs: []Spec{every("e", "")},
			current: []string{"e@n1,healthy"}, want: []string{"e@n1,healthy,draining", "e@n2"}},
		{name: "every-node constraint no longer matches is a drain", nodes: []string{"n1 fd1", "n2 fd2 role=edge"}, specs: []Spec{every("e", edge)},
			current: []string{"e@n1,healthy", "e@n2"}, want: []string{"e@n1,healthy,draining", "e@n2"}},
		{name: "every-node all drained", nodes: []string{"n1 fd1 drained"}, specs: []Spec{every("e", "")},
			current: []string{"e@n1,healthy"}, want: []string{"e@n1,healthy,draining"},
			diags: []string{"e error 0/0: every-node wanted, 0 placed: no node is alive and eligible; draining node n1 keeps its instance until a replacement serves"}},

		// count: constraints, spread, too few domains
		{name: "count 3 over three fault domains, then upgrade domains", nodes: fiveNodes, specs: []Spec{count("c", 3, "")},
			want: []string{"c@n1", "c@n4", "c@n5"}},
		{name: "count 5 over three fault domains", nodes: fiveNodes, specs: []Spec{count("c", 5, "")},
			want: []string{"c@n1", "c@n2", "c@n3", "c@n4", "c@n5"}},
		{name: "count 3 constraint matches two nodes", nodes: fiveNodes, specs: []Spec{count("c", 3, edge)},
			want:  []string{"c@n1", "c@n3"},
			diags: []string{`c warning 3/2: count 3 wanted, 2 placed: only 2 fault domains match role == "edge"`}},
		{name: "count constraint matches two nodes of one domain", nodes: []string{"n1 fd1 role=edge", "n2 fd1 role=edge", "n3 fd2"},
			specs: []Spec{count("c", 3, edge)}, want: []string{"c@n1", "c@n2"},
			diags: []string{`c warning 3/2: count 3 wanted, 2 placed: only 2 alive eligible nodes match role == "edge"`}},
		{name: "count limited by nodes, no constraint", nodes: []string{"n1 fd1", "n2 fd1"}, specs: []Spec{count("c", 3, "")},
			want:  []string{"c@n1", "c@n2"},
			diags: []string{"c warning 3/2: count 3 wanted, 2 placed: only 2 nodes are alive and eligible"}},
		{name: "count limited by fault domains, no constraint", nodes: []string{"n1 fd1", "n2 fd2 dead"}, specs: []Spec{count("c", 2, "")},
			want:  []string{"c@n1"},
			diags: []string{"c warning 2/1: count 2 wanted, 1 placed: only 1 fault domain has an alive eligible node"}},
		{name: "count limited by the spread rule", nodes: []string{"n1 fd1", "n2 fd1", "n3 fd1", "n4 fd2"}, specs: []Spec{count("c", 4, "")},
			want:  []string{"c@n1", "c@n2", "c@n4"},
			diags: []string{"c warning 4/3: count 4 wanted, 3 placed: fault domain fd2 has only 1 alive eligible node, and fault domains may differ by at most one instance"}},
		{name: "count limited by the spread rule with a constraint", nodes: []string{"n1 fd1 a=b", "n2 fd1 a=b", "n3 fd1 a=b", "n4 fd2 a=b", "n5 fd2"},
			specs: []Spec{count("c", 4, `a == "b"`)}, want: []string{"c@n1", "c@n2", "c@n4"},
			diags: []string{`c warning 4/3: count 4 wanted, 3 placed: fault domain fd2 has only 1 alive eligible node matching a == "b", and fault domains may differ by at most one instance`}},
		{name: "count nothing matches", nodes: fiveNodes, specs: []Spec{count("c", 3, `role == "gpu"`)},
			diags: []string{`c error 3/0: count 3 wanted, 0 placed: no alive eligible node matches role == "gpu"`}},
		{name: "count without fault domains", nodes: []string{"n1", "n2", "n3"}, specs: []Spec{count("c", 2, "")},
			want: []string{"c@n1", "c@n2"}},
		{name: "count spreads over upgrade domains within a fault domain", nodes: []string{"n1 fd1 ud1", "n2 fd1 ud1", "n3 fd1 ud2"},
			specs: []Spec{count("c", 2, "")}, want: []string{"c@n1", "c@n3"}},
		{name: "count missing tag is no match", nodes: []string{"n1 fd1 role=edge", "n2 fd2"}, specs: []Spec{count("c", 2, `role != "edge"`)},
			want:  []string{"c@n2"},
			diags: []string{`c warning 2/1: count 2 wanted, 1 placed: only 1 fault domain matches role != "edge"`}},

		// minimal movement
		{name: "healthy instances are not moved to rebalance", nodes: fiveNodes, specs: []Spec{count("c", 3, "")},
			current: []string{"c@n1,healthy", "c@n2,healthy", "c@n3,healthy"},
			want:    []string{"c@n1,healthy", "c@n2,healthy", "c@n3,healthy"},
			diags:   []string{"c warning 3/3: count 3 wanted, 3 placed: fault domains uneven (fd1 2, fd2 1, fd3 0): healthy instances are not moved to even them out; drain a node of fd1 to move one"}},
		{name: "an unhealthy instance is moved to even the spread", nodes: fiveNodes, specs: []Spec{count("c", 3, "")},
			current: []string{"c@n1,healthy", "c@n2", "c@n3,healthy"},
			want:    []string{"c@n1,healthy", "c@n3,healthy", "c@n5"}},
		{name: "an unhealthy instance with even spread stays", nodes: fiveNodes, specs: []Spec{count("c", 3, "")},
			current: []string{"c@n2", "c@n4,healthy", "c@n5,healthy"},
			want:    []string{"c@n2", "c@n4,healthy", "c@n5,healthy"}},
		{name: "a missing instance is added in the emptiest domain", nodes: fiveNodes, specs: []Spec{count("c", 3, "")},
			current: []string{"c@n2,healthy", "c@n4,healthy"},
			want:    []string{"c@n2,healthy", "c@n4,healthy", "c@n5"}},
		{name: "count down removes from the fullest domain", nodes: fiveNodes, specs: []Spec{count("c", 2, "")},
			current: []string{"c@n1,healthy", "c@n2,healthy", "c@n3,healthy"},
			want:    []string{"c@n2,healthy", "c@n3,healthy"}}, // n1 and n3 share ud1
		{name: "count down removes an unhealthy one first", nodes: fiveNodes, specs: []Spec{count("c", 2, "")},
			current: []string{"c@n1,healthy", "c@n3", "c@n5,healthy"},
			want:    []string{"c@n1,healthy", "c@n5,healthy"}},
		{name: "the version follows the spec without a move", nodes: fiveNodes[:1],
			specs:   []Spec{{Plugin: "c", Version: "2.0.0", Placement: bundle.Placement{Mode: bundle.PlacementCount, Count: 1}}},
			current: []string{"c@n1,healthy"}, want: []string{"c@n1,healthy"}},

		// dead nodes
		{name: "count instance on a dead node stays and is replaced", nodes: []string{"n1 fd1", "n2 fd1", "n3 fd2", "n5 fd3 dead"},
			specs: []Spec{count("c", 3, "")}, current: []string{"c@n1,healthy", "c@n3,healthy", "c@n5,healthy"},
			want: []string{"c@n1,healthy", "c@n2", "c@n3,healthy", "c@n5"}},
		{name: "a dead node comes back: the spread wins, the extra waits for it", nodes: fiveNodes,
			specs: []Spec{count("c", 3, "")}, current: []string{"c@n1,healthy", "c@n2,healthy", "c@n3,healthy", "c@n5"},
			want: []string{"c@n1,healthy,draining", "c@n2,healthy", "c@n3,healthy", "c@n5"}},
		{name: "a dead node came back and serves: the extra goes", nodes: fiveNodes,
			specs: []Spec{count("c", 3, "")}, current: []string{"c@n1,healthy", "c@n2,healthy", "c@n3,healthy", "c@n5,healthy"},
			want: []string{"c@n2,healthy", "c@n3,healthy", "c@n5,healthy"}},
		{name: "a node that left takes its instances", nodes: fiveNodes[:4],
			specs: []Spec{count("c", 2, "")}, current: []string{"c@n1,healthy", "c@n9,healthy"},
			want: []string{"c@n1,healthy", "c@n4"}},

		// drain
		{name: "drain: the old instance stays until the new one is healthy", nodes: []string{"n1 fd1", "n2 fd1", "n3 fd2", "n5 fd3 drained"},
			specs: []Spec{count("c", 3, "")}, current: []string{"c@n1,healthy", "c@n3,healthy", "c@n5,healthy"},
			want: []string{"c@n1,healthy", "c@n2", "c@n3,healthy", "c@n5,healthy,draining"}},
		{name: "drain: the old instance goes once the new one is healthy", nodes: []string{"n1 fd1", "n2 fd1", "n3 fd2", "n5 fd3 drained"},
			specs: []Spec{count("c", 3, "")}, current: []string{"c@n1,healthy", "c@n2,healthy", "c@n3,healthy", "c@n5,healthy,draining"},
			want: []string{"c@n1,healthy", "c@n2,healthy", "c@n3,healthy"}},
		{name: "drain with nowhere to go keeps the instance", nodes: []string{"n1 fd1 drained", "n2 fd2 role=x"},
			specs: []Spec{count("c", 1, `role != "x"`)}, current: []string{"c@n1,healthy"},
			want:  []string{"c@n1,healthy,draining"},
			diags: []string{`c error 1/0: count 1 wanted, 0 placed: no alive eligible node matches role != "x"; draining node n1 keeps its instance until a replacement serves`}},

		// singleton
		{name: "singleton", nodes: fiveNodes, specs: []Spec{single("s", 0, "")},
			want: []string{"s@n1,active"}},
		{name: "singleton with standby in another fault domain", nodes: fiveNodes, specs: []Spec{single("s", 1, "")},
			want: []string{"s@n1,active", "s@n3,standby"}},
		{name: "singleton with standby, one fault domain", nodes: []string{"n1 fd1", "n2 fd1"}, specs: []Spec{single("s", 1, "")},
			want: []string{"s@n1,active", "s@n2,standby"}},
		{name: "singleton with constraint", nodes: fiveNodes, specs: []Spec{single("s", 1, edge)},
			want: []string{"s@n1,active", "s@n3,standby"}},
		{name: "singleton stays on an unhealthy active", nodes: fiveNodes, specs: []Spec{single("s", 1, "")},
			current: []string{"s@n4,active", "s@n2,standby,healthy"}, want: []string{"s@n2,standby,healthy", "s@n4,active"}},
		{name: "singleton active lost: the healthy standby is promoted", nodes: []string{"n1 fd1 dead", "n2 fd1", "n3 fd2", "n4 fd2"},
			specs: []Spec{single("s", 1, "")}, current: []string{"s@n1,active,healthy", "s@n3,standby,healthy"},
			want: []string{"s@n2,standby", "s@n3,active,healthy"}},
		{name: "singleton active lost without standby: a new node", nodes: []string{"n1 fd1 dead", "n2 fd1", "n3 fd2"},
			specs: []Spec{single("s", 0, "")}, current: []string{"s@n1,active,healthy"},
			want: []string{"s@n2,active"}},
		{name: "singleton active lost, standby not healthy: a new node, the standby stays", nodes: []string{"n1 fd1 dead", "n2 fd1", "n3 fd2"},
			specs: []Spec{single("s", 1, "")}, current: []string{"s@n1,active,healthy", "s@n3,standby"},
			want: []string{"s@n2,active", "s@n3,standby"}},
		{name: "singleton new active away from the standby's fault domain", nodes: []string{"n1 fd1 dead", "n2 fd2", "n3 fd2", "n4 fd3"},
			specs: []Spec{single("s", 1, "")}, current: []string{"s@n1,active,healthy", "s@n2,standby"},
			want: []string{"s@n2,standby", "s@n4,active"}},
		{name: "singleton standby on a dead node is replaced", nodes: []string{"n1 fd1", "n2 fd1", "n3 fd2 dead"},
			specs: []Spec{single("s", 1, "")}, current: []string{"s@n1,active,healthy", "s@n3,standby,healthy"},
			want: []string{"s@n1,active,healthy", "s@n2,standby"}},
		{name: "singleton standby dropped when not wanted", nodes: fiveNodes,
			specs: []Spec{single("s", 0, "")}, current: []string{"s@n1,active,healthy", "s@n3,standby,healthy"},
			want: []string{"s@n1,active,healthy"}},
		{name: "singleton drain: a standby replaces the active", nodes: []string{"n1 fd1 drained", "n2 fd1", "n3 fd2"},
			specs: []Spec{single("s", 0, "")}, current: []string{"s@n1,active,healthy"},
			want: []string{"s@n1,active,healthy,draining", "s@n3,standby"}},
		{name: "singleton drain: the healthy replacement is promoted", nodes: []string{"n1 fd1 drained", "n2 fd1", "n3 fd2"},
			specs: []Spec{single("s", 0, "")}, current: []string{"s@n1,active,healthy,draining", "s@n3,standby,healthy"},
			want: []string{"s@n3,active,healthy"}},
		{name: "singleton drain with standby 1: promote, then a new standby", nodes: []string{"n1 fd1 drained", "n2 fd1", "n3 fd2"},
			specs: []Spec{single("s", 1, "")}, current: []string{"s@n1,active,healthy", "s@n3,standby,healthy"},
			want: []string{"s@n2,standby", "s@n3,active,healthy"}},
		{name: "singleton standby drained: it stays until the new one is healthy", nodes: []string{"n1 fd1", "n2 fd1", "n3 fd2 drained"},
			specs: []Spec{single("s", 1, "")}, current: []string{"s@n1,active,healthy", "s@n3,standby,healthy"},
			want: []string{"s@n1,active,healthy", "s@n2,standby", "s@n3,standby,healthy,draining"}},
		{name: "singleton active lost, healthy standby on a draining node is promoted", nodes: []string{"n1 fd1 dead", "n2 fd1", "n3 fd2 drained"},
			specs: []Spec{single("s", 0, "")}, current: []string{"s@n1,active,healthy", "s@n3,standby,healthy"},
			want: []string{"s@n2,standby", "s@n3,active,healthy,draining"}},
		{name: "singleton never two actives", nodes: fiveNodes, specs: []Spec{single("s", 0, "")},
			current: []string{"s@n2,active,healthy", "s@n4,active,healthy", "s@n5"}, want: []string{"s@n2,active,healthy"}},
		{name: "singleton from every-node keeps a healthy instance", nodes: fiveNodes[:3], specs: []Spec{single("s", 0, "")},
			current: []string{"s@n1", "s@n2,healthy", "s@n3,healthy"}, want: []string{"s@n2,active,healthy"}},
		{name: "singleton nothing matches", nodes: fiveNodes, specs: []Spec{single("s", 0, `role == "edge" and disk == "ssd"`)},
			diags: []string{`s error 1/0: singleton wanted, 0 placed: no alive eligible node matches role == "edge" and disk == "ssd"`}},
		{name: "singleton with standby, one node matches", nodes: []string{"n1 fd1 role=edge", "n2 fd2"}, specs: []Spec{single("s", 1, edge)},
			want:  []string{"s@n1,active"},
			diags: []string{`s warning 2/1: singleton and standby wanted, 1 placed: only 1 alive eligible node matches role == "edge"`}},
		{name: "singleton all nodes dead", nodes: []string{"n1 fd1 dead"}, specs: []Spec{single("s", 0, "")},
			current: []string{"s@n1,active,healthy"},
			diags:   []string{"s error 1/0: singleton wanted, 0 placed: no node is alive and eligible"}},
		{name: "singleton drained with nowhere to go", nodes: []string{"n1 fd1 drained"}, specs: []Spec{single("s", 0, "")},
			current: []string{"s@n1,active,healthy"}, want: []string{"s@n1,active,healthy,draining"},
			diags: []string{"s error 1/0: singleton wanted, 0 placed: no node is alive and eligible; draining node n1 keeps its instance until a replacement serves"}},

		// several plugins, bad input
		{name: "singletons spread over the least loaded nodes", nodes: []string{"n1 fd1", "n2 fd2", "n3 fd3"},
			specs: []Spec{single("a", 0, ""), single("b", 0, ""), single("c", 0, ""), every("e", "")},
			want:  []string{"a@n1,active", "b@n2,active", "c@n3,active", "e@n1", "e@n2", "e@n3"}},
		{name: "a plugin without a spec is removed", nodes: fiveNodes[:1], specs: []Spec{every("e", "")},
			current: []string{"gone@n1,healthy", "e@n1,healthy"}, want: []string{"e@n1,healthy"}},
		{name: "a removed plugin's instances do not weigh on placement", nodes: []string{"n1 fd1", "n2 fd1"}, specs: []Spec{single("s", 0, "")},
			current: []string{"gone@n1,healthy", "gone@n2,healthy", "old@n2,healthy"}, want: []string{"s@n1,active"}},
		{name: "running instances weigh on placement", nodes: []string{"n1 fd1", "n2 fd1"}, specs: []Spec{single("s", 0, ""), count("c", 1, "")},
			current: []string{"c@n1,healthy"}, want: []string{"c@n1,healthy", "s@n2,active"}},
		{name: "an invalid spec leaves instances as they are", nodes: fiveNodes[:2],
			specs:   []Spec{{Plugin: "x", Version: "1.0.0", Placement: bundle.Placement{Mode: "count"}}},
			current: []string{"x@n2,healthy"}, want: []string{"x@n2,healthy"},
			diags: []string{`x error 0/0: placement of x is invalid, its instances are left as they are: placement.count 0 must be at least 1 with mode "count"`}},
		{name: "two specs for one plugin", nodes: fiveNodes[:1],
			specs: []Spec{every("e", ""), {Plugin: "e", Version: "2.0.0"}},
			want:  []string{"e@n1"},
			diags: []string{"e error 0/0: two specs for plugin e (versions 1.0.0 and 2.0.0): scheduled 1.0.0 only"}},
		{name: "empty placement takes the defaults", nodes: fiveNodes[:2], specs: []Spec{{Plugin: "e", Version: "1.0.0"}},
			want: []string{"e@n1", "e@n2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t) })
	}
}

func (tt scheduleCase) run(t *testing.T) {
	t.Helper()
	ns, cur := nodes(tt.nodes...), insts(tt.current...)
	before := fmt.Sprintf("%#v %#v %#v", ns, tt.specs, cur)
	res := Schedule(ns, tt.specs, cur)
	if after := fmt.Sprintf("%#v %#v %#v", ns, tt.specs, cur); after != before {
		t.Errorf("Schedule modified its arguments:\n%s\n%s", before, after)
	}
	var got []string
	for _, in := range res.Assign {
		got = append(got, show(in))
	}
	if !slices.Equal(got, tt.want) {
		t.Errorf("assign\n got %q\nwant %q", got, tt.want)
	}
	var diags []string
	for _, d := range res.Diagnostics {
		diags = append(diags, fmt.Sprintf("%s %s %d/%d: %s", d.Plugin, d.Severity, d.Wanted, d.Placed, d.Message))
	}
	if !slices.Equal(diags, tt.diags) {
		t.Errorf("diagnostics\n got %q\nwant %q", diags, tt.diags)
	}
	checkInvariants(t, ns, tt.specs, cur, res)
	checkShuffled(t, ns, tt.specs, cur, res)
}

// checkInvariants checks what holds for every result.
func checkInvariants(t *testing.T, ns []Node, specs []Spec, cur []Instance, res Result) {
	t.Helper()
	byName := map[string]Node{}
	for _, nd := range ns {
		byName[nd.Name] = nd
	}
	version := map[string]string{}
	for _, sp := range specs {
		if _, ok := version[sp.Plugin]; !ok {
			version[sp.Plugin] = sp.Version
		}
	}
	had := map[[2]string]bool{}
	for _, in := range cur {
		had[[2]string{in.Plugin, in.Node}] = true
	}
	seen := map[[2]string]bool{}
	actives := map[string]int{}
	for _, in := range res.Assign {
		k := [2]string{in.Plugin, in.Node}
		if seen[k] {
			t.Errorf("two instances of %s on %s", in.Plugin, in.Node)
		}
		seen[k] = true
		nd, ok := byName[in.Node]
		if !ok {
			t.Errorf("%s assigned to unknown node %s", in.Plugin, in.Node)
		}
		if !had[k] && (!nd.Alive || !nd.Eligible || in.Healthy || in.Draining) {
			t.Errorf("new instance %s: on a dead or drained node, or healthy or draining", show(in))
		}
		if v, ok := version[in.Plugin]; ok && in.Version != v && !strings.Contains(fmt.Sprint(res.Diagnostics), "invalid") {
			t.Errorf("%s has version %s, want %s", show(in), in.Version, v)
		}
		if in.Role == RoleActive {
			actives[in.Plugin]++
		}
	}
	for p, c := range actives {
		if c > 1 {
			t.Errorf("%s has %d actives", p, c)
		}
	}
}

// checkShuffled checks that the inputs' order does not change the result.
func checkShuffled(t *testing.T, ns []Node, specs []Spec, cur []Instance, want Result) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		ns, specs, cur := slices.Clone(ns), slices.Clone(specs), slices.Clone(cur)
		r.Shuffle(len(ns), func(i, j int) { ns[i], ns[j] = ns[j], ns[i] })
		r.Shuffle(len(specs), func(i, j int) { specs[i], specs[j] = specs[j], specs[i] })
		r.Shuffle(len(cur), func(i, j int) { cur[i], cur[j] = cur[j], cur[i] })
		if got := Schedule(ns, specs, cur); !reflect.DeepEqual(got, want) {
			t.Fatalf("shuffled inputs give another result:\n got %+v\nwant %+v", got, want)
		}
	}
}
