package rollout

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/plughost/plughost/host/intent"
)

// View is what the controller sees of a plugin's nodes at one moment: the
// input of Step besides the record.
type View struct {
	// Converge, when set, is the version a pending node of a finished
	// rollout must serve to converge (a newer rollout's for its domain);
	// the rollout's target when nil.
	Converge func(node string) string
	Now      time.Time
	// Nodes are the cluster's members by name (left members are not).
	Nodes map[string]NodeView
	// Observed is each node's observation of the plugin.
	Observed map[string]intent.Observation
	// Failed is, by node then version, the node-level fallbacks of the
	// plugin (failed/<node>/<plugin>/<version>).
	Failed map[string]map[string]Fallback
	// GateRev is the store revision after which a fallback counts against
	// a node: the rollout record's CreateRevision, or the plugin's pin's
	// ModRevision when later (a node tries a version that fell back again
	// once it is pinned again). Revisions, not clocks: the fallback is
	// stamped by the node's.
	GateRev int64
	// Assigned are the nodes assigned the plugin now; nil when unknown.
	// A domain's nodes are taken from it when its turn comes, and a node
	// no longer assigned (its instance moved elsewhere) leaves the gate.
	Assigned map[string]bool
}

// NodeView is one member as the gate needs it.
type NodeView struct {
	UpgradeDomain string
	Alive         bool
}

// Fallback is a node's record that a version failed its swap there.
type Fallback struct {
	Reason string
	At     time.Time
	// Rev is the store revision it was recorded at.
	Rev int64
}

// Need is an effect Step cannot have by itself: the controller does it,
// records the outcome, and steps again.
type Need int

// Needs.
const (
	NeedNothing Need = iota
	// NeedSnapshot: take the snapshot before the first domain starts.
	NeedSnapshot
	// NeedRestore: restore the plugin's data (RestoreData) now that its
	// old version serves again; the rollout finishes after.
	NeedRestore
)

// Note is something that happened in a step, for the plugin's events and
// history. Domain is empty for the rollout as a whole.
type Note struct {
	// Type is the event type (the Event* constants).
	Type    string
	Domain  string
	Node    string
	Version string
	Reason  string
	// Outcome, when set, is also written as a history record.
	Outcome string
}

// Event types of rollouts (plugin events; the reason starts with the
// rollout's ID and, for a domain's step, the domain).
const (
	EventStarted         = "rollout-started"
	EventDomainUpdating  = "rollout-domain-updating"
	EventDomainDone      = "rollout-domain-done"
	EventDomainRollback  = "rollout-domain-rolling-back"
	EventDomainRolledBck = "rollout-domain-rolled-back"
	EventNodeDown        = "rollout-node-down"
	EventNodeFailed      = "rollout-node-failed"
	EventFailed          = "rollout-failed"
	EventPaused          = "rollout-paused"
	EventResumed         = "rollout-resumed"
	EventCompleted       = "rollout-completed"
	EventRolledBack      = "rollout-rolled-back"
	EventConverged       = "rollout-converged"
	EventSuperseded      = "rollout-superseded"
	EventRestored        = "rollout-data-restored"
	EventRequest         = "rollout-request" // an operator request that changed nothing
)

// History outcomes of rollouts (catalog.Record Action "rollout").
const (
	OutcomeCompleted  = "completed"
	OutcomeRolledBack = "rolled_back"
	OutcomePaused     = "paused"
	OutcomeSuperseded = "superseded"
)

// maxReason bounds a reason kept in a record.
const maxReason = 512

// Step moves r one step on what v shows, in place: it runs the health gate
// of the domains in progress, fails, rolls back, pauses, starts the next
// domains, finishes, and drops converged pending nodes. It is pure: all it
// does is change r and say what happened (notes), what the controller
// must do first (need: nothing changes then but what is noted), and which
// version, if any, failed cluster-wide.
func Step(r *intent.Rollout, v View) (notes []Note, need Need, failed *intent.VersionFailure) {
	s := &stepper{r: r, v: v}
	switch r.State {
	case intent.RolloutRunning:
		need = s.forward()
	case intent.RolloutRollingBack:
		need = s.back()
	case intent.RolloutCompleted, intent.RolloutRolledBack:
		s.converge()
	}
	return s.notes, need, s.failed
}

