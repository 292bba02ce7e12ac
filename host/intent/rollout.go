package intent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/plughost/plughost/host/bundle"
)

// Rollouts (see DESIGN.md "Rollouts"). A version change of a plugin that
// already runs is a rollout, driven by the leader-only rollout controller
// (host/rollout), one upgrade domain at a time:
//
//	rollout/<plugin>/<seq>     the rollout controller: one record a rollout (seq: 10 digits, from 1)
//	rolloutctl/<plugin>        operator requests on the plugin's rollout (pause, resume, abort)
//	vfailed/<plugin>/<version> the rollout controller: a version that failed cluster-wide
//
// The placement controller (host/controller) reads the plugin's newest
// rollout to choose each assignment's version: while it is unfinished, a
// node gets its upgrade domain's Version (Rollout.VersionFor); once it is
// finished, every node gets Rollout.Target (a rolled-back one: each listed
// domain its own From). A plugin with no rollout keeps
// the versions it is assigned, and a plugin assigned nowhere gets its
// intent's version: the first install is not a rollout.

// Key prefixes of the rollout records.
const (
	PrefixRollout     = "rollout/"
	PrefixRolloutCtl  = "rolloutctl/"
	PrefixVersionFail = "vfailed/"
)

// Rollout states.
const (
	// RolloutRunning: moving forward to To, domain by domain.
	RolloutRunning = "running"
	// RolloutRollingBack: moving back to From, newest domain first.
	RolloutRollingBack = "rolling_back"
	// RolloutPaused: waiting for an operator (rollout pause, failure_action
	// pause, or a rollback that could not complete); what serves, serves.
	// Paused says which way it was going.
	RolloutPaused = "paused"
	// RolloutCompleted: every domain assigned To, every up node healthy on
	// it. Pending lists the nodes that were down; Converged is set once
	// they all serve To.
	RolloutCompleted = "completed"
	// RolloutRolledBack: every domain back on From.
	RolloutRolledBack = "rolled_back"
	// RolloutSuperseded: a new target replaced it before it finished
	// (SupersededBy names the new rollout).
	RolloutSuperseded = "superseded"
)

// Domain phases, in Rollout.Domains.
const (
	DomainWaiting     = "waiting"      // not its turn: its nodes keep From
	DomainUpdating    = "updating"     // assigned To; the health gate runs
	DomainDone        = "done"         // every up node healthy on To for min_healthy_time
	DomainRollingBack = "rolling_back" // assigned From again; the gate runs on From
	DomainRolledBack  = "rolled_back"  // every up node healthy on From again
)

// Node phases, in RolloutDomain.Nodes.
const (
	NodeWaiting  = "waiting"  // its domain's turn has not come
	NodeUpdating = "updating" // assigned the domain's Version, not yet through the gate
	NodeHealthy  = "healthy"  // through the gate on the domain's Version
	NodeFailed   = "failed"   // fell back, crashed or was not healthy in time
	NodeDown     = "down"     // down when its turn came: skipped by the gate, assigned anyway
)

// Upgrade policies (manifest upgrade.policy).
const (
	PolicyAuto   = "auto"   // a newer bundle of an unpinned plugin is rolled out by itself
	PolicyManual = "manual" // only an operator's pin starts a rollout
)

// Failure actions (manifest upgrade.failure_action).
const (
	FailureRollback = "rollback"
	FailurePause    = "pause"
)

// Rollout triggers.
const (
	TriggerPin      = "pin"
	TriggerUnpin    = "unpin"
	TriggerRollback = "rollback"
	TriggerBundle   = "bundle" // a newer bundle of an unpinned plugin
)

// RolloutPolicy is how a rollout moves: the target version's manifest
// upgrade block, with its defaults applied.
type RolloutPolicy struct {
	Mode             string          `json:"mode"` // PolicyAuto or PolicyManual
	Strategy         string          `json:"strategy"`
	MaxParallel      int             `json:"max_parallel"`
	MinHealthyTime   bundle.Duration `json:"min_healthy_time"`
	HealthyDeadline  bundle.Duration `json:"healthy_deadline"`
	ProgressDeadline bundle.Duration `json:"progress_deadline"`
	FailureAction    string          `json:"failure_action"` // FailureRollback or FailurePause
}

