package agent

import (
	"github.com/plughost/plughost/host/cluster"
	"github.com/plughost/plughost/host/placement"
)

// placementMembers is the membership the placement controller reads (area:
// core): serf's members, without those that left.
type placementMembers struct{ c *cluster.Cluster }

// Nodes lists the members that have not left, alive or not.
func (m placementMembers) Nodes() []placement.Node {
	var out []placement.Node
	for _, mb := range m.c.Members() {
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
	return out
}

// MemberChanges tells of member events.
func (m placementMembers) MemberChanges() (<-chan struct{}, func()) { return m.c.MemberChanges() }
