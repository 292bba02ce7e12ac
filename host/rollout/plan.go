package rollout

import (
	"fmt"
	"sort"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/controller"
	"github.com/plughost/plughost/host/intent"
)

// Want is what a plugin's records say, the input of Plan.
type Want struct {
	Now    time.Time
	Intent intent.Intent
	// Pin is the plugin's pin; nil when it is not pinned.
	Pin *catalog.Pin
	// Latest is the plugin's newest rollout; nil when it has had none.
	Latest *intent.Rollout
	// Assigned is, by node, the version each node is assigned.
	Assigned map[string]string
	Nodes    map[string]NodeView
	// Failed are the plugin's cluster-wide version failures, by version,
	// with the store revision each was written at.
	Failed map[string]intent.Item[intent.VersionFailure]
	// LatestRev is the ModRevision of Latest's record as read.
	LatestRev int64
	// Upgrade is the upgrade block of the intent's version's manifest.
	Upgrade bundle.Upgrade
	// Registrant is who registered the intent's version.
	Registrant string
}

// Settled is the version a plugin runs when no rollout moves it: its
// newest rollout's target, else what most of its nodes are assigned.
func Settled(latest *intent.Rollout, assigned map[string]string) string {
	if latest != nil {
		return latest.Target()
	}
	vs := make([]string, 0, len(assigned))
	for _, v := range assigned {
		vs = append(vs, v)
	}
	return controller.SettledVersion(vs, "")
}

// Plan returns the rollout that should start for w's plugin, or nil and
// why none (empty when nothing is asked). A rollout starts when the
// intent's version is not the settled one (or, while a rollout is
// unfinished, not its target: the new one supersedes it) and the plugin
// is assigned somewhere; not towards a version that failed cluster-wide
// since it was last pinned (or at all, when unpinned), nor for an unpinned
// target whose policy is manual.
func Plan(w Want) (*intent.Rollout, string) {
	to := w.Intent.Version
	if len(w.Assigned) == 0 {
		return nil, ""
	}
	var from string
	if w.Latest != nil && !w.Latest.Done() {
		if w.Latest.Target() == to {
			return nil, ""
		}
		from = w.Latest.From
		if from == to {
			from = w.Latest.To
		}
	} else {
		from = Settled(w.Latest, w.Assigned)
		if from == to {
			if (w.Latest != nil && !mixedBack(w.Latest, to)) || allOn(w.Assigned, to) {
				return nil, ""
			}
			// Nodes left on other versions without a rollout: move them.
			others := map[string]string{}
			for n, v := range w.Assigned {
				if v != to {
					others[n] = v
				}
			}
			from = Settled(nil, others)
		}
	}
	if w.Intent.Pinned && (w.Pin == nil || w.Pin.Version != to) {
		return nil, "the pin and the intent disagree for now"
	}
	// Ordered by store revision, not by At: the pin and the failure are
	// stamped by different nodes' clocks.
	if f, failed := w.Failed[to]; failed && (w.Pin == nil || w.Pin.ModRevision <= f.ModRevision) {
		return nil, fmt.Sprintf("%s failed cluster-wide (%s): pin it to try it again", to, f.Value.Reason)
	}
	if _, failed := w.Failed[to]; !failed && w.Latest != nil && !w.Latest.Done() && w.Latest.Back() && w.Latest.To == to &&
		(w.Pin == nil || w.Pin.ModRevision <= w.LatestRev) {
		// Rolling back away from it, its failure record gone: only a pin
		// made since turns it forward again.
		return nil, fmt.Sprintf("%s rolls back away from %s: pin it to try it again", w.Latest.ID, to)
	}
	if w.Pin == nil && w.Upgrade.Policy == bundle.UpgradeManual {
		return nil, fmt.Sprintf("%s is not pinned and its upgrade policy is manual: pin it to roll it out", to)
	}
	r := &intent.Rollout{Plugin: w.Intent.Plugin, Seq: 1, From: from, To: to, State: intent.RolloutRunning, Created: w.Now, Progressed: w.Now,
		Policy: intent.RolloutPolicy{Mode: w.Upgrade.Policy, Strategy: w.Upgrade.Strategy, MaxParallel: w.Upgrade.MaxParallel,
			MinHealthyTime: w.Upgrade.MinHealthyTime, HealthyDeadline: w.Upgrade.HealthyDeadline,
			ProgressDeadline: w.Upgrade.ProgressDeadline, FailureAction: w.Upgrade.FailureAction}}
	if w.Latest != nil {
		r.Seq = w.Latest.Seq + 1
	}
	r.ID = intent.RolloutID(r.Plugin, r.Seq)
	switch {
	case w.Pin != nil && w.Pin.Action == intent.TriggerRollback:
		r.Trigger, r.Actor, r.RestoreData = intent.TriggerRollback, w.Pin.Actor, w.Pin.RestoreData
		r.Reason = fmt.Sprintf("rolled back to %s by %s", to, w.Pin.Actor)
	case w.Pin != nil:
		r.Trigger, r.Actor = intent.TriggerPin, w.Pin.Actor
		r.Reason = fmt.Sprintf("%s pinned by %s", to, w.Pin.Actor)
	case w.Latest != nil && (w.Latest.Trigger == intent.TriggerPin || w.Latest.Trigger == intent.TriggerRollback):
		r.Trigger = intent.TriggerUnpin
		r.Reason = fmt.Sprintf("unpinned: %s is the highest version", to)
	default:
		r.Trigger, r.Actor = intent.TriggerBundle, w.Registrant
		r.Reason = fmt.Sprintf("%s is the highest version (registered by %s), upgrade policy auto", to, w.Registrant)
	}
	if w.Latest != nil && !w.Latest.Done() {
		r.Reason += "; supersedes " + w.Latest.ID
	}
	r.Reason = clip(r.Reason)
	r.Domains = domains(w.Assigned, w.Nodes)
	for _, d := range r.Domains {
		for _, n := range d.Nodes {
			if nv, member := w.Nodes[n.Name]; member && !nv.Alive {
				r.Straight = append(r.Straight, n.Name)
			}
		}
	}
	return r, ""
}

