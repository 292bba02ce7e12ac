package supervisor

import (
	"time"

	"github.com/plughost/plughost/host/governance"
	"github.com/plughost/plughost/host/sandbox"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// Status is a plugin's state on this node.
type Status struct {
	Name          string
	Desired       string
	Pinned        string
	Running       string
	State         operatorv1.InstanceState
	Since         time.Time
	Restarts      int
	LastError     string
	FailedVersion string
	// Swapping is true while a version swap (or first start) is under way.
	Swapping bool
	// Assigned is true when this node is assigned the plugin; Role and
	// Epoch are those of its instance here.
	Assigned  bool
	Role      string
	Epoch     int64
	Services  []string
	Instances []InstanceStatus
}

// InstanceStatus is one instance's state on this node.
type InstanceStatus struct {
	ID       string
	Version  string
	State    operatorv1.InstanceState
	Since    time.Time
	Pid      int
	Limits   []governance.LimitStatus
	Usage    *governance.Usage
	Restarts int
	// Sandbox says how the process is confined; nil without a sandbox.
	Sandbox []sandbox.Part
}

func (m *managed) status() Status {
	m.mu.Lock()
	st := Status{
		Name:          m.name,
		Desired:       m.desired,
		Pinned:        m.pinned,
		State:         m.state,
		Since:         m.since,
		Restarts:      m.restarts,
		LastError:     m.lastErr,
		FailedVersion: m.failed,
		Swapping:      m.swapping,
		Assigned:      m.assign != nil,
		Role:          m.role,
		Epoch:         m.epoch,
		Services:      append([]string(nil), m.services...),
	}
	cur := m.cur
	m.mu.Unlock()
	if cur != nil {
		st.Running = cur.entry.Version
		st.Instances = append(st.Instances, cur.status(st.Restarts))
	}
	return st
}

func (in *instance) status(restarts int) InstanceStatus {
	state, since := in.getState()
	is := InstanceStatus{
		ID: in.Spec.InstanceID, Version: in.entry.Version, State: state, Since: since,
		Pid: in.Pid, Limits: in.limits, Restarts: restarts, Sandbox: in.sandbox,
	}
	if in.group != nil {
		if u, err := in.group.Usage(); err == nil {
			is.Usage = &u
		}
	}
	return is
}
