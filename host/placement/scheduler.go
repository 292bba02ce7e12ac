package placement

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/plughost/plughost/host/bundle"
)

// scheduler holds one Schedule call's state.
type scheduler struct {
	nodes map[string]*Node
	names []string                       // node names, sorted
	cur   map[string]map[string]Instance // plugin -> node -> current instance
	load  map[string]int                 // node -> instances assigned to it, all plugins
	out   []Instance
	diags []Diagnostic
	match map[string]matchResult // constraint -> which nodes (by index in names) it matches
}

type matchResult struct {
	nodes []bool
	err   error
}

func newScheduler(nodes []Node, current []Instance) *scheduler {
	s := &scheduler{
		nodes: make(map[string]*Node, len(nodes)),
		cur:   make(map[string]map[string]Instance),
		load:  make(map[string]int, len(nodes)),
		match: make(map[string]matchResult),
	}
	// Names are unique; should one repeat, the same entry wins whatever
	// the input order.
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, compareNodes)
	for i := range sorted {
		n := &sorted[i]
		if _, dup := s.nodes[n.Name]; dup || n.Name == "" {
			continue
		}
		s.nodes[n.Name] = n
		s.names = append(s.names, n.Name)
	}
	// One current instance per plugin and node: the active one, then a
	// healthy one.
	insts := slices.Clone(current)
	slices.SortFunc(insts, compareInstances)
	for _, in := range insts {
		byNode := s.cur[in.Plugin]
		if byNode == nil {
			byNode = make(map[string]Instance)
			s.cur[in.Plugin] = byNode
		}
		if _, dup := byNode[in.Node]; dup {
			continue
		}
		byNode[in.Node] = in
		if s.nodes[in.Node] != nil {
			s.load[in.Node]++
		}
	}
	return s
}

func compareNodes(a, b Node) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), compareBool(b.Alive, a.Alive), compareBool(a.Eligible, b.Eligible),
		cmp.Compare(a.FaultDomain, b.FaultDomain), cmp.Compare(a.UpgradeDomain, b.UpgradeDomain))
}

func compareInstances(a, b Instance) int {
	return cmp.Or(cmp.Compare(a.Plugin, b.Plugin), cmp.Compare(a.Node, b.Node), cmp.Compare(roleRank(a.Role), roleRank(b.Role)),
		compareBool(b.Healthy, a.Healthy), cmp.Compare(a.Version, b.Version), compareBool(a.Draining, b.Draining), cmp.Compare(a.Role, b.Role))
}

func roleRank(r string) int {
	switch r {
	case RoleActive:
		return 0
	case RoleStandby:
		return 1
	}
	return 2
}

// compareBool orders false before true.
func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// sortedSpecs returns specs with their placement defaults applied, sorted
// by plugin, one per plugin; a repeated plugin is reported and skipped.
func sortedSpecs(specs []Spec, s *scheduler) []Spec {
	out := slices.Clone(specs)
	for i := range out {
		out[i].Placement.SetDefaults()
	}
	slices.SortFunc(out, func(a, b Spec) int {
		return cmp.Or(cmp.Compare(a.Plugin, b.Plugin), cmp.Compare(a.Version, b.Version),
			cmp.Compare(a.Placement.Mode, b.Placement.Mode), cmp.Compare(a.Placement.Count, b.Placement.Count),
			cmp.Compare(a.Placement.Standby, b.Placement.Standby), cmp.Compare(a.Placement.Constraint, b.Placement.Constraint),
			cmp.Compare(a.Placement.Spread, b.Placement.Spread))
	})
	uniq := out[:0]
	for _, sp := range out {
		if n := len(uniq); n > 0 && uniq[n-1].Plugin == sp.Plugin {
			s.diags = append(s.diags, Diagnostic{Plugin: sp.Plugin, Severity: SeverityError,
				Message: fmt.Sprintf("two specs for plugin %s (versions %s and %s): scheduled %s only", sp.Plugin, uniq[n-1].Version, sp.Version, uniq[n-1].Version)})
			continue
		}
		uniq = append(uniq, sp)
	}
	return uniq
}

// dropUnspecified drops the instances of plugins without a spec before
// any is placed, so that they do not count in the nodes' load.
func (s *scheduler) dropUnspecified(specs []Spec) {
	has := make(map[string]bool, len(specs))
	for _, sp := range specs {
		has[sp.Plugin] = true
	}
	for plugin, byNode := range s.cur {
		if has[plugin] {
			continue
		}
		for _, in := range byNode {
			s.drop(in)
		}
		delete(s.cur, plugin)
	}
}

