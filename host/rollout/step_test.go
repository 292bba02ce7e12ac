package rollout

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/intent"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func policy() intent.RolloutPolicy {
	return intent.RolloutPolicy{Mode: intent.PolicyAuto, Strategy: bundle.StrategyOverlap, MaxParallel: 1,
		MinHealthyTime: bundle.Dur(2 * time.Second), HealthyDeadline: bundle.Dur(10 * time.Second),
		ProgressDeadline: bundle.Dur(10 * time.Minute), FailureAction: intent.FailureRollback}
}

// newRollout is a rollout of echo from 1.0.0 to 1.1.0 over n upgrade
// domains ud1..udn of one node each (n1..nn), its snapshot taken.
func newRollout(n int) *intent.Rollout {
	r := &intent.Rollout{ID: "echo-1", Plugin: "echo", Seq: 1, From: "1.0.0", To: "1.1.0", Trigger: intent.TriggerPin,
		Policy: policy(), State: intent.RolloutRunning, Created: t0, Snapshot: &intent.RolloutSnapshot{Skipped: "none"}}
	for i := 1; i <= n; i++ {
		r.Domains = append(r.Domains, intent.RolloutDomain{Name: fmt.Sprint("ud", i), From: "1.0.0", Version: "1.0.0",
			Phase: intent.DomainWaiting, Nodes: []intent.RolloutNode{{Name: fmt.Sprint("n", i), Phase: intent.NodeWaiting}}})
	}
	if err := r.Validate(); err != nil {
		panic(err)
	}
	return r
}

// cluster is a simulated cluster: each up node reports, at once, the
// version its domain is assigned, healthy unless that version is bad on
// it; the clock moves a tick a step.
type cluster struct {
	now      time.Time
	down     map[string]bool
	bad      map[string]string // node -> version that never gets healthy there
	restarts map[string]int
	failed   map[string]map[string]Fallback
	// lag keeps a node on its old version for that many steps after its
	// assignment changes.
	events []Note
	vfail  *intent.VersionFailure
	// since is when, relative to now, nodes say their state began.
	since time.Duration
}

func newCluster() *cluster {
	return &cluster{now: t0, down: map[string]bool{}, bad: map[string]string{}, restarts: map[string]int{}, failed: map[string]map[string]Fallback{}}
}

func (c *cluster) view(r *intent.Rollout) View {
	v := View{Now: c.now, Nodes: map[string]NodeView{}, Observed: map[string]intent.Observation{}, Failed: c.failed}
	for _, d := range r.Domains {
		for _, n := range d.Nodes {
			v.Nodes[n.Name] = NodeView{UpgradeDomain: d.Name, Alive: !c.down[n.Name]}
			if c.down[n.Name] {
				continue
			}
			ver := r.VersionFor(d.Name)
			v.Observed[n.Name] = intent.Observation{Node: n.Name, Plugin: r.Plugin, Version: ver, State: "running",
				Healthy: c.bad[n.Name] != ver, Restarts: c.restarts[n.Name], Since: c.now.Add(c.since)}
		}
	}
	return v
}

// step runs one step at the current time, then moves the clock.
func (c *cluster) step(t *testing.T, r *intent.Rollout) Need {
	t.Helper()
	notes, need, f := Step(r, c.view(r))
	c.events = append(c.events, notes...)
	if f != nil {
		if c.vfail != nil {
			t.Fatalf("a second version failure: %+v", f)
		}
		c.vfail = f
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("the step left an invalid record: %v", err)
	}
	c.now = c.now.Add(250 * time.Millisecond)
	return need
}

// run steps until r is finished or paused, at most a simulated hour.
func (c *cluster) run(t *testing.T, r *intent.Rollout) {
	t.Helper()
	for range 4 * 3600 {
		if r.Done() || r.State == intent.RolloutPaused {
			return
		}
		c.step(t, r)
	}
	t.Fatalf("rollout still %s after a simulated hour: %+v", r.State, r)
}

// order is the domains of the notes of type typ, in order.
func (c *cluster) order(typ string) []string {
	var out []string
	for _, n := range c.events {
		if n.Type == typ {
			out = append(out, n.Domain)
		}
	}
	return out
}

