// Package placement is the cluster's scheduler: a pure function from the
// nodes, the plugins' placement specs and the current assignment to the new
// assignment and what could not be placed.
//
// Schedule is deterministic (the same inputs in any order give the same
// result) and moves as little as it can:
//
//   - A healthy instance on an alive, eligible node its constraint matches is
//     never moved to rebalance. An unhealthy one may be moved to even out the
//     spread over fault domains.
//   - every-node: one instance on every alive, eligible, matching node.
//   - count N: at most one instance per node, spread over the fault domains
//     that have an alive, eligible, matching node so that the instance counts
//     of any two of them differ by at most one (Service Fabric's hard rule),
//     then over upgrade domains, then onto the least loaded node. When the
//     rule or the nodes allow fewer than N, fewer are placed and a
//     Diagnostic says why.
//   - singleton: one instance with Role RoleActive and, with standby 1, one
//     with Role RoleStandby on another node (in another fault domain when
//     there is one). When the active's node is lost, a healthy standby on an
//     alive node is promoted (one on a draining node is then replaced as in
//     a drain); else a new node takes the active role, and a standby still
//     starting stays the standby. An unhealthy active on a usable node is
//     left to its node's supervisor. Never two actives.
//
// Drain (Node.Eligible false), and a constraint that no longer matches, move
// instances off an alive node, gated on health: the old instance stays in
// the result with Draining set until its replacement is Healthy, and the
// first Schedule after that drops it. A drained singleton's replacement
// first runs as a standby and is promoted once healthy, so there is never
// a second active. When no other node can run the plugin, its instances
// stay where they are, Draining, and the Diagnostic says so: a drain does
// not take the last instances of a plugin down.
//
// Dead nodes (Node.Alive false) get nothing new. By default Nomad marks
// the allocations of a node that misses its heartbeats lost and replaces
// them for good; a disconnect block (lost_after, replace = true, reconcile
// = "best_score") keeps the original as "unknown" beside its replacement
// and picks one when the node reconnects. This scheduler does the latter,
// since serf's failure detector also fires for a short partition: an
// every-node or count instance on a dead node stays assigned, so the node
// resumes it when it comes back, but it does not count, and a count
// plugin's instance is replaced on a live node. When the node returns, the
// instance too many is removed from the fullest fault domain (an unhealthy
// one first, then by upgrade domain and node name), kept Draining while a
// kept one is not yet healthy. A singleton instance on a dead node is
// dropped at once: its epoch is stale and fencing refuses its writes. An
// instance on a node missing from the input (it left the cluster, or serf
// reaped it), or of a plugin without a Spec, is dropped.
package placement

import (
	"cmp"
	"slices"

	"github.com/plughost/plughost/host/bundle"
)

// Roles of a singleton's instances. Other modes' instances have Role "".
const (
	RoleActive  = "active"
	RoleStandby = "standby"
)

// Severities of a Diagnostic.
const (
	SeverityError   = "error"   // nothing of the plugin could be placed
	SeverityWarning = "warning" // fewer instances placed than wanted, or spread uneven
)

// Node is a cluster member as the scheduler sees it. Names are unique.
type Node struct {
	Name          string
	FaultDomain   string            // "" is a fault domain of its own name
	UpgradeDomain string            // "" is an upgrade domain of its own name
	Tags          map[string]string // what a placement constraint is evaluated against
	Alive         bool              // serf sees it alive
	Eligible      bool              // not drained by the operator
}

// Spec is a plugin's target version and placement, from its intent.
// Placement fields left empty take the manifest defaults.
type Spec struct {
	Plugin, Version string
	Placement       bundle.Placement
}

// Instance is a plugin instance assigned to a node. In the current
// assignment given to Schedule, Healthy says that the node observes the
// instance serving, healthy, at the assigned version and role: pass false
// for an observation older than the assignment or from a node that was
// dead since. In a Result, Healthy is copied from the current instance kept
// (false for a new one and for one on a dead node).
type Instance struct {
	Node, Plugin, Version string
	Role                  string // RoleActive, RoleStandby or "" (not a singleton)
	Healthy               bool
	// Draining is set in a Result on an instance that is to go but is kept
	// until its replacement is healthy: on a node drained or no longer
	// matching the constraint, or one too many after a lost node came
	// back. It should get new calls only when no other instance can take
	// them; the first Schedule that sees the replacement healthy drops it,
	// so a controller just writes the Result. A draining singleton active
	// stays the active (and keeps its epoch) until the standby replacing it
	// is promoted.
	Draining bool
}

// Result is the new assignment, sorted by plugin then node, and the
// diagnostics, sorted by plugin.
type Result struct {
	Assign      []Instance
	Diagnostics []Diagnostic
}

// Diagnostic says why a plugin has fewer instances placed than wanted, or
// that its instances are unevenly spread. Wanted and Placed count instances
// on alive, eligible, matching nodes (a singleton's standby included).
type Diagnostic struct {
	Plugin   string
	Severity string // SeverityError or SeverityWarning
	Wanted   int
	Placed   int
	Message  string // e.g. `count 3 wanted, 2 placed: only 2 fault domains match role == "edge"`
}

// Schedule returns the assignment of every Spec's plugin over nodes, moving
// as little as it can from current. It does not modify its arguments.
func Schedule(nodes []Node, specs []Spec, current []Instance) Result {
	s := newScheduler(nodes, current)
	sorted := sortedSpecs(specs, s)
	s.dropUnspecified(sorted)
	for _, sp := range sorted {
		s.schedule(sp)
	}
	slices.SortFunc(s.out, func(a, b Instance) int {
		return cmp.Or(cmp.Compare(a.Plugin, b.Plugin), cmp.Compare(a.Node, b.Node))
	})
	slices.SortStableFunc(s.diags, func(a, b Diagnostic) int { return cmp.Compare(a.Plugin, b.Plugin) })
	return Result{Assign: s.out, Diagnostics: s.diags}
}
