package controller_test

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/controller"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/placement"
	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// members is a membership the test sets: the controller takes membership
// as an input.
type members struct {
	mu      sync.Mutex
	nodes   []placement.Node
	changes chan struct{}
}

func newMembers(names ...string) *members {
	m := &members{changes: make(chan struct{}, 1)}
	for i, n := range names {
		m.nodes = append(m.nodes, placement.Node{Name: n, FaultDomain: fmt.Sprint("fd", i%3), Alive: true})
	}
	return m
}

func (m *members) Nodes() []placement.Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]placement.Node(nil), m.nodes...)
}

func (m *members) MemberChanges() (<-chan struct{}, func()) { return m.changes, func() {} }

func (m *members) setAlive(name string, alive bool) {
	m.mu.Lock()
	for i := range m.nodes {
		if m.nodes[i].Name == name {
			m.nodes[i].Alive = alive
		}
	}
	m.mu.Unlock()
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

type fixture struct {
	t   *testing.T
	ctx context.Context
	st  *store.Store
	db  *intent.DB
	m   *members
	p   *controller.Placer
}

func newFixture(t *testing.T, nodes ...string) *fixture {
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m := newMembers(nodes...)
	return &fixture{t: t, ctx: testenv.Context(t, 60*time.Second), st: st, db: intent.New(st), m: m,
		p: controller.New(controller.Config{Store: st, Members: m})}
}

func (f *fixture) put(r intent.Record) {
	f.t.Helper()
	if _, err := f.db.Put(f.ctx, r); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) pass() controller.Writes {
	f.t.Helper()
	w, err := f.p.Pass(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return w
}

// assigned is plugin's assignments by node.
func (f *fixture) assigned(plugin string) map[string]intent.Assignment {
	f.t.Helper()
	items, refused, err := f.db.Assignments(f.ctx)
	if err != nil || len(refused) > 0 {
		f.t.Fatal(err, refused)
	}
	out := map[string]intent.Assignment{}
	for _, it := range items {
		if it.Value.Plugin == plugin {
			out[it.Value.Node] = it.Value
		}
	}
	return out
}

func (f *fixture) healthy(node, plugin, version string, healthy bool) {
	f.t.Helper()
	f.put(&intent.Observation{Node: node, Plugin: plugin, Version: version, State: "running", Healthy: healthy})
}

func (f *fixture) singleton(plugin string) intent.Item[intent.Singleton] {
	f.t.Helper()
	it, found, err := f.db.Singleton(f.ctx, plugin)
	if err != nil || !found {
		f.t.Fatalf("singleton/%s: found=%v err=%v", plugin, found, err)
	}
	return it
}

func every(plugin, version string) *intent.Intent {
	return &intent.Intent{Plugin: plugin, Version: version, Placement: bundle.Placement{Mode: bundle.PlacementEveryNode}}
}

func TestEveryNodeAndIdempotentPasses(t *testing.T) {
	f := newFixture(t, "n1", "n2", "n3")
	f.put(every("echo", "1.0.0"))
	if w := f.pass(); w.Assigned != 3 {
		t.Errorf("first pass: %+v, want 3 assigned", w)
	}
	got := f.assigned("echo")
	for _, n := range []string{"n1", "n2", "n3"} {
		if a, ok := got[n]; !ok || a.Version != "1.0.0" || a.Role != "" || a.Epoch != 0 {
			t.Errorf("%s: %+v (assigned %v)", n, a, ok)
		}
	}
	rev := f.st.Revision()
	if w := f.pass(); w.Total() != 0 {
		t.Errorf("a pass with nothing changed wrote %+v", w)
	}
	if f.st.Revision() != rev {
		t.Errorf("the store moved from %d to %d on an idempotent pass", rev, f.st.Revision())
	}

	// A new target version moves no node by itself (the rollout
	// controller does, through a rollout record); a removed intent
	// empties the assignments.
	f.put(every("echo", "1.1.0"))
	f.pass()
	for n, a := range f.assigned("echo") {
		if a.Version != "1.0.0" {
			t.Errorf("%s runs %s after the intent moved to 1.1.0 without a rollout", n, a.Version)
		}
	}
	if _, err := f.db.Delete(f.ctx, intent.IntentKey("echo")); err != nil {
		t.Fatal(err)
	}
	if w := f.pass(); w.Removed != 3 {
		t.Errorf("after the intent went: %+v, want 3 removed", w)
	}
}

// A singleton's record changes with its active, in the assignments' txn;
// its mod revision is the epoch, stamped into the active's assignment.
func TestSingletonFailoverGrowsTheEpoch(t *testing.T) {
	f := newFixture(t, "n1", "n2", "n3")
	f.put(&intent.Intent{Plugin: "counter", Version: "1.0.0", Placement: bundle.Placement{Mode: bundle.PlacementSingleton}})
	w := f.pass()
	if w.Singletons != 1 || w.Stamped != 1 {
		t.Errorf("first pass: %+v", w)
	}
	s := f.singleton("counter")
	got := f.assigned("counter")
	if len(got) != 1 {
		t.Fatalf("singleton assigned to %d nodes: %+v", len(got), got)
	}
	a := got[s.Value.Active]
	if a.Role != intent.RoleActive || a.Epoch != s.ModRevision {
		t.Fatalf("active assignment %+v, singleton %+v at %d", a, s.Value, s.ModRevision)
	}
	f.healthy(s.Value.Active, "counter", "1.0.0", true)
	if w := f.pass(); w.Total() != 0 {
		t.Errorf("a healthy singleton's pass wrote %+v", w)
	}

	// Its node dies: another node is made active, at a higher epoch, and
	// the dead node's assignment goes in the same txn.
	old := s
	f.m.setAlive(old.Value.Active, false)
	f.pass()
	s = f.singleton("counter")
	if s.Value.Active == old.Value.Active || s.Value.Active == "" {
		t.Fatalf("active stayed %q after its node died", s.Value.Active)
	}
	if s.ModRevision <= old.ModRevision {
		t.Errorf("epoch went from %d to %d", old.ModRevision, s.ModRevision)
	}
	got = f.assigned("counter")
	if _, ok := got[old.Value.Active]; ok || len(got) != 1 {
		t.Errorf("assignments after failover: %+v", got)
	}
	if a := got[s.Value.Active]; a.Role != intent.RoleActive || a.Epoch != s.ModRevision {
		t.Errorf("new active %+v, epoch %d", a, s.ModRevision)
	}

	// The old node coming back changes nothing: the active stays.
	f.healthy(s.Value.Active, "counter", "1.0.0", true)
	f.m.setAlive(old.Value.Active, true)
	f.pass()
	if again := f.singleton("counter"); again.ModRevision != s.ModRevision || again.Value.Active != s.Value.Active {
		t.Errorf("the singleton moved when a node came back: %+v at %d", again.Value, again.ModRevision)
	}
}

// A new leader resumes from the store: an active left unstamped (the
// leader died between the two txns) is stamped by the next pass.
func TestAnUnstampedActiveIsStamped(t *testing.T) {
	f := newFixture(t, "n1")
	f.put(&intent.Intent{Plugin: "counter", Version: "1.0.0", Placement: bundle.Placement{Mode: bundle.PlacementSingleton}})
	var txn intent.Txn
	txn.Put(&intent.Singleton{Plugin: "counter", Active: "n1"}).
		Put(&intent.Assignment{Node: "n1", Plugin: "counter", Version: "1.0.0", Role: intent.RoleActive})
	rev, _, err := f.db.Commit(f.ctx, &txn)
	if err != nil {
		t.Fatal(err)
	}
	if w := f.pass(); w.Singletons != 0 || w.Assigned != 1 {
		t.Errorf("pass: %+v, want the active's assignment rewritten only", w)
	}
	if a := f.assigned("counter")["n1"]; a.Epoch != rev {
		t.Errorf("n1's epoch %d, want %d", a.Epoch, rev)
	}
}

// With no node to run it, a singleton's epoch still grows, so the lost
// active's writes are refused; the diagnostic says why.
func TestNoNodeLeftIsAnErrorDiagnostic(t *testing.T) {
	f := newFixture(t, "n1")
	f.put(&intent.Intent{Plugin: "counter", Version: "1.0.0", Placement: bundle.Placement{Mode: bundle.PlacementSingleton}})
	f.pass()
	before := f.singleton("counter")
	f.m.setAlive("n1", false)
	f.pass()
	after := f.singleton("counter")
	if after.Value.Active != "" || after.ModRevision <= before.ModRevision {
		t.Errorf("singleton %+v at %d after its only node died (was %d)", after.Value, after.ModRevision, before.ModRevision)
	}
	d, found, err := f.db.Placement(f.ctx, "counter")
	if err != nil || !found || d.Value.Severity != intent.SeverityError || d.Value.Placed != 0 || d.Value.Message == "" {
		t.Errorf("diagnostic %+v found=%v err=%v", d.Value, found, err)
	}
	if w := f.pass(); w.Total() != 0 {
		t.Errorf("an unplaceable singleton's second pass wrote %+v", w)
	}
	f.m.setAlive("n1", true)
	f.pass()
	if _, found, _ := f.db.Placement(f.ctx, "counter"); found {
		t.Error("the diagnostic stayed once the singleton was placed")
	}
	if s := f.singleton("counter"); s.Value.Active != "n1" || s.ModRevision <= after.ModRevision {
		t.Errorf("singleton %+v at %d once n1 came back", s.Value, s.ModRevision)
	}
}

// A drained node keeps its instance until the replacement is healthy.
func TestDrainIsHealthGated(t *testing.T) {
	f := newFixture(t, "n1", "n2")
	f.put(&intent.Intent{Plugin: "web", Version: "1.0.0", Placement: bundle.Placement{Mode: bundle.PlacementCount, Count: 1}})
	f.pass()
	got := f.assigned("web")
	if len(got) != 1 {
		t.Fatalf("count 1 assigned %+v", got)
	}
	var from, to string
	for n := range got {
		from = n
	}
	to = map[string]string{"n1": "n2", "n2": "n1"}[from]
	f.healthy(from, "web", "1.0.0", true)
	f.put(&intent.NodeState{Node: from, Eligible: false, Since: time.Now(), Actor: "op"})
	f.pass()
	got = f.assigned("web")
	if !got[from].Draining || got[to].Node != to || got[to].Draining {
		t.Fatalf("after the drain of %s: %+v", from, got)
	}
	if w := f.pass(); w.Total() != 0 {
		t.Errorf("a pass before the replacement is healthy wrote %+v", w)
	}
	f.healthy(to, "web", "1.0.0", true)
	f.pass()
	got = f.assigned("web")
	if _, ok := got[from]; ok || len(got) != 1 {
		t.Errorf("once %s serves: %+v", to, got)
	}
}

// A plugin whose intent cannot be read keeps what it runs.
func TestARefusedIntentLeavesItsPluginAlone(t *testing.T) {
	f := newFixture(t, "n1", "n2")
	f.put(every("echo", "1.0.0"))
	f.pass()
	if _, err := f.st.Put(f.ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(intent.IntentKey("echo")),
		Value: []byte(`{"plugin":"echo","version":"not-semver"}`)}); err != nil {
		t.Fatal(err)
	}
	if w := f.pass(); w.Total() != 0 {
		t.Errorf("a pass over a refused intent wrote %+v", w)
	}
	if got := f.assigned("echo"); len(got) != 2 {
		t.Errorf("assignments %+v", got)
	}
}

// Run makes a pass on each change of intent, eligibility, health or
// membership.
func TestRunFollowsChanges(t *testing.T) {
	f := newFixture(t, "n1", "n2", "n3")
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- f.p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run returned %v", err)
		}
	}()
	f.put(every("echo", "1.0.0"))
	testenv.Eventually(t, 10*time.Second, "echo assigned to three nodes", func() bool { return len(f.assigned("echo")) == 3 })
	f.put(&intent.Intent{Plugin: "counter", Version: "1.0.0", Placement: bundle.Placement{Mode: bundle.PlacementSingleton}})
	var first string
	testenv.Eventually(t, 10*time.Second, "counter's active stamped", func() bool {
		for n, a := range f.assigned("counter") {
			if a.Role == intent.RoleActive && a.Epoch > 0 {
				first = n
				return true
			}
		}
		return false
	})
	f.m.setAlive(first, false)
	testenv.Eventually(t, 10*time.Second, "counter's active moved", func() bool {
		for n, a := range f.assigned("counter") {
			if a.Role == intent.RoleActive && a.Epoch > 0 && n != first {
				return true
			}
		}
		return false
	})
}

