package bundle

import (
	"errors"
	"strings"
	"testing"
)

func TestParseManifestPlacement(t *testing.T) {
	tests := []struct {
		name string
		in   map[string]any
		want Placement
	}{
		{"absent", nil, Placement{Mode: PlacementEveryNode, Spread: SpreadFaultDomain}},
		{"every-node with constraint", map[string]any{"mode": "every-node", "constraint": `role == "edge"`},
			Placement{Mode: PlacementEveryNode, Constraint: `role == "edge"`, Spread: SpreadFaultDomain}},
		{"singleton", map[string]any{"mode": "singleton"}, Placement{Mode: PlacementSingleton, Spread: SpreadFaultDomain}},
		{"singleton with standby", map[string]any{"mode": "singleton", "standby": 1}, Placement{Mode: PlacementSingleton, Standby: 1, Spread: SpreadFaultDomain}},
		{"singleton standby 0", map[string]any{"mode": "singleton", "standby": 0}, Placement{Mode: PlacementSingleton, Spread: SpreadFaultDomain}},
		{"count", map[string]any{"mode": "count", "count": 3, "constraint": `role == "edge" and disk == "ssd"`, "spread": "fault_domain"},
			Placement{Mode: PlacementCount, Count: 3, Constraint: `role == "edge" and disk == "ssd"`, Spread: SpreadFaultDomain}},
		{"count of one", map[string]any{"mode": "count", "count": 1}, Placement{Mode: PlacementCount, Count: 1, Spread: SpreadFaultDomain}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest(manifestJSON(t, func(m map[string]any) {
				if tt.in != nil {
					m["placement"] = tt.in
				}
			}))
			if err != nil {
				t.Fatal(err)
			}
			if m.Placement != tt.want {
				t.Errorf("placement = %+v, want %+v", m.Placement, tt.want)
			}
			// Marshal writes it back so that it parses the same.
			out, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParseManifest(out)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if again.Placement != tt.want {
				t.Errorf("after Marshal: placement = %+v, want %+v", again.Placement, tt.want)
			}
		})
	}
}

func TestConstraintMatch(t *testing.T) {
	edge := map[string]string{"role": "edge", "disk": "ssd", "rack": "r12", "features": "gpu,nvme"}
	core := map[string]string{"role": "core", "disk": "hdd"}
	bare := map[string]string{}
	tests := []struct {
		expr             string
		edge, core, bare bool
	}{
		{"", true, true, true},
		{`role == "edge"`, true, false, false}, // a missing tag does not match ==
		{`role != "edge"`, false, true, true},  // and does match !=
		{`role == "edge" and disk == "ssd"`, true, false, false},
		{`role == "edge" or disk == "hdd"`, true, true, false},
		{`not (role == "edge")`, false, true, true},
		{`rack is empty`, false, true, true},
		{`rack is not empty`, true, false, false},
		{`rack matches "^r1[0-9]$"`, true, false, false},
		{`"ss" in disk`, true, false, false},
		{`"gpu" in features`, true, false, false},
		{`features contains "nvme"`, true, false, false},
		{`"/role" == "core"`, false, true, false}, // JSON pointer selector
		{`role.sub == "x"`, false, false, false},  // a tag's value has no fields: no match, not an error
	}
	for _, tt := range tests {
		c, err := CompileConstraint(tt.expr)
		if err != nil {
			t.Errorf("%q: %v", tt.expr, err)
			continue
		}
		if c.String() != tt.expr {
			t.Errorf("String() = %q, want %q", c.String(), tt.expr)
		}
		for _, n := range []struct {
			name string
			tags map[string]string
			want bool
		}{{"edge", edge, tt.edge}, {"core", core, tt.core}, {"bare", bare, tt.bare}, {"nil", nil, tt.bare}} {
			if got := c.Match(n.tags); got != n.want {
				t.Errorf("%q on %s node = %v, want %v", tt.expr, n.name, got, n.want)
			}
		}
	}
}

func TestCompileConstraintDepth(t *testing.T) {
	// Parentheses inside string literals do not count.
	for _, expr := range []string{
		`(((a == "b")))`,
		`not (a == "b" and (c == "d" or (e matches "((((x))))")))`,
		`a == "((((" or b == ")"`,
		"a matches `(((((`",
	} {
		if _, err := CompileConstraint(expr); err != nil {
			t.Errorf("%s: %v", expr, err)
		}
	}
	_, err := CompileConstraint(`((((a == "b"))))`)
	checkErr(t, err, ErrManifestInvalid, "placement.constraint nests parentheses 4 deep: use at most 3 levels")
	// A second compile answers from the cache, the same.
	_, again := CompileConstraint(`((((a == "b"))))`)
	if again == nil || again.Error() != err.Error() {
		t.Errorf("second compile: %v, want %v", again, err)
	}
}

// TestCompileConstraintHostile: the longest constraints the parser
// backtracks most on compile or are refused, none hangs (speed is for
// benchmarks; this only checks that each returns).
func TestCompileConstraintHostile(t *testing.T) {
	body := strings.TrimSuffix(strings.Repeat(`a == "b" and `, 78), " and ")
	for _, expr := range []string{
		strings.Repeat("(", 1020) + "a",
		strings.Repeat("not ", 250) + `a == "b"`,
		body,
		`not (not (not (` + body[:len(body)-100] + `)))`,
		`a matches "` + strings.Repeat("(a*)*", 180) + `"`,
	} {
		if c, err := CompileConstraint(expr); err == nil {
			c.Match(map[string]string{"a": strings.Repeat("a", 100)})
		}
	}
	if _, err := CompileConstraint(body); err != nil {
		t.Errorf("a 78-term constraint of %d bytes: %v", len(body), err)
	}
}

func TestCompileConstraintRefuses(t *testing.T) {
	for _, expr := range []string{`role = "edge"`, `role ==`, `(role == "a"`, `role in ["a"]`, `n > 3`} {
		_, err := CompileConstraint(expr)
		if !errors.Is(err, ErrManifestInvalid) {
			t.Errorf("%q: error %v, want ErrManifestInvalid", expr, err)
		}
	}
}

// TestConstraintConcurrent: a compiled constraint (shared through the
// cache) may be matched from several goroutines; go-bexpr compiles a
// regular expression into the tree at its first use (run with -race).
func TestConstraintConcurrent(t *testing.T) {
	c, err := CompileConstraint(`rack matches "^r1[0-9]$" and role == "edge"`)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan bool)
	for range 4 {
		go func() {
			ok := true
			for range 50 {
				ok = ok && c.Match(map[string]string{"rack": "r12", "role": "edge"})
			}
			done <- ok
		}()
	}
	for range 4 {
		if !<-done {
			t.Error("a concurrent match failed")
		}
	}
}