func TestSnapshotBeforeTheFirstDomain(t *testing.T) {
	r := newRollout(2)
	r.Snapshot = nil
	c := newCluster()
	if need := c.step(t, r); need != NeedSnapshot {
		t.Fatalf("need %v, want NeedSnapshot", need)
	}
	if r.Domains[0].Phase != intent.DomainWaiting {
		t.Errorf("a domain started before the snapshot: %+v", r.Domains[0])
	}
}

func TestHealthyRolloutGoesDomainByDomain(t *testing.T) {
	r := newRollout(3)
	c := newCluster()
	c.step(t, r)
	if r.Domains[0].Phase != intent.DomainUpdating || r.Domains[0].Version != "1.1.0" || r.Domains[1].Phase != intent.DomainWaiting {
		t.Fatalf("after the first step: %+v", r.Domains)
	}
	// The gate holds for min_healthy_time (2 s) from the first healthy
	// report, not less.
	for range 8 {
		c.step(t, r)
	}
	if r.Domains[0].Phase != intent.DomainUpdating || r.Domains[1].Phase != intent.DomainWaiting {
		t.Fatalf("ud1 left its gate before min_healthy_time: %+v", r.Domains)
	}
	c.step(t, r)
	if r.Domains[0].Phase != intent.DomainDone || r.Domains[1].Phase != intent.DomainUpdating {
		t.Fatalf("ud1 did not pass its gate after min_healthy_time: %+v", r.Domains)
	}
	c.run(t, r)
	if r.State != intent.RolloutCompleted || len(r.Pending) != 0 || r.Target() != "1.1.0" {
		t.Fatalf("finished %s pending %v", r.State, r.Pending)
	}
	if got, want := c.order(EventDomainUpdating), []string{"ud1", "ud2", "ud3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("domain order %v, want %v", got, want)
	}
	if got := c.order(EventDomainDone); !reflect.DeepEqual(got, []string{"ud1", "ud2", "ud3"}) {
		t.Errorf("domains done %v", got)
	}
	for _, d := range r.Domains {
		if d.Nodes[0].Phase != intent.NodeHealthy || d.Nodes[0].HealthySince.IsZero() {
			t.Errorf("%s: %+v", d.Name, d.Nodes[0])
		}
	}
	if c.events[len(c.events)-1].Outcome != OutcomeCompleted {
		t.Errorf("last note %+v, want the completed outcome", c.events[len(c.events)-1])
	}
}

// A node's own report of since when it is healthy counts (its swap gated
// the instance before it served), but not later than now.
func TestHealthySinceFromTheNode(t *testing.T) {
	c := newCluster()
	r := newRollout(1)
	c.step(t, r)
	c.since = -100 * time.Millisecond
	c.step(t, r) // at +0.25s it says healthy since +0.15s
	if hs, want := r.Domains[0].Nodes[0].HealthySince, c.now.Add(-250*time.Millisecond-100*time.Millisecond); !hs.Equal(want) {
		t.Errorf("healthy since %v, want what the node said, %v", hs, want)
	}
	c.since = time.Hour // a clock ahead: no later than now
	r = newRollout(1)
	c.step(t, r)
	c.step(t, r)
	if hs, want := r.Domains[0].Nodes[0].HealthySince, c.now.Add(-250*time.Millisecond); !hs.Equal(want) {
		t.Errorf("healthy since %v, want now %v", hs, want)
	}
	// A node that fell back by itself kept serving the old version: its
	// rollback gate passes at once.
	c = newCluster()
	c.since = -time.Hour
	c.bad["n1"] = "1.1.0"
	r = newRollout(1)
	for r.State == intent.RolloutRunning {
		c.step(t, r)
	}
	c.step(t, r)
	if r.State != intent.RolloutRolledBack {
		t.Errorf("state %s, want rolled back a step after the failure", r.State)
	}
}

func TestMaxParallel(t *testing.T) {
	r := newRollout(5)
	r.Policy.MaxParallel = 2
	c := newCluster()
	c.step(t, r)
	var updating []string
	for _, d := range r.Domains {
		if d.Phase == intent.DomainUpdating {
			updating = append(updating, d.Name)
		}
	}
	if !reflect.DeepEqual(updating, []string{"ud1", "ud2"}) {
		t.Fatalf("updating %v, want ud1 ud2", updating)
	}
	c.run(t, r)
	if r.State != intent.RolloutCompleted {
		t.Fatal(r.State)
	}
}