type stepper struct {
	r      *intent.Rollout
	v      View
	notes  []Note
	failed *intent.VersionFailure
	// fallback is the version a node of the gate fell back from, when
	// that is why it failed.
	fallback string
}

func (s *stepper) note(n Note) {
	n.Reason = clip(s.r.ID + prefixed(n.Domain) + ": " + n.Reason)
	s.notes = append(s.notes, n)
}

func prefixed(domain string) string {
	if domain == "" {
		return ""
	}
	return ", upgrade domain " + domain
}

// forward is a running rollout's step.
func (s *stepper) forward() Need {
	r := s.r
	if r.Snapshot == nil {
		return NeedSnapshot
	}
	for i := range r.Domains {
		d := &r.Domains[i]
		if d.Phase != intent.DomainUpdating {
			continue
		}
		switch node, why := s.gate(d, r.To); {
		case why != "":
			s.fail(node, why)
			return NeedNothing
		case node == "":
			d.Phase, d.Finished, r.Progressed = intent.DomainDone, s.v.Now, s.v.Now
			s.note(Note{Type: EventDomainDone, Domain: d.Name, Version: d.Version, Reason: fmt.Sprintf("every up node serves %s healthy (%s)", d.Version, nodeList(d))})
		}
	}
	since := r.Progressed
	if since.IsZero() {
		since = r.Created
	}
	if s.v.Now.Sub(since) > r.Policy.ProgressDeadline.Duration {
		// Slow is not failed: what serves is healthy so far. An operator
		// decides (nothing is marked failed).
		s.pause(intent.RolloutRunning, "", fmt.Sprintf("no domain started or finished within progress_deadline %v (since %s); what serves is left serving: 'plughost rollout resume %s' waits another progress_deadline, 'plughost rollout abort %s' rolls back",
			r.Policy.ProgressDeadline, since.UTC().Format(time.RFC3339), r.ID, r.ID))
		return NeedNothing
	}
	active := 0
	for _, d := range r.Domains {
		if d.Phase == intent.DomainUpdating {
			active++
		}
	}
	for i := range r.Domains {
		d := &r.Domains[i]
		if active >= r.Policy.MaxParallel {
			break
		}
		if d.Phase != intent.DomainWaiting {
			continue
		}
		d.Version, d.Phase, d.Started, d.Finished = r.To, intent.DomainUpdating, s.v.Now, time.Time{}
		r.Progressed = s.v.Now
		s.startGate(d)
		active++
		s.note(Note{Type: EventDomainUpdating, Domain: d.Name, Version: r.To, Reason: fmt.Sprintf("moves from %s to %s (%s)", d.From, r.To, nodeList(d))})
	}
	if active > 0 {
		return NeedNothing
	}
	if r.Trigger == intent.TriggerRollback && r.RestoreData && r.Restored.IsZero() {
		return NeedRestore // 'plugin rollback -restore-data', now that the old version serves
	}
	s.finish(intent.RolloutCompleted)
	return NeedNothing
}

