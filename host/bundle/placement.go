package bundle

import (
	"fmt"

	"github.com/hashicorp/go-bexpr"
)

// Placement modes.
const (
	PlacementEveryNode = "every-node" // one instance on every alive, eligible, matching node
	PlacementSingleton = "singleton"  // one active instance in the cluster (and a standby if asked)
	PlacementCount     = "count"      // Count instances, spread over fault domains
)

// Spread rules.
const (
	// SpreadFaultDomain keeps the instance counts of any two fault domains
	// (among those with a node that can run the plugin) at most one apart.
	SpreadFaultDomain = "fault_domain"
)

// Bounds of a placement spec.
const (
	MaxPlacementCount   = 1000 // instances of a count plugin
	MaxConstraintLength = 1024 // bytes of a constraint expression
	maxConstraintExprs  = 10000
)

// Placement says where instances of the plugin run. The zero value, after
// SetDefaults, is one instance on every node, spread over fault domains.
type Placement struct {
	// Mode is PlacementEveryNode (the default), PlacementSingleton or
	// PlacementCount.
	Mode string `json:"mode"`
	// Count is the number of instances of a PlacementCount plugin, at
	// least 1; no other mode takes it.
	Count int `json:"count,omitempty"`
	// Standby is 1 for a singleton that keeps a warm standby instance on
	// another node, 0 (the default) for none; no other mode takes it.
	Standby int `json:"standby,omitempty"`
	// Constraint is a go-bexpr boolean expression over a node's tags, e.g.
	// `role == "edge" and disk == "ssd"`: only nodes it matches run the
	// plugin. Empty matches every node. See CompileConstraint.
	Constraint string `json:"constraint,omitempty"`
	// Spread is SpreadFaultDomain (the default and the only rule).
	Spread string `json:"spread,omitempty"`
}

// SetDefaults fills the fields of p left out of plugin.json (or empty).
func (p *Placement) SetDefaults() {
	if p.Mode == "" {
		p.Mode = PlacementEveryNode
	}
	if p.Spread == "" {
		p.Spread = SpreadFaultDomain
	}
}

// Validate checks that p is complete and consistent and that its constraint
// compiles. Call it after the defaults are applied.
func (p Placement) Validate() error {
	switch p.Mode {
	case PlacementEveryNode, PlacementSingleton, PlacementCount:
	default:
		return manifestError(nil, fmt.Sprintf("placement.mode %q is not one of %q, %q, %q", p.Mode, PlacementEveryNode, PlacementSingleton, PlacementCount))
	}
	switch {
	case p.Mode == PlacementCount && p.Count < 1:
		return manifestError(nil, fmt.Sprintf(`placement.count %d must be at least 1 with mode "count"`, p.Count))
	case p.Mode == PlacementCount && p.Count > MaxPlacementCount:
		return manifestError(nil, fmt.Sprintf("placement.count %d must be at most %d", p.Count, MaxPlacementCount))
	case p.Mode != PlacementCount && p.Count != 0:
		return manifestError(nil, fmt.Sprintf(`placement.count is only for mode "count", not %q: remove it or set "mode": "count"`, p.Mode))
	}
	switch {
	case p.Standby != 0 && p.Mode != PlacementSingleton:
		return manifestError(nil, fmt.Sprintf(`placement.standby is only for mode "singleton", not %q: remove it`, p.Mode))
	case p.Standby != 0 && p.Standby != 1:
		return manifestError(nil, fmt.Sprintf("placement.standby %d must be 0 (no standby) or 1 (one warm standby)", p.Standby))
	}
	if p.Spread != SpreadFaultDomain {
		return manifestError(nil, fmt.Sprintf("placement.spread %q is not %q (the only spread rule)", p.Spread, SpreadFaultDomain))
	}
	if _, err := CompileConstraint(p.Constraint); err != nil {
		return err
	}
	return nil
}

// Constraint is a compiled placement constraint. Match is not safe for
// concurrent use (go-bexpr caches compiled regular expressions in the
// expression tree): compile one per goroutine.
type Constraint struct {
	expr string
	eval *bexpr.Evaluator // nil: matches every node
}

// CompileConstraint parses expr, a go-bexpr boolean expression over node
// tags such as `role == "edge" and disk == "ssd"`. The empty expression
// matches every node. An invalid one is refused with an error that names
// placement.constraint and the parse error, wrapping ErrManifestInvalid.
func CompileConstraint(expr string) (*Constraint, error) {
	if expr == "" {
		return &Constraint{}, nil
	}
	if len(expr) > MaxConstraintLength {
		return nil, manifestError(nil, fmt.Sprintf("placement.constraint is longer than %d bytes: shorten it", MaxConstraintLength))
	}
	// A tag the node lacks reads as the empty string, as go-bexpr treats a
	// key missing from a nested map: `role == "edge"` does not match a node
	// without a role tag, `role != "edge"` and `role is empty` do.
	eval, err := bexpr.CreateEvaluator(expr, bexpr.WithUnknownValue(""), bexpr.WithMaxExpressions(maxConstraintExprs))
	if err != nil {
		e := manifestError(nil, fmt.Sprintf("placement.constraint %q is not a valid go-bexpr expression (%v): write it like role == \"edge\" and disk == \"ssd\"", expr, err))
		e.cause = err
		return nil, e
	}
	return &Constraint{expr: expr, eval: eval}, nil
}

// String returns the expression c was compiled from ("" for none).
func (c *Constraint) String() string { return c.expr }

// Match reports whether a node with these tags satisfies c. An expression
// that cannot be evaluated against the tags (a selector reaching into a
// tag's value, a number compared with a string that is not one) does not
// match.
func (c *Constraint) Match(tags map[string]string) bool {
	if c.eval == nil {
		return true
	}
	if tags == nil {
		tags = map[string]string{}
	}
	ok, err := c.eval.Evaluate(tags)
	return err == nil && ok
}