// A failure in the third domain rolls back the third, second and first,
// in that order, each gated on From, and marks To failed cluster-wide.
func TestFailureRollsBackNewestFirst(t *testing.T) {
	for _, tt := range []struct {
		name   string
		break_ func(c *cluster)
		why    string
		// reported: n3 reports healthy once before it breaks
		reported bool
	}{
		{"never healthy", func(c *cluster) { c.bad["n3"] = "1.1.0" }, "n3 was not healthy on 1.1.0 for 2s within healthy_deadline 10s", false},
		{"fell back", func(c *cluster) {
			c.failed["n3"] = map[string]Fallback{"1.1.0": {Reason: "health check failed", At: t0.Add(-time.Hour), Rev: 1}}
		}, "n3 fell back from 1.1.0: health check failed", false},
		{"crashed", func(c *cluster) { c.restarts["n3"] = 1 }, "n3 crashed on 1.1.0 (restarts 0 -> 1)", true},
		{"unhealthy after healthy", func(c *cluster) { c.bad["n3"] = "1.1.0" }, "n3 became unhealthy on 1.1.0 (state running) after being healthy since", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRollout(4)
			c := newCluster()
			for r.Domains[2].Phase != intent.DomainUpdating {
				c.step(t, r)
			}
			if tt.reported {
				c.step(t, r)
			}
			tt.break_(c)
			c.run(t, r)
			if r.State != intent.RolloutRolledBack {
				t.Fatalf("state %s (failure %q)", r.State, r.Failure)
			}
			if !strings.HasPrefix(r.Failure, tt.why) || r.FailedNode != "n3" {
				t.Errorf("failure %q on %q, want %q on n3", r.Failure, r.FailedNode, tt.why)
			}
			if got, want := c.order(EventDomainRollback), []string{"ud3", "ud2", "ud1"}; !reflect.DeepEqual(got, want) {
				t.Errorf("rollback order %v, want %v", got, want)
			}
			for _, d := range r.Domains {
				if d.Version != "1.0.0" {
					t.Errorf("%s on %s after the rollback", d.Name, d.Version)
				}
			}
			if r.Domains[3].Phase != intent.DomainWaiting {
				t.Errorf("ud4, never moved, is %s", r.Domains[3].Phase)
			}
			if c.vfail == nil || c.vfail.Version != "1.1.0" || c.vfail.Node != "n3" || c.vfail.Rollout != "echo-1" {
				t.Errorf("version failure %+v", c.vfail)
			}
			if r.Target() != "1.0.0" {
				t.Errorf("target %s", r.Target())
			}
		})
	}
}

func TestFailureActionPause(t *testing.T) {
	r := newRollout(2)
	r.Policy.FailureAction = intent.FailurePause
	c := newCluster()
	c.bad["n1"] = "1.1.0"
	c.run(t, r)
	if r.State != intent.RolloutPaused || r.Paused != intent.RolloutRunning || r.FailedNode != "n1" || c.vfail != nil {
		t.Fatalf("state %s paused %s failed %q vfail %+v", r.State, r.Paused, r.FailedNode, c.vfail)
	}
	if r.Domains[0].Version != "1.1.0" {
		t.Errorf("a paused rollout moved ud1 back to %s", r.Domains[0].Version)
	}
	// Paused, nothing moves.
	before := fmt.Sprintf("%+v", r)
	c.step(t, r)
	if fmt.Sprintf("%+v", r) != before {
		t.Error("a step changed a paused rollout")
	}
}

// A rollback that cannot pass its gate pauses, leaving what serves.
func TestRollbackThatCannotCompletePauses(t *testing.T) {
	r := newRollout(2)
	c := newCluster()
	c.bad["n2"] = "1.1.0"
	c.bad["n1"] = "1.0.0" // n1 cannot go back either
	c.run(t, r)
	if r.State != intent.RolloutPaused || r.Paused != intent.RolloutRollingBack || r.FailedNode != "n1" {
		t.Fatalf("state %s paused %s failed %q: %s", r.State, r.Paused, r.FailedNode, r.Failure)
	}
	if !strings.Contains(r.Failure, "the rollback cannot complete") {
		t.Errorf("failure %q", r.Failure)
	}
}

