package cluster

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
	"github.com/hashicorp/serf/serf"
)

// lastContactThreshold is how long raft may go without reaching a server
// before autopilot counts it unhealthy (and does not promote it).
const lastContactThreshold = time.Second

// The leader runs hashicorp/raft-autopilot, as Consul does: it promotes a
// non-voter once it has been healthy for ServerStabilization (up to
// MaxVoters) and removes dead servers, never leaving fewer voters than
// MinQuorum nor removing a majority. A server is dead when gossip has had
// it failed for DeadServerGrace and raft, on the leader, has not reached
// it for DeadServerGrace either: gossip alone can call a server failed
// that raft is replicating to (after a pause, gossip can take a push-pull
// round to see it alive again).

// apDelegate is autopilot's view of the cluster: servers from serf, health
// from raft on this node.
type apDelegate struct{ c *Cluster }

var _ autopilot.ApplicationIntegration = apDelegate{}

// AutopilotConfig implements autopilot.ApplicationIntegration.
func (d apDelegate) AutopilotConfig() *autopilot.Config {
	return &autopilot.Config{
		CleanupDeadServers:      true,
		LastContactThreshold:    lastContactThreshold,
		MaxTrailingLogs:         1 << 62, // the leader does not see followers' log positions
		MinQuorum:               uint(d.c.cfg.MinQuorum),
		ServerStabilizationTime: d.c.cfg.ServerStabilization,
	}
}

// KnownServers implements autopilot.ApplicationIntegration: the servers
// gossip knows, with gossip's status.
func (d apDelegate) KnownServers() map[raft.ServerID]*autopilot.Server {
	leader := ""
	if d.c.cfg.Store.IsLeader() {
		leader = d.c.cfg.Store.NodeID()
	}
	out := map[raft.ServerID]*autopilot.Server{}
	for _, m := range d.c.serf.Members() {
		if m.Tags[TagRole] != RoleServer {
			continue
		}
		status := autopilot.NodeUnknown
		switch m.Status {
		case serf.StatusAlive:
			status = autopilot.NodeAlive
		case serf.StatusFailed:
			status = autopilot.NodeFailed
		case serf.StatusLeaving, serf.StatusLeft:
			status = autopilot.NodeLeft
		}
		out[raft.ServerID(m.Name)] = &autopilot.Server{
			ID:          raft.ServerID(m.Name),
			Name:        m.Name,
			Address:     raft.ServerAddress(m.Tags[TagRPC]),
			NodeStatus:  status,
			Meta:        m.Tags,
			RaftVersion: raft.ProtocolVersionMax,
			IsLeader:    m.Name == leader,
			NodeType:    autopilot.NodeVoter,
		}
	}
	return out
}

// FetchServerStats implements autopilot.ApplicationIntegration from what
// raft on the leader sees: how long since it last reached each server.
// hashicorp/raft does not expose followers' log positions to the leader,
// so a server raft reaches counts as level with the leader's log.
func (d apDelegate) FetchServerStats(_ context.Context, servers map[raft.ServerID]*autopilot.Server) map[raft.ServerID]*autopilot.ServerStats {
	r := d.c.cfg.Store.Raft()
	term, _ := strconv.ParseUint(r.Stats()["last_log_term"], 10, 64)
	index := r.LastIndex()
	now := time.Now()
	out := make(map[raft.ServerID]*autopilot.ServerStats, len(servers))
	for id := range servers {
		st := &autopilot.ServerStats{LastTerm: term, LastIndex: index}
		if last, failing := d.c.contact.lastContact(id); failing {
			st.LastContact = now.Sub(last)
		}
		out[id] = st
	}
	return out
}

// RemoveFailedServer implements autopilot.ApplicationIntegration; the
// removal runs in the background, one at a time per server.
func (d apDelegate) RemoveFailedServer(s *autopilot.Server) {
	d.c.removeInBackground(string(s.ID), "failed in gossip and out of raft's contact for the dead-server grace")
}

// NotifyState implements autopilot.ApplicationIntegration: it logs when
// the number of voters the cluster can lose changes.
func (d apDelegate) NotifyState(s *autopilot.State) {
	d.c.mu.Lock()
	changed := d.c.tolerance != s.FailureTolerance || d.c.healthy != s.Healthy
	d.c.tolerance, d.c.healthy = s.FailureTolerance, s.Healthy
	d.c.mu.Unlock()
	if changed {
		d.c.log.Info("raft health", "voters", len(s.Voters), "failure_tolerance", s.FailureTolerance, "all_servers_healthy", s.Healthy)
	}
}

// removeInBackground removes server id from raft unless a removal of it
// is already under way.
func (c *Cluster) removeInBackground(id, why string) {
	c.mu.Lock()
	if c.removing[id] {
		c.mu.Unlock()
		return
	}
	c.removing[id] = true
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() {
			c.mu.Lock()
			delete(c.removing, id)
			c.mu.Unlock()
		}()
		c.log.Info("removing server from raft", "server", id, "reason", why)
		if err := c.cfg.Store.RemoveServer(id); err != nil {
			c.log.Warn("could not remove a dead server from raft; autopilot will retry", "server", id, "error", err)
		}
	}()
}

