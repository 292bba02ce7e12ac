package cluster

import (
	"context"

	"github.com/hashicorp/serf/serf"

	"github.com/plughost/plughost/store"
)

// reconcile brings the servers gossip knows into the raft configuration;
// only the leader runs it. A new server joins as a non-voter, which
// autopilot promotes once it has been healthy for ServerStabilization; a
// server that moved keeps its role at its new address; a server that left
// is removed at once, as long as the healthy voters left behind are still
// a quorum of the smaller configuration. Failed servers are autopilot's to
// remove (autopilot.go).
//
// A server is added, or moved to a new address, only once it proved at
// that address that its certificate names it (Config.VerifyServer).
func (c *Cluster) reconcile(ctx context.Context, members []serf.Member) {
	st := c.cfg.Store
	conf, err := st.Configuration()
	if err != nil {
		c.log.Warn("reconcile: reading the raft configuration", "error", err)
		return
	}
	byName := make(map[string]serf.Member, len(members))
	for _, m := range members {
		if m.Tags[TagRole] == RoleServer {
			byName[m.Name] = m
		}
	}
	inConf := make(map[string]store.RaftServer, len(conf))
	voters, healthy := 0, 0
	for _, s := range conf {
		inConf[s.ID] = s
		if s.Suffrage == store.Voter {
			voters++
			if m, ok := byName[s.ID]; (ok && m.Status == serf.StatusAlive) || s.ID == st.NodeID() {
				healthy++
			}
		}
	}

	// Remove servers that left.
	for _, s := range conf {
		m, ok := byName[s.ID]
		if !ok || s.ID == st.NodeID() || m.Status != serf.StatusLeft {
			continue
		}
		if s.Suffrage == store.Voter {
			// The healthy voters must stay a quorum of the configuration
			// without this one.
			if healthy < (voters-1)/2+1 {
				c.log.Warn("reconcile: not removing a server that left, it would leave no quorum", "server", s.ID, "voters", voters, "healthy", healthy)
				continue
			}
		}
		c.log.Info("removing server from raft", "server", s.ID, "reason", "left the cluster")
		if err := st.RemoveServer(s.ID); err != nil {
			c.log.Warn("reconcile: remove server", "server", s.ID, "error", err)
			return
		}
		if s.Suffrage == store.Voter {
			voters--
		}
		delete(inConf, s.ID)
	}

	// Add alive servers as non-voters; keep servers' addresses current.
	for name, m := range byName {
		if m.Status != serf.StatusAlive || name == st.NodeID() {
			continue
		}
		addr := m.Tags[TagRPC]
		if addr == "" {
			continue
		}
		s, present := inConf[name]
		if present && s.Address == addr {
			continue
		}
		if !c.verifiedAt(ctx, name, addr) {
			continue
		}
		switch {
		case present && s.Suffrage == store.Voter:
			c.log.Info("updating server's raft address", "server", name, "address", addr)
			err = st.AddVoter(name, addr)
		case present:
			c.log.Info("updating server's raft address", "server", name, "address", addr)
			err = st.AddNonvoter(name, addr)
		default:
			c.log.Info("adding server as a non-voter; it gets a vote once stable", "server", name, "address", addr,
				"stabilization", c.cfg.ServerStabilization, "max_voters", c.cfg.MaxVoters)
			err = st.AddNonvoter(name, addr)
		}
		if err != nil {
			c.log.Warn("reconcile: raft configuration change", "server", name, "error", err)
			return
		}
	}
}