// RolloutNode is one node's part in a rollout.
type RolloutNode struct {
	Name  string `json:"name"`
	Phase string `json:"phase"`
	// Version is what the node last reported serving ("" when nothing).
	Version string `json:"version,omitempty"`
	// HealthySince is when the controller first saw it healthy on the
	// domain's Version, without a break since.
	HealthySince time.Time `json:"healthy_since,omitzero"`
	DownSince    time.Time `json:"down_since,omitzero"`
	Since        time.Time `json:"since,omitzero"` // of Phase
	Reason       string    `json:"reason,omitempty"`
	// Restarts is the node's restart count of the plugin when its domain
	// started: a higher count since is a crash.
	Restarts int `json:"restarts,omitempty"`
}

// RolloutDomain is one upgrade domain's part in a rollout.
type RolloutDomain struct {
	Name string `json:"name"`
	// From is the version the domain ran before the rollout; Version is
	// the version its nodes are assigned now.
	From     string        `json:"from"`
	Version  string        `json:"version"`
	Phase    string        `json:"phase"`
	Started  time.Time     `json:"started,omitzero"`
	Finished time.Time     `json:"finished,omitzero"`
	Nodes    []RolloutNode `json:"nodes,omitempty"`
}

// RolloutSnapshot is the namespace snapshot a rollout of a stateful plugin
// took before its first domain, or why it took none.
type RolloutSnapshot struct {
	Namespace string    `json:"namespace"`
	Keys      int       `json:"keys"`
	Bytes     int64     `json:"bytes"`
	SHA256    string    `json:"sha256,omitempty"`
	Revision  int64     `json:"revision,omitempty"` // the store revision it was read at
	Taken     time.Time `json:"taken,omitzero"`
	Skipped   string    `json:"skipped,omitempty"` // why there is none
}

// Rollout is one cluster-wide version change of a plugin.
type Rollout struct {
	ID      string `json:"id"` // "<plugin>-<seq>"
	Plugin  string `json:"plugin"`
	Seq     int64  `json:"seq"`
	From    string `json:"from"`
	To      string `json:"to"`
	Trigger string `json:"trigger"`
	Actor   string `json:"actor,omitempty"`
	Reason  string `json:"reason,omitempty"`

	Policy RolloutPolicy `json:"policy"`
	State  string        `json:"state"`
	// Paused is the state a paused rollout resumes to (running or
	// rolling_back).
	Paused  string          `json:"paused,omitempty"`
	Domains []RolloutDomain `json:"domains"` // in rollout order

	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated,omitzero"`
	Finished time.Time `json:"finished,omitzero"`

	// Failure says why it rolled back or paused, naming the node.
	Failure    string `json:"failure,omitempty"`
	FailedNode string `json:"failed_node,omitempty"`
	// Pending are the nodes that were down when it finished and have not
	// reported its final version since; Converged is when the last did.
	Pending      []string         `json:"pending,omitempty"`
	Converged    time.Time        `json:"converged,omitzero"`
	SupersededBy string           `json:"superseded_by,omitempty"`
	Snapshot     *RolloutSnapshot `json:"snapshot,omitempty"`
	// RestoreData asks the namespace restored to Snapshot once From serves
	// again after a rollback; Restored is when it was.
	RestoreData bool      `json:"restore_data,omitempty"`
	Restored    time.Time `json:"restored,omitzero"`
	// Restoring is when the controller recorded that it was about to
	// restore (before it did): set with Restored zero, a restore may
	// have happened without its outcome recorded, and is not run again
	// unless an operator resumes.
	Restoring time.Time `json:"restoring,omitzero"`
	// ControlRev is the store revision (ModRevision) of the last operator
	// request (rolloutctl/) applied to it: each is applied once, in the
	// order the cluster committed them. ControlAt is that request's At,
	// for display only (another node's clock).
	ControlRev int64     `json:"control_rev,omitempty"`
	ControlAt  time.Time `json:"control_at,omitzero"`
	// Progressed is when it last made progress (the leader's clock): it
	// started, a domain started or finished, or it was resumed.
	// progress_deadline counts from it (from Created when zero).
	Progressed time.Time `json:"progressed,omitzero"`
	// Straight are the nodes that were down when the rollout began: while
	// it moves forward each is assigned To at once, so a node that returns
	// goes straight to the newest target instead of starting From first
	// and being swapped again when its domain's turn comes.
	Straight []string `json:"straight,omitempty"`
}