// back is a rolling-back rollout's step: the domains this rollout
// started go back to what each ran before it (its own From: a rollout
// that superseded another began from mixed versions), newest first,
// gated the same way. A domain it never started is left as it is.
func (s *stepper) back() Need {
	r := s.r
	for i := range r.Domains {
		d := &r.Domains[i]
		if d.Phase != intent.DomainRollingBack {
			continue
		}
		switch node, why := s.gate(d, d.Version); {
		case why != "":
			why = "the rollback cannot complete: " + why + "; what serves is left serving"
			if s.fallback != "" {
				why += "; " + node + " " + retryHint(r, s.fallback)
			}
			s.pause(intent.RolloutRollingBack, node, why)
			return NeedNothing
		case node == "":
			d.Phase, d.Finished = intent.DomainRolledBack, s.v.Now
			s.note(Note{Type: EventDomainRolledBck, Domain: d.Name, Version: d.Version, Reason: fmt.Sprintf("every up node serves %s healthy again (%s)", d.Version, nodeList(d))})
		}
	}
	active := 0
	var todo []*intent.RolloutDomain
	for i := range r.Domains {
		d := &r.Domains[i]
		switch {
		case d.Phase == intent.DomainRollingBack:
			active++
		case d.Phase != intent.DomainWaiting && d.Phase != intent.DomainRolledBack && d.Version != from(r, d):
			todo = append(todo, d)
		}
	}
	// Newest first: the domains still updating, then those done, by when
	// they started.
	sort.SliceStable(todo, func(i, j int) bool { return todo[i].Started.After(todo[j].Started) })
	for _, d := range todo {
		if active >= r.Policy.MaxParallel {
			break
		}
		d.Version, d.Phase, d.Finished = from(r, d), intent.DomainRollingBack, time.Time{}
		s.startGate(d)
		active++
		s.note(Note{Type: EventDomainRollback, Domain: d.Name, Version: d.Version, Reason: fmt.Sprintf("goes back to %s (%s)", d.Version, nodeList(d))})
	}
	if active > 0 {
		return NeedNothing
	}
	if r.RestoreData && r.Restored.IsZero() {
		return NeedRestore
	}
	s.finish(intent.RolloutRolledBack)
	return NeedNothing
}

// from is what domain d ran before r: its own From (r's when unknown).
func from(r *intent.Rollout, d *intent.RolloutDomain) string {
	if d.From != "" {
		return d.From
	}
	return r.From
}

