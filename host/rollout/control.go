package rollout

import (
	"fmt"
	"time"

	"github.com/plughost/plughost/host/intent"
)

// Control applies an operator's request to r, once: a request for another
// rollout, or not committed after the last one applied (by store
// revision: c.ModRevision against r.ControlRev; At is another node's
// clock), changes nothing (applied is false). Pause stops a running or
// rolling-back rollout where it is; resume restarts the health gate of the
// domains in progress and goes on, unless a node of them fell back (it
// does not try that version again by itself until it is pinned again:
// the resume is refused, saying so); abort rolls back now (RestoreData:
// and restores the data once the old version serves again), marking To
// failed cluster-wide. A request that does not apply to r's state is
// recorded as applied, and noted.
func Control(r *intent.Rollout, it intent.Item[intent.RolloutControl], v View) (notes []Note, failed *intent.VersionFailure, applied bool) {
	c := it.Value
	if c.ID != r.ID || it.ModRevision <= r.ControlRev {
		return nil, nil, false
	}
	if r.ControlRev == 0 && !r.ControlAt.IsZero() && c.At.Equal(r.ControlAt) {
		return nil, nil, false // applied before revisions were recorded
	}
	r.ControlRev, r.ControlAt = it.ModRevision, c.At
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
		if node, version := s.fellBack(); node != "" {
			s.note(Note{Type: EventRequest, Node: node, Reason: "resume by " + by + " refused: " + node + " fell back from " + version + " and " +
				retryHint(r, version)})
			break
		}
		r.State, r.Paused, r.Failure, r.FailedNode = r.Paused, "", "", ""
		if r.Restored.IsZero() {
			r.Restoring = time.Time{} // the operator asks the restore (again)
		}
		r.Progressed = s.v.Now
		for i := range r.Domains {
			if d := &r.Domains[i]; d.Phase == intent.DomainUpdating || d.Phase == intent.DomainRollingBack {
				s.restartGate(d)
			}
		}
		s.note(Note{Type: EventResumed, Reason: "resumed by " + by})
	case c.Action == intent.ControlAbort:
		if r.Back() {
			switch {
			case c.RestoreData:
				r.Restoring = time.Time{} // asked (again)
			case !r.Restoring.IsZero() && r.Restored.IsZero():
				r.RestoreData = false // a restore with no recorded outcome: not again
			}
			r.RestoreData = r.RestoreData || c.RestoreData
			r.State, r.Paused, r.Progressed = intent.RolloutRollingBack, "", s.v.Now
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

// fellBack names a failed node of a domain in progress, and the version,
// whose fallback from the domain's version counts (see View.GateRev): its
// own swap gave up on that version, and it does not try it again until
// the plugin is pinned again.
func (s *stepper) fellBack() (node, version string) {
	for _, d := range s.r.Domains {
		if d.Phase != intent.DomainUpdating && d.Phase != intent.DomainRollingBack {
			continue
		}
		for _, n := range d.Nodes {
			if f, ok := s.v.Failed[n.Name][d.Version]; ok && n.Phase == intent.NodeFailed && f.Rev > s.v.GateRev {
				return n.Name, d.Version
			}
		}
	}
	return "", ""
}

// retryHint says that a node that fell back from version does not try it
// again by itself, and what an operator can do (the CLI shows it as is).
func retryHint(r *intent.Rollout, version string) string {
	return fmt.Sprintf(intent.NoRetry+": 'plughost plugin pin %s %s' has it try again, then 'plughost rollout resume %s'; or 'plughost rollout abort %s' rolls back",
		r.Plugin, version, r.ID, r.ID)
}