// mixedBack reports whether latest rolled back leaving a domain on
// another version than to (it began from mixed versions: each domain went
// back to its own).
func mixedBack(latest *intent.Rollout, to string) bool {
	if latest.State != intent.RolloutRolledBack {
		return false
	}
	for _, d := range latest.Domains {
		if d.Version != to {
			return true
		}
	}
	return false
}

func allOn(assigned map[string]string, v string) bool {
	for _, a := range assigned {
		if a != v {
			return false
		}
	}
	return true
}

// domains are the upgrade domains of the nodes assigned the plugin, sorted
// by name, each from what its nodes are assigned now. A member gives a
// node's upgrade domain (a down member keeps its own); a node that is no
// member is in a domain of its own name.
func domains(assigned map[string]string, nodes map[string]NodeView) []intent.RolloutDomain {
	byUD := map[string][]string{}
	for n := range assigned {
		ud := nodes[n].UpgradeDomain
		if ud == "" {
			ud = n
		}
		byUD[ud] = append(byUD[ud], n)
	}
	names := make([]string, 0, len(byUD))
	for ud := range byUD {
		names = append(names, ud)
	}
	sort.Strings(names)
	out := make([]intent.RolloutDomain, 0, len(names))
	for _, ud := range names {
		ns := byUD[ud]
		sort.Strings(ns)
		vs := make([]string, len(ns))
		d := intent.RolloutDomain{Name: ud, Phase: intent.DomainWaiting}
		for i, n := range ns {
			vs[i] = assigned[n]
			d.Nodes = append(d.Nodes, intent.RolloutNode{Name: n, Phase: intent.NodeWaiting, Version: assigned[n]})
		}
		d.From = controller.SettledVersion(vs, "")
		d.Version = d.From
		out = append(out, d)
	}
	return out
}