// apPromoter is autopilot's stable promoter with plughost's limits: at
// most MaxVoters voters, and only dead servers removed.
type apPromoter struct {
	autopilot.StablePromoter
	c *Cluster
}

var _ autopilot.Promoter = (*apPromoter)(nil)

// CalculatePromotionsAndDemotions promotes stable non-voters, in ID
// order, while there are fewer than MaxVoters voters.
func (p *apPromoter) CalculatePromotionsAndDemotions(conf *autopilot.Config, s *autopilot.State) autopilot.RaftChanges {
	changes := p.StablePromoter.CalculatePromotionsAndDemotions(conf, s)
	sort.Slice(changes.Promotions, func(i, j int) bool { return changes.Promotions[i] < changes.Promotions[j] })
	free := max(0, p.c.cfg.MaxVoters-len(s.Voters))
	if len(changes.Promotions) > free {
		changes.Promotions = changes.Promotions[:free]
	}
	return changes
}

// FilterFailedServerRemovals keeps, of the servers autopilot would
// remove, those that left and those that are dead (see isDead).
func (p *apPromoter) FilterFailedServerRemovals(_ *autopilot.Config, _ *autopilot.State, failed *autopilot.FailedServers) *autopilot.FailedServers {
	now := time.Now()
	keep := func(srvs []*autopilot.Server) []*autopilot.Server {
		var out []*autopilot.Server
		for _, s := range srvs {
			if s.NodeStatus == autopilot.NodeLeft || p.c.isDead(s.ID, true, now) {
				out = append(out, s)
			}
		}
		return out
	}
	stale := func(ids []raft.ServerID) []raft.ServerID {
		var out []raft.ServerID
		for _, id := range ids {
			if p.c.isDead(id, false, now) {
				out = append(out, id)
			}
		}
		return out
	}
	return &autopilot.FailedServers{
		StaleNonVoters:  stale(failed.StaleNonVoters),
		StaleVoters:     stale(failed.StaleVoters),
		FailedNonVoters: keep(failed.FailedNonVoters),
		FailedVoters:    keep(failed.FailedVoters),
	}
}

// isDead reports whether raft on this node (the leader) has not reached
// server id for DeadServerGrace and, when gossip knows the server, gossip
// has had it failed that long too.
func (c *Cluster) isDead(id raft.ServerID, inGossip bool, now time.Time) bool {
	if string(id) == c.cfg.Store.NodeID() {
		return false
	}
	last, failing := c.contact.lastContact(id)
	if !failing || now.Sub(last) < c.cfg.DeadServerGrace {
		return false
	}
	if !inGossip {
		return true
	}
	c.mu.Lock()
	since, ok := c.failedSince[string(id)]
	c.mu.Unlock()
	return ok && now.Sub(since) >= c.cfg.DeadServerGrace
}

// raftContact is raft's own view, on the leader, of the servers it
// reaches. hashicorp/raft tells observers when heartbeats to a server fail
// (with when it last reached it) and when they resume; a server it has
// said nothing about since this node became leader is in contact.
type raftContact struct {
	r   *raft.Raft
	obs *raft.Observer
	ch  chan raft.Observation

	mu      sync.Mutex
	failing map[raft.ServerID]time.Time // last contact of servers whose heartbeats fail
}

func newRaftContact(r *raft.Raft) *raftContact {
	rc := &raftContact{r: r, ch: make(chan raft.Observation, 1024), failing: map[raft.ServerID]time.Time{}}
	rc.obs = raft.NewObserver(rc.ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.LeaderObservation, raft.PeerObservation:
			return true
		}
		return false
	})
	r.RegisterObserver(rc.obs)
	return rc
}

// run records observations until ctx ends.
func (rc *raftContact) run(ctx context.Context) {
	defer rc.r.DeregisterObserver(rc.obs)
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-rc.ch:
			rc.mu.Lock()
			switch d := o.Data.(type) {
			case raft.FailedHeartbeatObservation:
				rc.failing[d.PeerID] = d.LastContact
			case raft.ResumedHeartbeatObservation:
				delete(rc.failing, d.PeerID)
			case raft.PeerObservation:
				if d.Removed {
					delete(rc.failing, d.Peer.ID)
				}
			case raft.LeaderObservation:
				// A new term's leader replicates afresh.
				clear(rc.failing)
			}
			rc.mu.Unlock()
		}
	}
}

// lastContact is when raft last reached server id, if its heartbeats are
// failing now.
func (rc *raftContact) lastContact(id raft.ServerID) (time.Time, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	t, ok := rc.failing[id]
	return t, ok
}
