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

// Nodes lists the members that have not left, alive or not.
func (m placementMembers) Nodes() []placement.Node {
	var out []placement.Node
	known := map[string]bool{}
	for _, mb := range m.c.Members() {
		known[mb.Name] = true
		if mb.Status == "left" {
			continue
		}
		tags := map[string]string{}
		for k, v := range mb.Tags {
			switch k {
			case cluster.TagRole, cluster.TagAPI, cluster.TagRPC, cluster.TagRaftState, "fault_domain", "upgrade_domain":
			default:
				tags[k] = v
			}
		}
		out = append(out, placement.Node{Name: mb.Name, FaultDomain: mb.Tags["fault_domain"], UpgradeDomain: mb.Tags["upgrade_domain"],
			Tags: tags, Alive: mb.Status == "alive"})
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