// A down node is skipped by the gate and left pending; it converges once
// it reports the target healthy.
func TestDownNodePendingThenConverged(t *testing.T) {
	r := newRollout(3)
	c := newCluster()
	c.down["n2"] = true
	c.run(t, r)
	if r.State != intent.RolloutCompleted || !reflect.DeepEqual(r.Pending, []string{"n2"}) || !r.Converged.IsZero() {
		t.Fatalf("state %s pending %v converged %v", r.State, r.Pending, r.Converged)
	}
	if n := r.Domains[1].Nodes[0]; n.Phase != intent.NodeDown || n.DownSince.IsZero() || r.Domains[1].Version != "1.1.0" {
		t.Errorf("ud2: %+v", r.Domains[1])
	}
	c.step(t, r)
	if len(r.Pending) != 1 {
		t.Fatal("a pending node converged while down")
	}
	delete(c.down, "n2")
	c.step(t, r)
	if len(r.Pending) != 0 || r.Converged.IsZero() {
		t.Fatalf("pending %v converged %v after n2 came back on 1.1.0", r.Pending, r.Converged)
	}
	if got := c.order(EventConverged); len(got) != 1 {
		t.Errorf("converged notes %v", got)
	}
	if n := r.Domains[1].Nodes[0]; n.Phase != intent.NodeHealthy || n.DownSince.IsZero() {
		t.Errorf("n2 back on 1.1.0 is %s (down since %v), want healthy with its down time kept", n.Phase, n.DownSince)
	}
}

