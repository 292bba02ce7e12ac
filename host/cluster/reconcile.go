package cluster

import (
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/plughost/plughost/store"
)

// reconcile keeps the raft configuration in step with membership; only the
// leader runs it. Servers alive for ServerStabilization join, as voters up
// to MaxVoters and as non-voters past it; non-voters are promoted when a
// voter slot frees up; servers that left are removed at once and failed
// ones after DeadServerGrace, as long as the healthy voters left behind are
// still a quorum of the smaller configuration.
func (c *Cluster) reconcile(members []serf.Member, now time.Time) {
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

	c.mu.Lock()
	aliveSince := make(map[string]time.Time, len(c.aliveSince))
	for k, v := range c.aliveSince {
		aliveSince[k] = v
	}
	failedSince := make(map[string]time.Time, len(c.failedSince))
	for k, v := range c.failedSince {
		failedSince[k] = v
	}
	c.mu.Unlock()

	// Remove servers that left or stayed failed.
	for _, s := range conf {
		m, ok := byName[s.ID]
		if !ok || s.ID == st.NodeID() {
			continue
		}
		due := m.Status == serf.StatusLeft ||
			(m.Status == serf.StatusFailed && !failedSince[s.ID].IsZero() && now.Sub(failedSince[s.ID]) >= c.cfg.DeadServerGrace)
		if !due {
			continue
		}
		if s.Suffrage == store.Voter {
			// The healthy voters must stay a quorum of the configuration
			// without this one.
			if healthy < (voters-1)/2+1 {
				c.log.Warn("reconcile: not removing a dead server, it would leave no quorum", "server", s.ID, "voters", voters, "healthy", healthy)
				continue
			}
		}
		c.log.Info("removing server from raft", "server", s.ID, "serf_status", m.Status.String())
		if err := st.RemoveServer(s.ID); err != nil {
			c.log.Warn("reconcile: remove server", "server", s.ID, "error", err)
			return
		}
		if s.Suffrage == store.Voter {
			voters--
		}
		delete(inConf, s.ID)
	}

	// Add or promote stable, alive servers.
	for name, m := range byName {
		if m.Status != serf.StatusAlive || name == st.NodeID() {
			continue
		}
		since, ok := aliveSince[name]
		if !ok || now.Sub(since) < c.cfg.ServerStabilization {
			continue
		}
		addr := m.Tags[TagRPC]
		if addr == "" {
			continue
		}
		s, present := inConf[name]
		switch {
		case present && s.Suffrage == store.Voter && s.Address == addr:
			continue
		case present && s.Suffrage == store.Voter:
			c.log.Info("updating server's raft address", "server", name, "address", addr)
			err = st.AddVoter(name, addr)
		case voters < c.cfg.MaxVoters:
			c.log.Info("adding voter", "server", name, "address", addr)
			err = st.AddVoter(name, addr)
			voters++
		case !present:
			c.log.Info("adding non-voter (the cluster has its maximum of voters)", "server", name, "address", addr, "max_voters", c.cfg.MaxVoters)
			err = st.AddNonvoter(name, addr)
		default:
			continue
		}
		if err != nil {
			c.log.Warn("reconcile: raft configuration change", "server", name, "error", err)
			return
		}
	}
}
