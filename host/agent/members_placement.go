package agent

import (
	"github.com/plughost/plughost/host/cluster"
	"github.com/plughost/plughost/host/placement"
	"github.com/plughost/plughost/store"
)

// placementMembers is the membership the placement controller reads (area:
// core): serf's members that have not left, and the raft servers gossip
// does not know yet (a leader just started, before the others rejoined),
// as dead nodes: what they run stays assigned rather than dropped.
type placementMembers struct {
	c  *cluster.Cluster
	st *store.Store
}

// Nodes lists the members that have not left, alive or not, with the
// identity they gossip (cluster.Nodes: validated, a domain not given is the
// node's name). A node whose gossiped identity was refused is left out, so
// it is given no instances (`plughost nodes` shows it invalid, and why).
func (m placementMembers) Nodes() []placement.Node {
	var out []placement.Node
	known := map[string]bool{}
	for _, n := range m.c.Nodes() {
		known[n.Name] = true
		if n.Status == "left" || n.Invalid != "" {
			continue
		}
		out = append(out, placement.Node{Name: n.Name, FaultDomain: n.FaultDomain, UpgradeDomain: n.UpgradeDomain,
			Tags: n.Tags, Alive: n.Alive()})
	}
	if servers, err := m.st.Configuration(); err == nil {
		for _, s := range servers {
			if !known[s.ID] {
				out = append(out, placement.Node{Name: s.ID})
			}
		}
	}
	return out
}

// MemberChanges tells of member events.
func (m placementMembers) MemberChanges() (<-chan struct{}, func()) { return m.c.MemberChanges() }