// A node down when a rollout begins goes straight to its target when it
// returns, before its domain's turn; back to From if the rollout rolls
// back.
func TestDownNodeGoesStraightToTheTarget(t *testing.T) {
	up := bundle.Upgrade{Strategy: bundle.StrategyOverlap, Policy: bundle.UpgradeAuto, MaxParallel: 1, MinHealthyTime: bundle.Dur(time.Second),
		HealthyDeadline: bundle.Dur(time.Minute), ProgressDeadline: bundle.Dur(10 * time.Minute), FailureAction: bundle.FailureRollback}
	r, why := Plan(Want{Now: t0, Intent: intent.Intent{Plugin: "echo", Version: "1.1.0"}, Upgrade: up, Registrant: "ci",
		Assigned: map[string]string{"n1": "1.0.0", "n2": "1.0.0", "n3": "1.0.0"},
		Nodes:    map[string]NodeView{"n1": {UpgradeDomain: "a", Alive: true}, "n2": {UpgradeDomain: "b", Alive: true}, "n3": {UpgradeDomain: "c"}}})
	if r == nil {
		t.Fatalf("no rollout: %s", why)
	}
	if !reflect.DeepEqual(r.Straight, []string{"n3"}) {
		t.Fatalf("straight %v, want [n3]", r.Straight)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := r.VersionForNode("n3", "c"); got != "1.1.0" {
		t.Errorf("n3, down at the start, is assigned %s while domain c waits; want 1.1.0", got)
	}
	if got := r.VersionForNode("n2", "b"); got != "1.0.0" {
		t.Errorf("n2 is assigned %s before its turn", got)
	}
	r.State = intent.RolloutRollingBack
	if got := r.VersionForNode("n3", "c"); got != "1.0.0" {
		t.Errorf("rolling back: n3 is assigned %s, want 1.0.0", got)
	}
}

// A rolled-back rollout's pending nodes converge to From.
func TestDownNodeConvergesBack(t *testing.T) {
	r := newRollout(3)
	c := newCluster()
	c.down["n1"] = true
	c.bad["n2"] = "1.1.0"
	c.run(t, r)
	if r.State != intent.RolloutRolledBack || !reflect.DeepEqual(r.Pending, []string{"n1"}) {
		t.Fatalf("state %s pending %v", r.State, r.Pending)
	}
	if r.VersionFor("ud1") != "1.0.0" {
		t.Fatalf("n1's domain gets %s", r.VersionFor("ud1"))
	}
	delete(c.down, "n1")
	c.step(t, r)
	if r.Converged.IsZero() || len(r.Pending) != 0 {
		t.Fatalf("n1 back on 1.0.0: pending %v", r.Pending)
	}
}

// A domain's nodes are those assigned the plugin when its turn comes; a
// node whose instance moved away leaves the gate, and is not pending.
func TestNodesAssignedNow(t *testing.T) {
	r := newRollout(3)
	r.Domains[1].Nodes = append(r.Domains[1].Nodes, intent.RolloutNode{Name: "n9", Phase: intent.NodeWaiting})
	c := newCluster()
	view := func() View {
		v := c.view(r)
		v.Assigned = map[string]bool{"n1": true, "n2": true, "n3": true, "n7": true}
		v.Nodes["n7"] = NodeView{UpgradeDomain: "ud2", Alive: true}
		v.Observed["n7"] = intent.Observation{Node: "n7", Plugin: "echo", Version: r.VersionFor("ud2"), State: "running", Healthy: true, Since: c.now}
		return v
	}
	for range 100 {
		if r.Done() {
			break
		}
		Step(r, view())
		c.now = c.now.Add(250 * time.Millisecond)
		if r.Domains[1].Phase == intent.DomainUpdating {
			var names []string
			for _, n := range r.Domains[1].Nodes {
				names = append(names, n.Name)
			}
			if !reflect.DeepEqual(names, []string{"n2", "n7"}) {
				t.Fatalf("ud2's nodes %v, want n2 n7 (assigned now)", names)
			}
		}
	}
	if r.State != intent.RolloutCompleted || len(r.Pending) != 0 {
		t.Fatalf("state %s pending %v", r.State, r.Pending)
	}
	// n3's instance moves away during its gate: it leaves the gate.
	r = newRollout(2)
	c = newCluster()
	c.step(t, r)
	for range 100 {
		if r.Done() {
			break
		}
		v := c.view(r)
		v.Assigned = map[string]bool{"n1": true, "n2": r.Domains[1].Phase == intent.DomainWaiting}
		delete(v.Observed, "n2")
		Step(r, v)
		c.now = c.now.Add(250 * time.Millisecond)
	}
	if r.State != intent.RolloutCompleted || len(r.Pending) != 0 {
		t.Fatalf("state %s pending %v failure %q", r.State, r.Pending, r.Failure)
	}
}

// progress_deadline counts from the last progress, not from the start: a
// slow but healthy rollout whose domains each finish in time completes
// however long it takes as a whole.
func TestProgressDeadlineCountsFromLastProgress(t *testing.T) {
	r := newRollout(6)
	r.Policy.ProgressDeadline = bundle.Dur(3 * time.Second) // each domain takes about 2s
	c := newCluster()
	c.run(t, r)
	if r.State != intent.RolloutCompleted || c.now.Sub(t0) < 10*time.Second {
		t.Fatalf("state %s (failure %q) after %v", r.State, r.Failure, c.now.Sub(t0))
	}
}

// A rollout that makes no progress within progress_deadline pauses, saying
// so, and marks nothing failed: slow is not failed. Resume gives it another
// progress_deadline.
func TestProgressDeadlinePauses(t *testing.T) {
	r := newRollout(3)
	r.Policy.HealthyDeadline = bundle.Dur(time.Hour)
	r.Policy.ProgressDeadline = bundle.Dur(30 * time.Second)
	c := newCluster()
	c.bad["n2"] = "1.1.0" // up, never healthy: no domain finishes
	c.run(t, r)
	if r.State != intent.RolloutPaused || r.Paused != intent.RolloutRunning || !strings.Contains(r.Failure, "progress_deadline 30s") ||
		r.FailedNode != "" || c.vfail != nil {
		t.Fatalf("state %s (resumes to %s) failure %q node %q version failure %+v", r.State, r.Paused, r.Failure, r.FailedNode, c.vfail)
	}
	if r.Domains[0].Phase != intent.DomainDone || r.Domains[1].Phase != intent.DomainUpdating {
		t.Fatalf("domains %s %s", r.Domains[0].Phase, r.Domains[1].Phase)
	}
	if got := r.Domains[1].Started.Add(30 * time.Second); c.now.Before(got) {
		t.Fatalf("paused at %v, before progress_deadline from ud2's start (%v)", c.now, got)
	}
	paused := c.now
	ctl := intent.Item[intent.RolloutControl]{Value: intent.RolloutControl{Plugin: "echo", ID: "echo-1", Action: intent.ControlResume, Actor: "ada", At: t0}, ModRevision: 5}
	if _, _, ok := Control(r, ctl, c.view(r)); !ok || r.State != intent.RolloutRunning {
		t.Fatalf("resume: applied %v state %s", ok, r.State)
	}
	delete(c.bad, "n2")
	c.run(t, r)
	if r.State != intent.RolloutCompleted {
		t.Fatalf("after resume: state %s failure %q (resumed at %v, now %v)", r.State, r.Failure, paused, c.now)
	}
}

func TestRestoreAfterRollback(t *testing.T) {
	r := newRollout(1)
	r.RestoreData = true
	c := newCluster()
	c.bad["n1"] = "1.1.0"
	var need Need
	for range 1000 {
		if need = c.step(t, r); need != NeedNothing {
			break
		}
	}
	if need != NeedRestore || r.State != intent.RolloutRollingBack || r.Domains[0].Version != "1.0.0" {
		t.Fatalf("need %v state %s", need, r.State)
	}
	r.Restored = c.now
	c.step(t, r)
	if r.State != intent.RolloutRolledBack {
		t.Fatalf("state %s after the restore", r.State)
	}
}

func TestControl(t *testing.T) {
	r := newRollout(3)
	c := newCluster()
	c.step(t, r)
	// Applied in the order of their store revisions; At (another node's
	// clock) plays no part: this one's is a day ahead.
	ctl := intent.Item[intent.RolloutControl]{Value: intent.RolloutControl{Plugin: "echo", ID: "echo-1", Action: intent.ControlPause, Actor: "ada", At: t0.Add(24 * time.Hour)}, ModRevision: 10}
	if _, _, ok := Control(r, ctl, c.view(r)); !ok || r.State != intent.RolloutPaused || r.Paused != intent.RolloutRunning {
		t.Fatalf("pause: applied %v state %s", ok, r.State)
	}
	if _, _, ok := Control(r, ctl, c.view(r)); ok {
		t.Fatal("a request was applied twice")
	}
	other := ctl
	other.Value.ID, other.ModRevision = "echo-9", 11
	if _, _, ok := Control(r, other, c.view(r)); ok {
		t.Fatal("a request for another rollout was applied")
	}
	for range 20 {
		c.step(t, r)
	}
	if r.Domains[1].Phase != intent.DomainWaiting {
		t.Fatal("a paused rollout moved on")
	}
	ctl.Value.Action, ctl.Value.At, ctl.ModRevision = intent.ControlResume, t0, 12
	Control(r, ctl, c.view(r))
	if r.State != intent.RolloutRunning {
		t.Fatalf("resume: state %s", r.State)
	}
	c.step(t, r)
	ctl.Value.Action, ctl.Value.At, ctl.Value.RestoreData, ctl.ModRevision = intent.ControlAbort, t0.Add(-time.Hour), true, 13
	_, f, _ := Control(r, ctl, c.view(r))
	if r.State != intent.RolloutRollingBack || !r.RestoreData || f == nil || f.Version != "1.1.0" || !strings.Contains(r.Failure, "aborted by ada") {
		t.Fatalf("abort: state %s restore %v failure %q vfail %+v", r.State, r.RestoreData, r.Failure, f)
	}
	if r.Domains[0].Phase != intent.DomainRollingBack {
		t.Errorf("abort did not start rolling ud1 back: %+v", r.Domains[0])
	}
}

func TestPlan(t *testing.T) {
	up := bundle.Upgrade{Strategy: bundle.StrategyOverlap, Policy: bundle.UpgradeAuto, MaxParallel: 1, MinHealthyTime: bundle.Dur(time.Second),
		HealthyDeadline: bundle.Dur(time.Minute), ProgressDeadline: bundle.Dur(10 * time.Minute), FailureAction: bundle.FailureRollback}
	base := func() Want {
		return Want{Now: t0, Intent: intent.Intent{Plugin: "echo", Version: "1.1.0"}, Upgrade: up, Registrant: "ci",
			Assigned: map[string]string{"n1": "1.0.0", "n2": "1.0.0", "n3": "1.0.0"},
			Nodes:    map[string]NodeView{"n1": {UpgradeDomain: "b", Alive: true}, "n2": {UpgradeDomain: "a", Alive: true}, "n3": {UpgradeDomain: "b"}}}
	}
	finished := newRollout(1)
	finished.State = intent.RolloutCompleted
	finished.From, finished.To = "0.9.0", "1.0.0"
	running := newRollout(1)
	running.Seq, running.ID = 2, "echo-2"
	// rolled back from mixed versions: ud1 back on 1.1.0, ud2 on 1.0.0.
	mixed := newRollout(2)
	mixed.State, mixed.From, mixed.To = intent.RolloutRolledBack, "1.1.0", "1.2.0"
	mixed.Domains[0].Version, mixed.Domains[0].From = "1.1.0", "1.1.0"
	for _, tt := range []struct {
		name    string
		mut     func(w *Want)
		trigger string // "" when none starts
		from    string
		why     string
	}{
		{"new bundle", nil, intent.TriggerBundle, "1.0.0", ""},
		{"assigned nowhere", func(w *Want) { w.Assigned = nil }, "", "", ""},
		{"settled", func(w *Want) { w.Intent.Version = "1.0.0" }, "", "", ""},
		{"settled by the last rollout", func(w *Want) { w.Latest = finished; w.Intent.Version = "1.0.0" }, "", "", ""},
		{"pinned", func(w *Want) {
			w.Intent.Pinned = true
			w.Pin = pinOf("1.1.0", "ada", "", t0)
		}, intent.TriggerPin, "1.0.0", ""},
		{"rollback", func(w *Want) {
			w.Intent.Pinned = true
			w.Pin = pinOf("1.1.0", "ada", intent.TriggerRollback, t0)
		}, intent.TriggerRollback, "1.0.0", ""},
		{"manual policy", func(w *Want) { w.Upgrade.Policy = bundle.UpgradeManual }, "", "", "its upgrade policy is manual"},
		{"manual policy, pinned", func(w *Want) {
			w.Upgrade.Policy = bundle.UpgradeManual
			w.Intent.Pinned = true
			w.Pin = pinOf("1.1.0", "ada", "", t0)
		}, intent.TriggerPin, "1.0.0", ""},
		{"failed cluster-wide", func(w *Want) {
			w.Failed = map[string]intent.Item[intent.VersionFailure]{"1.1.0": {Value: intent.VersionFailure{Version: "1.1.0", Reason: "n3 crashed", At: t0}, ModRevision: 10}}
		}, "", "", "1.1.0 failed cluster-wide (n3 crashed): pin it"},
		// Pin and failure are ordered by store revision: the pinning
		// node's clock may be a day ahead of the leader's, or behind.
		{"failed, pinned before", func(w *Want) {
			w.Failed = map[string]intent.Item[intent.VersionFailure]{"1.1.0": {Value: intent.VersionFailure{Version: "1.1.0", At: t0}, ModRevision: 10}}
			w.Intent.Pinned = true
			w.Pin = pinOf("1.1.0", "ada", "", t0.Add(24*time.Hour))
			w.Pin.ModRevision = 9
		}, "", "", "failed cluster-wide"},
		{"failed, pinned after", func(w *Want) {
			w.Failed = map[string]intent.Item[intent.VersionFailure]{"1.1.0": {Value: intent.VersionFailure{Version: "1.1.0", At: t0}, ModRevision: 10}}
			w.Intent.Pinned = true
			w.Pin = pinOf("1.1.0", "ada", "", t0.Add(-24*time.Hour))
			w.Pin.ModRevision = 11
		}, intent.TriggerPin, "1.0.0", ""},
		{"rolling back away from it, failure record gone", func(w *Want) {
			back := *running
			back.State = intent.RolloutRollingBack
			w.Latest, w.LatestRev = &back, 20
			w.Intent.Pinned = true
			w.Pin = pinOf("1.1.0", "ada", "", t0.Add(24*time.Hour))
			w.Pin.ModRevision = 15
			w.Intent.Version = "1.1.0"
		}, "", "", "rolls back away from 1.1.0"},
		{"unpin", func(w *Want) {
			f := *finished
			f.Trigger = intent.TriggerPin
			w.Latest = &f
		}, intent.TriggerUnpin, "1.0.0", ""},
		{"running to the target", func(w *Want) { w.Latest = running }, "", "", ""},
		{"supersede", func(w *Want) { w.Latest = running; w.Intent.Version = "1.2.0" }, intent.TriggerUnpin, "1.0.0", ""},
		{"rolled back to mixed versions, pinned to its From", func(w *Want) {
			w.Latest = mixed
			w.Intent.Pinned = true
			w.Pin = pinOf("1.1.0", "ada", "", t0)
		}, intent.TriggerPin, "1.0.0", ""},
		{"supersede back to From", func(w *Want) {
			w.Latest = running
			w.Intent.Version, w.Intent.Pinned = "1.0.0", true
			w.Pin = pinOf("1.0.0", "ada", "", t0)
		}, intent.TriggerPin, "1.1.0", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := base()
			if tt.mut != nil {
				tt.mut(&w)
			}
			r, why := Plan(w)
			if tt.trigger == "" {
				if r != nil || !strings.Contains(why, tt.why) {
					t.Fatalf("started %+v (why %q), want none because %q", r, why, tt.why)
				}
				return
			}
			if r == nil {
				t.Fatalf("none started: %s", why)
			}
			if err := r.Validate(); err != nil {
				t.Fatal(err)
			}
			if r.Trigger != tt.trigger || r.From != tt.from || r.To != w.Intent.Version {
				t.Errorf("trigger %s from %s to %s, want %s from %s", r.Trigger, r.From, r.To, tt.trigger, tt.from)
			}
			if w.Latest != nil && (r.Seq != w.Latest.Seq+1 || r.ID != intent.RolloutID("echo", w.Latest.Seq+1)) {
				t.Errorf("seq %d after %d", r.Seq, w.Latest.Seq)
			}
			var names []string
			for _, d := range r.Domains {
				names = append(names, d.Name)
				for _, n := range d.Nodes {
					names = append(names, n.Name)
				}
			}
			if want := []string{"a", "n2", "b", "n1", "n3"}; !reflect.DeepEqual(names, want) {
				t.Errorf("domains and nodes %v, want %v", names, want)
			}
		})
	}
}

