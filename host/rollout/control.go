package rollout

import (
	"time"

	"github.com/plughost/plughost/host/intent"
)

// Control applies an operator's request to r, once: a request for another
// rollout, or whose At is not after the last one applied, changes nothing
// (applied is false). Pause stops a running or rolling-back rollout where
// it is; resume restarts the health gate of the domains in progress and
// goes on; abort rolls back now (RestoreData: and restores the data once
// the old version serves again), marking To failed cluster-wide. A request
// that does not apply to r's state is recorded as applied, and noted.
func Control(r *intent.Rollout, c intent.RolloutControl, v View) (notes []Note, failed *intent.VersionFailure, applied bool) {
	if c.ID != r.ID || !c.At.After(r.ControlAt) {
		return nil, nil, false
	}
	r.ControlAt = c.At
	s := &stepper{r: r, v: v}
	by := c.Actor
	if by == "" {
		by = "an operator"
	}
	switch {
	case r.Done():
		s.note(Note{Type: EventRequest, Reason: c.Action + " by " + by + " ignored: the rollout is " + r.State})
	case c.Action == intent.ControlPause && r.State != intent.RolloutPaused:
		s.pause(r.State, "", "paused by "+by)
	case c.Action == intent.ControlResume && r.State == intent.RolloutPaused:
		r.State, r.Paused, r.Failure, r.FailedNode = r.Paused, "", "", ""
		for i := range r.Domains {
			if d := &r.Domains[i]; d.Phase == intent.DomainUpdating || d.Phase == intent.DomainRollingBack {
				s.restartGate(d)
			}
		}
		s.note(Note{Type: EventResumed, Reason: "resumed by " + by})
	case c.Action == intent.ControlAbort:
		if r.Back() {
			r.RestoreData = r.RestoreData || c.RestoreData
			r.State, r.Paused = intent.RolloutRollingBack, ""
			for i := range r.Domains {
				if d := &r.Domains[i]; d.Phase == intent.DomainRollingBack {
					s.restartGate(d)
				}
			}
			s.note(Note{Type: EventResumed, Reason: "abort by " + by + ": rolling back again"})
			break
		}
		why := "aborted by " + by
		r.Failure, r.FailedNode = why, ""
		s.note(Note{Type: EventFailed, Version: r.To, Reason: why + ": rolling back"})
		s.rollBack("", why)
		if c.RestoreData {
			// Asked with the abort: what the rollout's snapshot holds,
			// a rollback's too.
			r.RestoreData = true
		}
	default:
		s.note(Note{Type: EventRequest, Reason: c.Action + " by " + by + " changes nothing: the rollout is " + r.State})
	}
	return s.notes, s.failed, true
}

// restartGate starts d's gate again from now, on its version, for the
// nodes that are not through it.
func (s *stepper) restartGate(d *intent.RolloutDomain) {
	for i := range d.Nodes {
		n := &d.Nodes[i]
		if n.Phase == intent.NodeFailed || n.Phase == intent.NodeUpdating {
			n.Phase, n.Since, n.HealthySince, n.Reason = intent.NodeUpdating, s.v.Now, time.Time{}, ""
			n.Version, n.Restarts = "", 0 // the next report is the baseline
		}
	}
}