// class says where a current instance is.
type class int

const (
	usable   class = iota // alive, eligible, matching node
	draining              // alive node that should no longer run it
	lost                  // dead node
)

// view is one plugin's current instances classified against its spec.
type view struct {
	spec     Spec
	usable   []*Node         // alive, eligible, matching nodes, by name
	isUsable map[string]bool // by node name
	live     []Instance      // current instances on usable nodes, by node
	draining []Instance      // on alive nodes that should no longer run it
	lost     []Instance      // on dead nodes
}

func (s *scheduler) schedule(sp Spec) {
	if sp.Plugin == "" {
		s.diags = append(s.diags, Diagnostic{Severity: SeverityError, Message: "a spec without a plugin name: skipped"})
		return
	}
	// The shape is checked without the constraint, which is compiled (and
	// checked) once per expression.
	shape := sp.Placement
	shape.Constraint = ""
	err := shape.Validate()
	if err == nil {
		_, err = s.matches(sp.Placement.Constraint)
	}
	if err != nil {
		s.keepAsIs(sp.Plugin, fmt.Sprintf("placement of %s is invalid, its instances are left as they are: %v", sp.Plugin, err))
		return
	}
	if sp.Version == "" {
		s.keepAsIs(sp.Plugin, fmt.Sprintf("no version to run for %s, its instances are left as they are", sp.Plugin))
		return
	}
	match, _ := s.matches(sp.Placement.Constraint)
	v := &view{spec: sp, isUsable: make(map[string]bool)}
	for i, name := range s.names {
		n := s.nodes[name]
		if n.Alive && n.Eligible && match[i] {
			v.usable = append(v.usable, n)
			v.isUsable[name] = true
		}
	}
	for _, name := range sortedKeys(s.cur[sp.Plugin]) {
		in := s.cur[sp.Plugin][name]
		n := s.nodes[name]
		switch {
		case n == nil:
			// The node left the cluster.
		case v.isUsable[name]:
			v.live = append(v.live, in)
		case n.Alive:
			v.draining = append(v.draining, in)
		default:
			v.lost = append(v.lost, in)
		}
	}
	switch sp.Placement.Mode {
	case bundle.PlacementEveryNode:
		s.everyNode(v)
	case bundle.PlacementCount:
		s.count(v)
	case bundle.PlacementSingleton:
		s.singleton(v)
	}
	delete(s.cur, sp.Plugin)
}

// matches compiles a constraint once and tells which nodes, by their index
// in s.names, it matches.
func (s *scheduler) matches(expr string) ([]bool, error) {
	if r, ok := s.match[expr]; ok {
		return r.nodes, r.err
	}
	var r matchResult
	c, err := bundle.CompileConstraint(expr)
	if err != nil {
		r.err = err
	} else {
		r.nodes = make([]bool, len(s.names))
		for i, name := range s.names {
			r.nodes[i] = c.Match(s.nodes[name].Tags)
		}
	}
	s.match[expr] = r
	return r.nodes, r.err
}

// keepAsIs keeps a plugin's current instances on known nodes unchanged and
// reports why.
func (s *scheduler) keepAsIs(plugin, msg string) {
	for _, name := range sortedKeys(s.cur[plugin]) {
		if s.nodes[name] != nil {
			s.out = append(s.out, s.cur[plugin][name])
		}
	}
	delete(s.cur, plugin)
	s.diags = append(s.diags, Diagnostic{Plugin: plugin, Severity: SeverityError, Message: msg})
}

// assign puts in (a current instance or a new one) into the result with
// the spec's version and the given role.
func (s *scheduler) assign(v *view, in Instance, role string, draining bool) {
	in.Plugin, in.Version, in.Role, in.Draining = v.spec.Plugin, v.spec.Version, role, draining
	if n := s.nodes[in.Node]; n == nil || !n.Alive {
		in.Healthy = false
	}
	s.out = append(s.out, in)
}

// place assigns a new instance on node.
func (s *scheduler) place(v *view, node, role string) Instance {
	in := Instance{Node: node}
	s.assign(v, in, role, false)
	s.load[node]++
	return s.out[len(s.out)-1]
}

// drop leaves a current instance out of the result.
func (s *scheduler) drop(in Instance) {
	if s.nodes[in.Node] != nil {
		s.load[in.Node]--
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// less2 orders pairs lexicographically.
func less2(a, b [2]int) bool { return a[0] < b[0] || a[0] == b[0] && a[1] < b[1] }