func pinOf(version, actor, action string, at time.Time) *catalog.Pin {
	return &catalog.Pin{Version: version, Actor: actor, Action: action, At: at}
}

// A rollout that began from mixed versions (it superseded one half done)
// and fails rolls back only the domains it started, each to what it ran
// before; a domain it never started stays where it was.
func TestRollbackOnlyStartedDomainsEachToItsFrom(t *testing.T) {
	// echo-2 supersedes echo-1 (1.0.0 -> 1.1.0, ud1 done): back to 1.0.0.
	r := newRollout(3)
	r.ID, r.Seq, r.From, r.To = "echo-2", 2, "1.1.0", "1.0.0"
	r.Domains[0].From, r.Domains[0].Version = "1.1.0", "1.1.0"
	c := newCluster()
	c.bad["n1"] = "1.0.0"
	c.run(t, r)
	if r.State != intent.RolloutRolledBack {
		t.Fatalf("state %s (failure %q)", r.State, r.Failure)
	}
	want := map[string]string{"ud1": "1.1.0", "ud2": "1.0.0", "ud3": "1.0.0"}
	for _, d := range r.Domains {
		if d.Version != want[d.Name] || r.VersionFor(d.Name) != want[d.Name] {
			t.Errorf("%s (%s) on %s, assigned %s after the rollback; want %s", d.Name, d.Phase, d.Version, r.VersionFor(d.Name), want[d.Name])
		}
	}
	if got := c.order(EventDomainRollback); !reflect.DeepEqual(got, []string{"ud1"}) {
		t.Errorf("domains rolled back %v, want [ud1]", got)
	}
}
