package supervisor

import (
	"context"
	"time"

	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	"github.com/plughost/plughost/store"
)

// Fencer is this node's singleton lease (host/fence.Tracker): a node cut
// off from the raft leader for longer than it stops its singleton actives
// by itself.
type Fencer interface {
	// Fenced says whether this node's active of plugin is fenced, and why:
	// its writes are refused and it must not run.
	Fenced(plugin string) (why string, fenced bool)
	// Stops counts the times a lost lease stopped this node's active of
	// plugin, and says why the last time.
	Stops(plugin string) (int, string)
}

// fenceDrain is how long a fenced active has to finish its calls in
// flight before it is killed: its writes are refused already.
const fenceDrain = time.Second

// fenced is the role of plugin's instances on this node while a lost lease
// fences its active.
func (s *Supervisor) fenced(plugin string) (store.Role, bool) {
	if s.cfg.Fence == nil {
		return store.Role{}, false
	}
	why, ok := s.cfg.Fence.Fenced(plugin)
	return store.Role{Kind: store.RoleFenced, Why: why}, ok
}

// RoleChanged tells the supervisor that plugin's standing on this node may
// have changed (a lost lease, a new singleton record): a fenced active is
// stopped, and one no longer fenced may start.
func (s *Supervisor) RoleChanged(plugin string) {
	s.mu.Lock()
	m, ok := s.plugins[plugin]
	s.mu.Unlock()
	if ok {
		m.nudge()
	}
}

// holdFenced stops the instance that was this node's active of the plugin
// each time a lost lease fenced it, and reports whether the plugin is
// fenced still: nothing of it starts until its singleton is assigned anew.
// The instance is told first, loses its route, gets fenceDrain for its
// calls in flight, then is killed.
func (m *managed) holdFenced() bool {
	if m.s.cfg.Fence == nil {
		return false
	}
	stops, why := m.s.cfg.Fence.Stops(m.name)
	if stops != m.leaseStops {
		m.leaseStops = stops
		if in := m.current(); in != nil {
			m.fenceStop(in, "fenced: "+why)
		}
	}
	r, fenced := m.s.fenced(m.name)
	if !fenced {
		return false
	}
	if m.current() == nil {
		m.setState(operatorv1.InstanceState_INSTANCE_STATE_STOPPED,
			"fenced: "+r.Why+"; it starts again when the placement controller assigns the singleton anew")
	}
	return true
}

// fenceStop stops in, the active a lost lease fenced.
func (m *managed) fenceStop(in *instance, why string) {
	if m.s.cfg.Router.Backend(m.name) == in.backend {
		m.s.cfg.Router.SetBackend(m.name, nil)
	}
	in.setState(operatorv1.InstanceState_INSTANCE_STATE_DRAINING)
	ctx, cancel := context.WithTimeout(context.Background(), fenceDrain)
	defer cancel()
	_ = in.SetRole(ctx, pluginv1.Role_ROLE_FENCED, 0)
	if in.backend != nil {
		in.backend.Wait(ctx)
	}
	if ctx.Err() == nil {
		_, _ = in.Lifecycle.Drain(ctx, &pluginv1.DrainRequest{TimeoutMs: time.Until(deadlineOf(ctx)).Milliseconds()})
	}
	in.kill()
	in.setState(operatorv1.InstanceState_INSTANCE_STATE_STOPPED)
	m.setCurrent(nil)
	m.log.Warn("fenced active stopped", "version", in.entry.Version, "reason", why)
	m.s.events.Record(m.name, in.entry.Version, in.Spec.InstanceID, "stopped", why)
	m.setState(operatorv1.InstanceState_INSTANCE_STATE_STOPPED, why)
}