// RolloutControl is an operator's latest request on a plugin's rollout.
// The API writes it; the rollout controller applies it once (by At) and
// records it in the rollout.
type RolloutControl struct {
	Plugin      string    `json:"plugin"`
	ID          string    `json:"id"`     // the rollout it is for
	Action      string    `json:"action"` // ControlPause, ControlResume or ControlAbort
	RestoreData bool      `json:"restore_data,omitempty"`
	Actor       string    `json:"actor,omitempty"`
	At          time.Time `json:"at"`
}

// NoRetry is in the failure of a rollout paused because a node fell back
// from a version (and in the note of a resume refused for it): the node
// does not try that version again until the plugin is pinned again, so a
// resume alone cannot succeed.
const NoRetry = "does not try it again by itself until it is pinned again"

// Operator requests on a rollout.
const (
	ControlPause  = "pause"
	ControlResume = "resume"
	ControlAbort  = "abort" // roll back now
)

// VersionFailure marks a version that failed cluster-wide: no rollout
// starts towards it again until an operator pins it after it was recorded
// (by store revision: At is for display).
type VersionFailure struct {
	Plugin  string    `json:"plugin"`
	Version string    `json:"version"`
	Rollout string    `json:"rollout"`
	Node    string    `json:"node,omitempty"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}

// RolloutID is the ID of a plugin's seq'th rollout.
func RolloutID(plugin string, seq int64) string { return plugin + "-" + strconv.FormatInt(seq, 10) }

// ParseRolloutID splits an ID into plugin and seq.
func ParseRolloutID(id string) (plugin string, seq int64, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return "", 0, false
	}
	seq, err := strconv.ParseInt(id[i+1:], 10, 64)
	if err != nil || seq <= 0 || !bundle.ValidName(id[:i]) {
		return "", 0, false
	}
	return id[:i], seq, true
}

// RolloutKey is the key of a plugin's seq'th rollout. Keys sort by seq.
func RolloutKey(plugin string, seq int64) string {
	return fmt.Sprintf("%s%s/%010d", PrefixRollout, plugin, seq)
}

// RolloutPrefix is the prefix of a plugin's rollouts.
func RolloutPrefix(plugin string) string { return PrefixRollout + plugin + "/" }

// RolloutCtlKey is the key of a plugin's rollout request.
func RolloutCtlKey(plugin string) string { return PrefixRolloutCtl + plugin }

// VersionFailKey is the key of a version's cluster-wide failure.
func VersionFailKey(plugin, version string) string {
	return PrefixVersionFail + plugin + "/" + version
}

// Key is where the rollout is kept.
func (r *Rollout) Key() string { return RolloutKey(r.Plugin, r.Seq) }

// Key is where the request is kept.
func (r *RolloutControl) Key() string { return RolloutCtlKey(r.Plugin) }

// Key is where the failure is kept.
func (r *VersionFailure) Key() string { return VersionFailKey(r.Plugin, r.Version) }

// Done reports whether the rollout is finished: nothing moves any more
// (a completed rollout may still wait for pending nodes to converge).
func (r *Rollout) Done() bool {
	switch r.State {
	case RolloutCompleted, RolloutRolledBack, RolloutSuperseded:
		return true
	}
	return false
}

// Back reports whether the rollout moves (or moved) back to From.
func (r *Rollout) Back() bool {
	return r.State == RolloutRollingBack || r.State == RolloutRolledBack ||
		(r.State == RolloutPaused && r.Paused == RolloutRollingBack)
}

// Target is the version the rollout moves every node to: To, or From once
// it rolls back.
func (r *Rollout) Target() string {
	if r.Back() {
		return r.From
	}
	return r.To
}

// VersionFor is the version a node of upgrade domain ud is assigned while
// the rollout is unfinished: its domain's Version; a domain the record
// does not list (a node that joined since it began) gets Target. Once
// the rollout is finished, every node gets Target, but for a rolled-back
// rollout's listed domains: each is back on what it ran before (its own
// From: a rollout that superseded another began from mixed versions).
func (r *Rollout) VersionFor(ud string) string {
	if r.Done() && r.State != RolloutRolledBack {
		return r.Target()
	}
	for _, d := range r.Domains {
		switch {
		case d.Name != ud:
		case r.State == RolloutRolledBack && d.From != "":
			return d.From
		case r.State != RolloutRolledBack:
			return d.Version
		}
	}
	return r.Target()
}

// VersionForNode is VersionFor for a node of its own: a node that was down
// when the rollout began (Straight) is assigned To while the rollout moves
// forward, whatever its domain's turn.
func (r *Rollout) VersionForNode(node, ud string) string {
	if !r.Done() && !r.Back() && slices.Contains(r.Straight, node) {
		return r.To
	}
	return r.VersionFor(ud)
}

var rolloutStates = map[string]bool{RolloutRunning: true, RolloutRollingBack: true, RolloutPaused: true,
	RolloutCompleted: true, RolloutRolledBack: true, RolloutSuperseded: true}

var domainPhases = map[string]bool{DomainWaiting: true, DomainUpdating: true, DomainDone: true,
	DomainRollingBack: true, DomainRolledBack: true}

var nodePhases = map[string]bool{NodeWaiting: true, NodeUpdating: true, NodeHealthy: true, NodeFailed: true, NodeDown: true}

// maxRolloutNodes bounds the nodes a rollout record lists.
const maxRolloutNodes = 1024

// Validate checks the rollout.
func (r *Rollout) Validate() error {
	errs := []error{checkPlugin(r.Plugin), checkVersion(r.To), checkText("actor", r.Actor),
		checkText("reason", r.Reason), checkText("failure", r.Failure)}
	if r.From != "" {
		errs = append(errs, checkVersion(r.From))
	}
	if r.Seq <= 0 {
		errs = append(errs, fmt.Errorf("seq %d is not positive", r.Seq))
	}
	if r.ID != RolloutID(r.Plugin, r.Seq) {
		errs = append(errs, fmt.Errorf("id %q is not %q", r.ID, RolloutID(r.Plugin, r.Seq)))
	}
	switch r.Trigger {
	case TriggerPin, TriggerUnpin, TriggerRollback, TriggerBundle:
	default:
		errs = append(errs, fmt.Errorf("trigger %q is not one of pin, unpin, rollback, bundle", r.Trigger))
	}
	if !rolloutStates[r.State] {
		errs = append(errs, fmt.Errorf("state %q is not a rollout state", r.State))
	}
	if r.State == RolloutPaused && r.Paused != RolloutRunning && r.Paused != RolloutRollingBack {
		errs = append(errs, fmt.Errorf("a paused rollout resumes to %q, not running or rolling_back", r.Paused))
	}
	errs = append(errs, r.Policy.Validate())
	if r.FailedNode != "" {
		errs = append(errs, checkNode(r.FailedNode))
	}
	if r.SupersededBy != "" {
		if p, _, ok := ParseRolloutID(r.SupersededBy); !ok || p != r.Plugin {
			errs = append(errs, fmt.Errorf("superseded_by %q is not a rollout of %s", r.SupersededBy, r.Plugin))
		}
	}
	nodes := 0
	seen := map[string]bool{}
	for _, d := range r.Domains {
		if d.Name == "" || len(d.Name) > 128 || seen[d.Name] {
			errs = append(errs, fmt.Errorf("upgrade domain %.64q is empty, too long or listed twice", d.Name))
		}
		seen[d.Name] = true
		errs = append(errs, checkVersion(d.Version))
		if d.From != "" {
			errs = append(errs, checkVersion(d.From))
		}
		if !domainPhases[d.Phase] {
			errs = append(errs, fmt.Errorf("domain %s: phase %q is not a domain phase", d.Name, d.Phase))
		}
		nodes += len(d.Nodes)
		for _, n := range d.Nodes {
			errs = append(errs, checkNode(n.Name), checkText("reason", n.Reason))
			if !nodePhases[n.Phase] {
				errs = append(errs, fmt.Errorf("node %s: phase %q is not a node phase", n.Name, n.Phase))
			}
			if n.Version != "" {
				errs = append(errs, checkVersion(n.Version))
			}
		}
	}
	if nodes > maxRolloutNodes {
		errs = append(errs, fmt.Errorf("%d nodes listed, more than %d", nodes, maxRolloutNodes))
	}
	for _, n := range r.Pending {
		errs = append(errs, checkNode(n))
	}
	if len(r.Straight) > maxRolloutNodes {
		errs = append(errs, fmt.Errorf("%d straight nodes listed, more than %d", len(r.Straight), maxRolloutNodes))
	}
	for _, n := range r.Straight {
		errs = append(errs, checkNode(n))
	}
	if r.Snapshot != nil {
		errs = append(errs, checkText("snapshot", r.Snapshot.Skipped))
		if r.Snapshot.Keys < 0 || r.Snapshot.Bytes < 0 {
			errs = append(errs, errors.New("snapshot counts cannot be negative"))
		}
	}
	return errors.Join(errs...)
}

// Validate checks the policy.
func (p *RolloutPolicy) Validate() error {
	var errs []error
	if p.Mode != PolicyAuto && p.Mode != PolicyManual {
		errs = append(errs, fmt.Errorf("policy %q is not %q or %q", p.Mode, PolicyAuto, PolicyManual))
	}
	if p.FailureAction != FailureRollback && p.FailureAction != FailurePause {
		errs = append(errs, fmt.Errorf("failure_action %q is not %q or %q", p.FailureAction, FailureRollback, FailurePause))
	}
	if p.MaxParallel < 1 {
		errs = append(errs, fmt.Errorf("max_parallel %d is less than 1", p.MaxParallel))
	}
	if p.MinHealthyTime.Duration < 0 || p.HealthyDeadline.Duration <= 0 || p.ProgressDeadline.Duration <= 0 {
		errs = append(errs, fmt.Errorf("min_healthy_time %v, healthy_deadline %v, progress_deadline %v: out of range",
			p.MinHealthyTime, p.HealthyDeadline, p.ProgressDeadline))
	}
	return errors.Join(errs...)
}

// Validate checks the request.
func (r *RolloutControl) Validate() error {
	errs := []error{checkPlugin(r.Plugin), checkText("actor", r.Actor)}
	if p, _, ok := ParseRolloutID(r.ID); !ok || p != r.Plugin {
		errs = append(errs, fmt.Errorf("id %q is not a rollout of %s", r.ID, r.Plugin))
	}
	switch r.Action {
	case ControlPause, ControlResume, ControlAbort:
	default:
		errs = append(errs, fmt.Errorf("action %q is not pause, resume or abort", r.Action))
	}
	return errors.Join(errs...)
}

// Validate checks the failure.
func (r *VersionFailure) Validate() error {
	errs := []error{checkPlugin(r.Plugin), checkVersion(r.Version), checkText("reason", r.Reason)}
	if r.Node != "" {
		errs = append(errs, checkNode(r.Node))
	}
	return errors.Join(errs...)
}

// Rollouts reads a plugin's rollouts, oldest first.
func (db *DB) Rollouts(ctx context.Context, plugin string) ([]Item[Rollout], []error, error) {
	return List[Rollout](ctx, db, RolloutPrefix(plugin))
}

// AllRollouts reads every plugin's rollouts, by plugin, oldest first.
func (db *DB) AllRollouts(ctx context.Context) ([]Item[Rollout], []error, error) {
	return List[Rollout](ctx, db, PrefixRollout)
}

// LatestRollout reads a plugin's newest rollout; found is false when it
// has had none.
func (db *DB) LatestRollout(ctx context.Context, plugin string) (Item[Rollout], bool, error) {
	rs, _, err := db.Rollouts(ctx, plugin)
	if err != nil || len(rs) == 0 {
		return Item[Rollout]{}, false, err
	}
	return rs[len(rs)-1], true, nil
}

// Rollout reads a rollout by ID.
func (db *DB) Rollout(ctx context.Context, id string) (Item[Rollout], bool, error) {
	plugin, seq, ok := ParseRolloutID(id)
	if !ok {
		return Item[Rollout]{}, false, fmt.Errorf("%q is not a rollout ID (PLUGIN-N, as 'plughost rollout list' shows)", id)
	}
	return Get[Rollout](ctx, db, RolloutKey(plugin, seq))
}

// RolloutControl reads a plugin's latest rollout request.
func (db *DB) RolloutControl(ctx context.Context, plugin string) (Item[RolloutControl], bool, error) {
	return Get[RolloutControl](ctx, db, RolloutCtlKey(plugin))
}

// VersionFailures reads a plugin's cluster-wide version failures, by version.
func (db *DB) VersionFailures(ctx context.Context, plugin string) ([]Item[VersionFailure], []error, error) {
	return List[VersionFailure](ctx, db, PrefixVersionFail+plugin+"/")
}