// rollout is a rollout of plugin from 1.0.0 to 1.1.0 over the upgrade
// domains uds, the first `moved` of them assigned 1.1.0.
func rollout(plugin string, seq int64, moved int, uds ...string) *intent.Rollout {
	r := &intent.Rollout{ID: intent.RolloutID(plugin, seq), Plugin: plugin, Seq: seq, From: "1.0.0", To: "1.1.0", Trigger: intent.TriggerBundle,
		State: intent.RolloutRunning, Created: time.Now(),
		Policy: intent.RolloutPolicy{Mode: intent.PolicyAuto, Strategy: bundle.StrategyOverlap, MaxParallel: 1, MinHealthyTime: bundle.Dur(time.Second),
			HealthyDeadline: bundle.Dur(time.Minute), ProgressDeadline: bundle.Dur(10 * time.Minute), FailureAction: intent.FailureRollback}}
	for i, ud := range uds {
		d := intent.RolloutDomain{Name: ud, From: "1.0.0", Version: "1.0.0", Phase: intent.DomainWaiting}
		if i < moved {
			d.Version, d.Phase = "1.1.0", intent.DomainUpdating
		}
		r.Domains = append(r.Domains, d)
	}
	return r
}

// The version of each assignment comes from the plugin's newest rollout:
// its upgrade domain's while it runs, its target once it is finished (a
// node of a domain it does not list gets the target too); a plugin with
// no rollout keeps what it runs, and a new node gets what the others run.
func TestVersionsComeFromTheNewestRollout(t *testing.T) {
	f := newFixture(t, "n1", "n2", "n3")
	f.m.mu.Lock()
	f.m.nodes[0].UpgradeDomain = "ud-a" // n2 and n3: their own names
	f.m.mu.Unlock()
	f.put(every("echo", "1.0.0"))
	f.pass()
	f.put(every("echo", "1.1.0"))
	f.pass()
	versions := func() map[string]string {
		out := map[string]string{}
		for n, a := range f.assigned("echo") {
			out[n] = a.Version
		}
		return out
	}
	check := func(what string, want map[string]string) {
		t.Helper()
		if got := versions(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: assigned %v, want %v", what, got, want)
		}
	}
	check("no rollout", map[string]string{"n1": "1.0.0", "n2": "1.0.0", "n3": "1.0.0"})

	f.put(rollout("echo", 1, 1, "ud-a", "n2", "n3"))
	f.pass()
	check("first domain moved", map[string]string{"n1": "1.1.0", "n2": "1.0.0", "n3": "1.0.0"})

	// A newer rollout wins over an older one, whatever the older says.
	f.put(rollout("echo", 2, 2, "ud-a", "n2", "n3"))
	f.pass()
	check("two domains moved", map[string]string{"n1": "1.1.0", "n2": "1.1.0", "n3": "1.0.0"})

	// A node that joins mid-rollout, in a domain the rollout does not
	// list, gets its target.
	f.m.mu.Lock()
	f.m.nodes = append(f.m.nodes, placement.Node{Name: "n4", FaultDomain: "fd0", Alive: true})
	f.m.mu.Unlock()
	f.pass()
	check("n4 joined", map[string]string{"n1": "1.1.0", "n2": "1.1.0", "n3": "1.0.0", "n4": "1.1.0"})

	// Rolled back: every node gets From, the domains' versions aside.
	r := rollout("echo", 2, 2, "ud-a", "n2", "n3", "n4")
	r.State = intent.RolloutRolledBack
	f.put(r)
	f.pass()
	check("rolled back", map[string]string{"n1": "1.0.0", "n2": "1.0.0", "n3": "1.0.0", "n4": "1.0.0"})
}

func TestSettledVersion(t *testing.T) {
	for _, tt := range []struct {
		assigned []string
		want     string
	}{
		{nil, "9.0.0"},
		{[]string{"1.0.0"}, "1.0.0"},
		{[]string{"1.0.0", "1.1.0", "1.0.0"}, "1.0.0"},
		{[]string{"1.1.0", "1.0.0", "1.0.0", "1.1.0"}, "1.1.0"},
		{[]string{"1.10.0", "1.9.0"}, "1.10.0"},
	} {
		if got := controller.SettledVersion(tt.assigned, "9.0.0"); got != tt.want {
			t.Errorf("SettledVersion(%v) = %s, want %s", tt.assigned, got, tt.want)
		}
	}
}
