package placement

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// spread is a count plugin's instances on usable nodes, counted by fault
// and upgrade domain while they are trimmed, moved and added.
type spread struct {
	s       *scheduler
	v       *view
	live    []Instance         // kept and new instances, one per node
	isNew   map[string]bool    // node -> its instance is new
	has     map[string]bool    // node -> it has an instance
	fd      map[string]int     // fault domain -> instances
	ud      map[string]int     // upgrade domain -> instances
	fdNodes map[string][]*Node // fault domain -> usable nodes
	fds     []string           // fault domains with a usable node, sorted
}

func newSpread(s *scheduler, v *view) *spread {
	sp := &spread{s: s, v: v, isNew: map[string]bool{}, has: map[string]bool{},
		fd: map[string]int{}, ud: map[string]int{}, fdNodes: map[string][]*Node{}}
	for _, n := range v.usable {
		if len(sp.fdNodes[n.FaultDomain]) == 0 {
			sp.fds = append(sp.fds, n.FaultDomain)
		}
		sp.fdNodes[n.FaultDomain] = append(sp.fdNodes[n.FaultDomain], n)
	}
	slices.Sort(sp.fds)
	for _, in := range v.live {
		sp.live = append(sp.live, in)
		sp.count(in.Node, 1)
	}
	return sp
}

func (sp *spread) count(node string, d int) {
	sp.has[node] = d > 0
	sp.fd[sp.s.fdOf(node)] += d
	sp.ud[sp.s.udOf(node)] += d
}

// remove takes a current instance out. Unless it is dropped, its node
// stays taken: it may be kept, draining.
func (sp *spread) remove(in Instance, dropped bool) {
	sp.live = slices.DeleteFunc(sp.live, func(x Instance) bool { return x.Node == in.Node })
	sp.count(in.Node, -1)
	if dropped {
		sp.s.drop(in)
	} else {
		sp.has[in.Node] = true
	}
}

// free reports whether fault domain fd has a usable node without an
// instance.
func (sp *spread) free(fd string) bool {
	for _, n := range sp.fdNodes[fd] {
		if !sp.has[n.Name] {
			return true
		}
	}
	return false
}

// add places a new instance on node.
func (sp *spread) add(node string) {
	sp.live = append(sp.live, Instance{Node: node})
	sp.isNew[node] = true
	sp.count(node, 1)
	sp.s.load[node]++
}

// emptiest returns the fault domain with the fewest instances among those
// with a usable node left, first by name on a tie.
func (sp *spread) emptiest() (string, bool) {
	best, ok := "", false
	for _, fd := range sp.fds {
		if sp.free(fd) && (!ok || sp.fd[fd] < sp.fd[best]) {
			best, ok = fd, true
		}
	}
	return best, ok
}

// minCount is the fewest instances of any fault domain with a usable node.
func (sp *spread) minCount() int {
	m := -1
	for _, fd := range sp.fds {
		if m < 0 || sp.fd[fd] < m {
			m = sp.fd[fd]
		}
	}
	return m
}

// bestNode returns the usable node of fault domain fd without an instance
// whose upgrade domain has the fewest, then with the fewest instances of
// any plugin, then first by name.
func (sp *spread) bestNode(fd string) string {
	var best *Node
	key := func(n *Node) [2]int { return [2]int{sp.ud[n.UpgradeDomain], sp.s.load[n.Name]} }
	for _, n := range sp.fdNodes[fd] {
		if !sp.has[n.Name] && (best == nil || less2(key(n), key(best))) {
			best = n
		}
	}
	return best.Name
}

// emit puts the instances into the result, by node.
func (sp *spread) emit() {
	slices.SortFunc(sp.live, func(a, b Instance) int { return cmp.Compare(a.Node, b.Node) })
	for _, in := range sp.live {
		sp.s.assign(sp.v, in, "", false)
	}
}

// shortBecause says why fewer instances than wanted, but some, are placed.
func (sp *spread) shortBecause() string {
	if len(sp.live) == len(sp.v.usable) {
		if len(sp.fds) == len(sp.v.usable) {
			return onlyDomains(sp.v)
		}
		return onlyNodes(sp.v)
	}
	// Service Fabric's rule stopped it: a full fault domain holds the
	// fewest.
	min := sp.minCount()
	for _, fd := range sp.fds {
		if sp.fd[fd] == min && !sp.free(fd) {
			return fmt.Sprintf("fault domain %s has only %s%s, and fault domains may differ by at most one instance",
				fdName(fd), plural(len(sp.fdNodes[fd]), "alive eligible node"), matching(sp.v))
		}
	}
	return onlyNodes(sp.v) // not reached: fill stops only for these reasons
}

// uneven describes fault domains more than one instance apart, or "".
func (sp *spread) uneven() string {
	if len(sp.fds) < 2 {
		return ""
	}
	lo, hi := sp.minCount(), 0
	var fullest string
	parts := make([]string, len(sp.fds))
	for i, fd := range sp.fds {
		parts[i] = fmt.Sprintf("%s %d", fdName(fd), sp.fd[fd])
		if sp.fd[fd] > hi {
			hi, fullest = sp.fd[fd], fd
		}
	}
	if hi-lo <= 1 {
		return ""
	}
	return fmt.Sprintf("fault domains uneven (%s): healthy instances are not moved to even them out; drain a node of %s to move one",
		strings.Join(parts, ", "), fdName(fullest))
}
