package placement

import (
	"fmt"
	"strings"

	"github.com/plughost/plughost/host/bundle"
)

// wanted starts a diagnostic: "count 3 wanted, 2 placed".
func wanted(v *view, placed int) string {
	p := v.spec.Placement
	what := p.Mode
	switch {
	case p.Mode == bundle.PlacementCount:
		what = fmt.Sprintf("count %d", p.Count)
	case p.Mode == bundle.PlacementSingleton && p.Standby == 1:
		what = "singleton and standby"
	}
	return fmt.Sprintf("%s wanted, %d placed", what, placed)
}

// noNode says that no node can run the plugin.
func noNode(v *view) string {
	if c := v.spec.Placement.Constraint; c != "" {
		return "no alive eligible node matches " + c
	}
	return "no node is alive and eligible"
}

// onlyNodes says how few nodes can run the plugin.
func onlyNodes(v *view) string {
	n := len(v.usable)
	if c := v.spec.Placement.Constraint; c != "" {
		return fmt.Sprintf("only %s %s", plural(n, "alive eligible node"), verb(n, "matches", "match")) + " " + c
	}
	return fmt.Sprintf("only %s %s alive and eligible", plural(n, "node"), verb(n, "is", "are"))
}

// onlyDomains says how few fault domains can run the plugin.
func onlyDomains(v *view) string {
	n := len(v.usable) // one node in each
	if c := v.spec.Placement.Constraint; c != "" {
		return fmt.Sprintf("only %s %s %s", plural(n, "fault domain"), verb(n, "matches", "match"), c)
	}
	return fmt.Sprintf("only %s %s an alive eligible node", plural(n, "fault domain"), verb(n, "has", "have"))
}

// matching is " matching C" for a constraint C, else "".
func matching(v *view) string {
	if c := v.spec.Placement.Constraint; c != "" {
		return " matching " + c
	}
	return ""
}

// drainNote tells that draining nodes keep instances that have nowhere to
// go, or "".
func drainNote(nodes []string) string {
	switch len(nodes) {
	case 0:
		return ""
	case 1:
		return "; draining node " + nodes[0] + " keeps its instance until a replacement serves"
	}
	return "; draining nodes " + strings.Join(nodes, ", ") + " keep their instances until replacements serve"
}

func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

func verb(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func fdName(fd string) string {
	if fd == "" {
		return `""`
	}
	return fd
}
