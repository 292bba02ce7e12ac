package bundle

import (
	"fmt"
	"sync"

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
	MaxConstraintDepth  = 3    // nested parentheses in a constraint
	// go-bexpr's parser backtracks, about four times more per level of
	// parentheses: the depth and a step budget (go-bexpr's default) keep a
	// hostile constraint to tens of milliseconds, paid once per expression
	// thanks to the cache.
	maxConstraintSteps   = 2_000_000
	maxCachedConstraints = 512
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

// Constraint is a compiled placement constraint, safe for concurrent use.
type Constraint struct {
	expr string
	mu   sync.Mutex       // go-bexpr caches compiled regular expressions in the expression tree
	eval *bexpr.Evaluator // nil: matches every node
}

// constraints caches CompileConstraint's results by expression: catalog
// records are validated at every read and the scheduler compiles every
// plugin's constraint at every decision.
var constraints struct {
	sync.Mutex
	m map[string]compiled
}

type compiled struct {
	c   *Constraint
	err error
}

// CompileConstraint parses expr, a go-bexpr boolean expression over node
// tags such as `role == "edge" and disk == "ssd"`. The empty expression
// matches every node. An invalid one is refused with an error that names
// placement.constraint and the parse error, wrapping ErrManifestInvalid.
func CompileConstraint(expr string) (*Constraint, error) {
	if expr == "" {
		return &Constraint{}, nil
	}
	constraints.Lock()
	r, ok := constraints.m[expr]
	constraints.Unlock()
	if ok {
		return r.c, r.err
	}
	r.c, r.err = compileConstraint(expr)
	constraints.Lock()
	if len(constraints.m) >= maxCachedConstraints || constraints.m == nil {
		constraints.m = make(map[string]compiled)
	}
	constraints.m[expr] = r
	constraints.Unlock()
	return r.c, r.err
}

func compileConstraint(expr string) (*Constraint, error) {
	if len(expr) > MaxConstraintLength {
		return nil, manifestError(nil, fmt.Sprintf("placement.constraint is longer than %d bytes: shorten it", MaxConstraintLength))
	}
	if d := parenDepth(expr); d > MaxConstraintDepth {
		return nil, manifestError(nil, fmt.Sprintf("placement.constraint nests parentheses %d deep: use at most %d levels", d, MaxConstraintDepth))
	}
	// A tag the node lacks reads as the empty string, as go-bexpr treats a
	// key missing from a nested map: `role == "edge"` does not match a node
	// without a role tag, `role != "edge"` and `role is empty` do.
	eval, err := bexpr.CreateEvaluator(expr, bexpr.WithUnknownValue(""), bexpr.WithMaxExpressions(maxConstraintSteps))
	if err != nil {
		e := manifestError(nil, fmt.Sprintf("placement.constraint %q is not a valid go-bexpr expression (%v): write it like role == \"edge\" and disk == \"ssd\"", expr, err))
		e.cause = err
		return nil, e
	}
	return &Constraint{expr: expr, eval: eval}, nil
}

// parenDepth returns how deep parentheses nest in expr outside string
// literals ("..." with backslash escapes, and `...`).
func parenDepth(expr string) int {
	depth, deepest := 0, 0
	var quote rune
	escaped := false
	for _, r := range expr {
		switch {
		case escaped:
			escaped = false
		case quote == '"' && r == '\\':
			escaped = true
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '`':
			quote = r
		case r == '(':
			depth++
			deepest = max(deepest, depth)
		case r == ')':
			depth--
		}
	}
	return deepest
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
	c.mu.Lock()
	defer c.mu.Unlock()
	ok, err := c.eval.Evaluate(tags)
	return err == nil && ok
}