// startGate starts the health gate of d's nodes, on d.Version, now: the
// nodes of its upgrade domain assigned the plugin now, when known.
func (s *stepper) startGate(d *intent.RolloutDomain) {
	if s.v.Assigned != nil {
		var names []string
		for n := range s.v.Assigned {
			ud := n
			if nv, ok := s.v.Nodes[n]; ok && nv.UpgradeDomain != "" {
				ud = nv.UpgradeDomain
			}
			if ud == d.Name {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		if len(names) > 0 || len(s.v.Assigned) > 0 {
			d.Nodes = d.Nodes[:0]
			for _, n := range names {
				d.Nodes = append(d.Nodes, intent.RolloutNode{Name: n})
			}
		}
	}
	for i := range d.Nodes {
		n := &d.Nodes[i]
		o, seen := s.v.Observed[n.Name]
		*n = intent.RolloutNode{Name: n.Name, Phase: intent.NodeUpdating, Since: s.v.Now, Restarts: o.Restarts}
		if seen {
			n.Version = o.Version
		}
		if !s.alive(n.Name) {
			n.Phase, n.DownSince, n.Reason = intent.NodeDown, s.v.Now, "down when its domain's turn came: skipped by the health gate, assigned anyway"
			s.note(Note{Type: EventNodeDown, Domain: d.Name, Node: n.Name, Version: d.Version, Reason: n.Name + " is down: skipped by the health gate, assigned " + d.Version + " anyway"})
		}
	}
}

func (s *stepper) alive(node string) bool {
	nv, ok := s.v.Nodes[node]
	return ok && nv.Alive
}

// gate runs the health gate of domain d on version: failed names a node
// and why when one failed; node is "" with why "" when every up node is
// through; else node names one still on its way.
func (s *stepper) gate(d *intent.RolloutDomain, version string) (node, why string) {
	now := s.v.Now
	waiting := ""
	for i := range d.Nodes {
		n := &d.Nodes[i]
		if s.v.Assigned != nil && !s.v.Assigned[n.Name] {
			if n.Phase != intent.NodeHealthy && n.Phase != intent.NodeDown {
				n.Phase, n.Since, n.Reason = intent.NodeDown, now, "no longer assigned the plugin: its instance moved elsewhere"
			}
			continue
		}
		if !s.alive(n.Name) {
			if n.Phase != intent.NodeDown {
				n.Phase, n.DownSince, n.Since, n.HealthySince = intent.NodeDown, now, now, time.Time{}
				n.Reason = "went down during its domain's health gate: skipped by it"
				s.note(Note{Type: EventNodeDown, Domain: d.Name, Node: n.Name, Version: version, Reason: n.Name + " went down: skipped by the health gate"})
			}
			continue
		}
		o, seen := s.v.Observed[n.Name]
		if n.Phase == intent.NodeDown {
			// Back during its domain's gate: it is gated from now on.
			*n = intent.RolloutNode{Name: n.Name, Phase: intent.NodeUpdating, Since: now, Restarts: o.Restarts}
			if seen {
				n.Version = o.Version
			}
		}
		if why := s.check(n, o, seen, version); why != "" {
			n.Phase, n.Since, n.Reason = intent.NodeFailed, now, why
			return n.Name, n.Name + " " + why
		}
		if n.Phase != intent.NodeHealthy && waiting == "" {
			waiting = n.Name
		}
	}
	return waiting, ""
}

// check runs one up node's gate on version, and says why it failed, if
// it did.
func (s *stepper) check(n *intent.RolloutNode, o intent.Observation, seen bool, version string) string {
	r, now := s.r, s.v.Now
	if f, ok := s.v.Failed[n.Name][version]; ok && f.Rev > s.v.GateRev {
		s.fallback = version
		return fmt.Sprintf("fell back from %s: %s", version, clipTo(f.Reason, 160))
	}
	if seen {
		switch {
		case n.Version == "" && n.Restarts == 0:
			n.Restarts = o.Restarts // first report since the gate started
		case o.Version == version && o.Restarts > n.Restarts:
			return clip(fmt.Sprintf("crashed on %s (restarts %d -> %d)%s", version, n.Restarts, o.Restarts, lastError(o)))
		}
		if o.Version != version && n.Version == version {
			return fmt.Sprintf("fell back: it runs %s again after %s served", o.Version, version)
		}
		n.Version = o.Version
		if o.Version == version {
			switch {
			case o.Healthy && n.HealthySince.IsZero():
				// Healthy since the node says: its own swap gates a new
				// instance before it serves, and an instance that kept
				// serving (a rollback where the node had fallen back
				// already) has been healthy all along. Not after now.
				n.HealthySince = o.Since
				if n.HealthySince.IsZero() || n.HealthySince.After(now) {
					n.HealthySince = now
				}
			case !o.Healthy && !n.HealthySince.IsZero():
				return clip(fmt.Sprintf("became unhealthy on %s (state %s) after being healthy since %s%s",
					version, o.State, n.HealthySince.UTC().Format(time.RFC3339), lastError(o)))
			}
		}
	}
	if n.Phase == intent.NodeHealthy {
		return ""
	}
	if !n.HealthySince.IsZero() && now.Sub(n.HealthySince) >= r.Policy.MinHealthyTime.Duration {
		n.Phase, n.Since, n.Reason = intent.NodeHealthy, now, ""
		return ""
	}
	if now.Sub(n.Since) > r.Policy.HealthyDeadline.Duration {
		state := "no report"
		if seen {
			state = fmt.Sprintf("it runs %s, state %s, healthy %v", o.Version, o.State, o.Healthy)
		}
		return clip(fmt.Sprintf("was not healthy on %s for %v within healthy_deadline %v (%s%s)",
			version, r.Policy.MinHealthyTime, r.Policy.HealthyDeadline, state, lastError(o)))
	}
	return ""
}

func lastError(o intent.Observation) string {
	if o.LastError == "" {
		return ""
	}
	return ": " + o.LastError
}

// fail handles a failure of a running rollout (node "" for the rollout as
// a whole): roll back, or pause, as its policy says.
func (s *stepper) fail(node, why string) {
	r := s.r
	r.Failure, r.FailedNode = clip(why), node
	s.note(Note{Type: EventFailed, Node: node, Version: r.To, Reason: why})
	if r.Policy.FailureAction == intent.FailurePause {
		if s.fallback != "" {
			why += "; " + node + " " + retryHint(r, s.fallback)
		}
		s.pause(intent.RolloutRunning, node, why)
		return
	}
	s.rollBack(node, why)
}

// rollBack turns r back to From, and marks To failed cluster-wide.
func (s *stepper) rollBack(node, why string) {
	r := s.r
	r.State, r.Paused = intent.RolloutRollingBack, ""
	if r.Trigger == intent.TriggerRollback {
		// A rollback that fails goes back to the version it moved away
		// from, which wrote since: restoring (this rollout's own
		// snapshot) would lose that.
		r.RestoreData = false
	}
	s.failed = &intent.VersionFailure{Plugin: r.Plugin, Version: r.To, Rollout: r.ID, Node: node, Reason: clip(why), At: s.v.Now}
	// The domains still updating stop there: back() takes them first.
	for i := range r.Domains {
		if d := &r.Domains[i]; d.Phase == intent.DomainUpdating {
			d.Phase = intent.DomainDone
		}
	}
	s.back()
}

// pause stops r where it is, to resume to state.
func (s *stepper) pause(state, node, why string) {
	r := s.r
	r.State, r.Paused = intent.RolloutPaused, state
	r.Failure, r.FailedNode = clip(why), node
	s.note(Note{Type: EventPaused, Node: node, Reason: "paused: " + why, Outcome: OutcomePaused})
}

// finish ends r in state (completed or rolled back); the nodes down at the
// end are pending until they report its target healthy.
func (s *stepper) finish(state string) {
	r := s.r
	r.State, r.Finished = state, s.v.Now
	r.Pending = nil
	for _, d := range r.Domains {
		for _, n := range d.Nodes {
			if n.Phase == intent.NodeDown && !n.DownSince.IsZero() && !slices.Contains(r.Pending, n.Name) {
				r.Pending = append(r.Pending, n.Name)
			}
		}
	}
	sort.Strings(r.Pending)
	typ, outcome := EventCompleted, OutcomeCompleted
	if state == intent.RolloutRolledBack {
		typ, outcome = EventRolledBack, OutcomeRolledBack
	}
	reason := fmt.Sprintf("%s: every domain on %s", strings.ReplaceAll(state, "_", " "), r.Target())
	if r.Failure != "" && state == intent.RolloutRolledBack {
		reason += " after " + r.Failure
	}
	if len(r.Pending) > 0 {
		reason += fmt.Sprintf(", %d node(s) pending: %s (down)", len(r.Pending), strings.Join(r.Pending, ", "))
	}
	s.note(Note{Type: typ, Node: r.FailedNode, Version: r.Target(), Reason: reason, Outcome: outcome})
	s.converge()
}

// converge drops the pending nodes that serve the target healthy (or
// left the cluster), and records when none is left.
func (s *stepper) converge() {
	r := s.r
	if len(r.Pending) == 0 || !r.Converged.IsZero() {
		return
	}
	left := r.Pending[:0:0]
	for _, n := range r.Pending {
		o, seen := s.v.Observed[n]
		_, member := s.v.Nodes[n]
		target := r.Target()
		if s.v.Converge != nil {
			target = s.v.Converge(n)
		}
		switch {
		case !member, s.v.Assigned != nil && !s.v.Assigned[n]:
		case s.alive(n) && seen && o.Version == target && o.Healthy:
			s.returned(n, target)
		default:
			left = append(left, n)
		}
	}
	if len(left) == len(r.Pending) {
		return
	}
	r.Pending = left
	if len(left) == 0 {
		r.Pending, r.Converged = nil, s.v.Now
		reason := "every node that was down serves " + r.Target()
		if s.v.Converge != nil {
			reason = "every node that was down serves what a newer rollout gives it"
		}
		s.note(Note{Type: EventConverged, Version: r.Target(), Reason: reason})
	}
}

// returned records that node, pending since it was down, serves target now:
// its phase is healthy again (DownSince stays, to say it was down).
func (s *stepper) returned(node, target string) {
	for i := range s.r.Domains {
		for j := range s.r.Domains[i].Nodes {
			if n := &s.r.Domains[i].Nodes[j]; n.Name == node && n.Phase == intent.NodeDown {
				n.Phase, n.Since, n.Version = intent.NodeHealthy, s.v.Now, target
				n.Reason = "back after being down: serves " + target
			}
		}
	}
}

func nodeList(d *intent.RolloutDomain) string {
	if len(d.Nodes) == 0 {
		return "no nodes"
	}
	names := make([]string, len(d.Nodes))
	for i, n := range d.Nodes {
		names[i] = n.Name
		if n.Phase == intent.NodeDown {
			names[i] += " down"
		}
	}
	return "nodes " + strings.Join(names, ", ")
}

func clip(s string) string { return clipTo(s, maxReason) }

func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
