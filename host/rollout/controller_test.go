package rollout_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/controller"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/placement"
	"github.com/plughost/plughost/host/rollout"
	"github.com/plughost/plughost/host/supervisor"
	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// members is a membership the test sets.
type members struct {
	mu      sync.Mutex
	nodes   []placement.Node
	changes chan struct{}
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

// clock is the controllers' clock, moved by the test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fixture is a cluster in one process: the store, the catalog, the
// placement and rollout controllers, and nodes simulated from the
// assignments (each reports its assigned version at once, healthy unless
// that version is bad on it, nothing while it is down).
type fixture struct {
	t     *testing.T
	ctx   context.Context
	st    *store.Store
	db    *intent.DB
	cat   *catalog.Catalog
	m     *members
	clock *clock
	p     *controller.Placer
	c     *rollout.Controller
	bad   map[string]string // node -> version never healthy there
}

// newFixture starts nodes n1..nn, each in its own upgrade domain ud1..udn.
func newFixture(t *testing.T, n int) *fixture {
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m := &members{changes: make(chan struct{}, 1)}
	for i := 1; i <= n; i++ {
		m.nodes = append(m.nodes, placement.Node{Name: fmt.Sprint("n", i), FaultDomain: "fd", UpgradeDomain: fmt.Sprint("ud", i), Alive: true})
	}
	f := &fixture{t: t, ctx: testenv.Context(t, 60*time.Second), st: st, db: intent.New(st), cat: catalog.New(st), m: m,
		// A day behind: the pins the catalog stamps with the real clock come
		// after the records the controllers stamp with this one.
		clock: &clock{now: time.Now().UTC().Add(-24 * time.Hour)}, bad: map[string]string{}}
	f.p = controller.New(controller.Config{Store: st, Members: m})
	f.c = f.newController()
	return f
}

func (f *fixture) newController() *rollout.Controller {
	return rollout.New(rollout.Config{Store: f.st, Catalog: f.cat, Members: f.m, Node: "n1", Now: f.clock.Now})
}

// register adds version of echo; upgrade may change its manifest's upgrade
// block.
func (f *fixture) register(version string, upgrade func(*bundle.Upgrade)) {
	f.t.Helper()
	m := &bundle.Manifest{Name: "echo", Version: version, APIVersions: []int{1}, Executable: "echo",
		SHA256: strings.Repeat("a", 64), Services: []string{"echo.v1.EchoService"}}
	m.Upgrade.MinHealthyTime = bundle.Dur(time.Second)
	m.Upgrade.HealthyDeadline = bundle.Dur(5 * time.Second)
	if upgrade != nil {
		upgrade(&m.Upgrade)
	}
	m.SetDefaults()
	if _, err := f.cat.Register(f.ctx, m, "ci"); err != nil {
		f.t.Fatal(err)
	}
}

// observe writes each up node's observations as its assignments say.
func (f *fixture) observe() {
	f.t.Helper()
	as, _, err := f.db.Assignments(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	alive := map[string]bool{}
	for _, n := range f.m.Nodes() {
		alive[n.Name] = n.Alive
	}
	for _, it := range as {
		a := it.Value
		if !alive[a.Node] {
			continue
		}
		o := &intent.Observation{Node: a.Node, Plugin: a.Plugin, Version: a.Version, State: "running", Healthy: f.bad[a.Node] != a.Version}
		cur, found, err := intent.Get[intent.Observation](f.ctx, f.db, o.Key())
		if err != nil {
			f.t.Fatal(err)
		}
		if found && cur.Value.Version == o.Version && cur.Value.Healthy == o.Healthy {
			continue
		}
		if _, err := f.db.Put(f.ctx, o); err != nil {
			f.t.Fatal(err)
		}
	}
}

// round is one round of the cluster: placement, nodes, rollouts; then
// the clock moves a tick.
func (f *fixture) round() {
	f.t.Helper()
	if _, err := f.p.Pass(f.ctx); err != nil {
		f.t.Fatal(err)
	}
	f.observe()
	if _, err := f.c.Pass(f.ctx); err != nil {
		f.t.Fatal(err)
	}
	f.clock.add(250 * time.Millisecond)
}

// until runs rounds until cond holds, at most a simulated 10 minutes.
func (f *fixture) until(what string, cond func() bool) {
	f.t.Helper()
	for range 2400 {
		if cond() {
			return
		}
		f.round()
	}
	f.t.Fatalf("%s: not after 10 simulated minutes; rollouts: %s", what, f.dump())
}

func (f *fixture) latest() *intent.Rollout {
	f.t.Helper()
	it, found, err := f.db.LatestRollout(f.ctx, "echo")
	if err != nil {
		f.t.Fatal(err)
	}
	if !found {
		return nil
	}
	return &it.Value
}

func (f *fixture) state(seq int64, state string) func() bool {
	return func() bool {
		it, found, err := intent.Get[intent.Rollout](f.ctx, f.db, intent.RolloutKey("echo", seq))
		return err == nil && found && it.Value.State == state
	}
}

func (f *fixture) dump() string {
	rs, _, _ := f.db.Rollouts(f.ctx, "echo")
	b, _ := json.MarshalIndent(rs, "", " ")
	return string(b)
}

func (f *fixture) versions() map[string]string {
	f.t.Helper()
	as, _, err := f.db.Assignments(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]string{}
	for _, it := range as {
		out[it.Value.Node] = it.Value.Version
	}
	return out
}

func (f *fixture) events() []supervisor.Event {
	f.t.Helper()
	resp, err := f.st.List(f.ctx, &storev1.ListRequest{Namespace: store.SystemNamespace, Prefix: []byte("events/echo/")})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []supervisor.Event
	for _, kv := range resp.GetKvs() {
		var ev supervisor.Event
		if err := json.Unmarshal(kv.GetValue(), &ev); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// domains are the upgrade domains of the events of type typ, in order.
func (f *fixture) domains(typ string) []string {
	var out []string
	for _, ev := range f.events() {
		if ev.Type == typ {
			_, rest, _ := strings.Cut(ev.Reason, "upgrade domain ")
			ud, _, _ := strings.Cut(rest, ":")
			out = append(out, ud)
		}
	}
	return out
}

func (f *fixture) history(action string) []catalog.Record {
	f.t.Helper()
	hs, err := f.cat.History(f.ctx, "echo")
	if err != nil {
		f.t.Fatal(err)
	}
	var out []catalog.Record
	for _, h := range hs {
		if h.Action == action {
			out = append(out, h)
		}
	}
	return out
}

func all(v string, n int) map[string]string {
	out := map[string]string{}
	for i := 1; i <= n; i++ {
		out[fmt.Sprint("n", i)] = v
	}
	return out
}

// install registers 1.0.0 and runs it everywhere: a first install is no
// rollout.
func (f *fixture) install(n int) {
	f.t.Helper()
	f.register("1.0.0", nil)
	f.until("1.0.0 placed everywhere", func() bool { return reflect.DeepEqual(f.versions(), all("1.0.0", n)) })
	for range 4 {
		f.round()
	}
	if r := f.latest(); r != nil {
		f.t.Fatalf("the first install started a rollout: %+v", r)
	}
}

func TestHealthyRolloutInDomainOrder(t *testing.T) {
	f := newFixture(t, 3)
	f.install(3)
	f.register("1.1.0", nil)
	f.round()
	r := f.latest()
	if r == nil || r.ID != "echo-1" || r.From != "1.0.0" || r.To != "1.1.0" || r.Trigger != intent.TriggerBundle || r.Actor != "ci" {
		t.Fatalf("rollout %+v", r)
	}
	if r.Snapshot == nil || r.Snapshot.Skipped == "" {
		t.Errorf("snapshot %+v, want one skipped with the reason", r.Snapshot)
	}
	// One domain at a time: never two nodes on 1.1.0 while the first is
	// in its gate.
	f.until("the rollout completed", func() bool {
		if r := f.latest(); r.Domains[1].Phase != intent.DomainWaiting && r.Domains[0].Phase != intent.DomainDone {
			t.Fatalf("ud2 started before ud1 was done: %+v", r.Domains)
		}
		return f.latest().State == intent.RolloutCompleted
	})
	if got := f.versions(); !reflect.DeepEqual(got, all("1.1.0", 3)) {
		t.Errorf("assigned %v", got)
	}
	r = f.latest()
	for i := 1; i < len(r.Domains); i++ {
		if !r.Domains[i].Started.After(r.Domains[i-1].Finished) && !r.Domains[i].Started.Equal(r.Domains[i-1].Finished) {
			t.Errorf("%s started %v before %s finished %v", r.Domains[i].Name, r.Domains[i].Started, r.Domains[i-1].Name, r.Domains[i-1].Finished)
		}
	}
	if got, want := f.domains(rollout.EventDomainUpdating), []string{"ud1", "ud2", "ud3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("domain events %v, want %v", got, want)
	}
	if hs := f.history("rollout"); len(hs) != 1 || hs[0].Outcome != rollout.OutcomeCompleted || hs[0].From != "1.0.0" || hs[0].To != "1.1.0" {
		t.Errorf("history %+v", hs)
	}
	// Settled: nothing more starts, nothing is written.
	rev := f.st.Revision()
	for range 8 {
		f.round()
	}
	if f.st.Revision() != rev {
		t.Errorf("the store moved from %d to %d with nothing to do", rev, f.st.Revision())
	}
}

// A version that never gets healthy on the third domain's node rolls back
// the third, second and first domains, is marked failed cluster-wide and
// is not tried again until it is pinned.
func TestFailureRollsBackEveryDomain(t *testing.T) {
	f := newFixture(t, 4)
	f.install(4)
	f.bad["n3"] = "1.1.0"
	f.register("1.1.0", nil)
	f.until("the rollout rolled back", f.state(1, intent.RolloutRolledBack))
	r := f.latest()
	if r.FailedNode != "n3" || !strings.Contains(r.Failure, "n3 was not healthy on 1.1.0") {
		t.Errorf("failure %q on %q", r.Failure, r.FailedNode)
	}
	if got, want := f.domains(rollout.EventDomainRollback), []string{"ud3", "ud2", "ud1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("rollback order %v, want %v", got, want)
	}
	if got := f.versions(); !reflect.DeepEqual(got, all("1.0.0", 4)) {
		t.Errorf("assigned %v after the rollback", got)
	}
	vf, found, err := intent.Get[intent.VersionFailure](f.ctx, f.db, intent.VersionFailKey("echo", "1.1.0"))
	if err != nil || !found || vf.Value.Node != "n3" || vf.Value.Rollout != "echo-1" {
		t.Fatalf("vfailed: %+v found %v err %v", vf.Value, found, err)
	}
	hs := f.history("rollout")
	if len(hs) != 1 || hs[0].Outcome != rollout.OutcomeRolledBack || !strings.Contains(hs[0].Reason, "n3") {
		t.Errorf("history %+v", hs)
	}
	for range 20 {
		f.round()
	}
	if r := f.latest(); r.Seq != 1 {
		t.Fatalf("a rollout to the failed version started again: %+v", r)
	}
	// An operator's pin after the failure tries it again.
	delete(f.bad, "n3")
	if err := f.cat.SetPin(f.ctx, "echo", "1.1.0", "ada"); err != nil {
		t.Fatal(err)
	}
	f.until("the pinned rollout completed", f.state(2, intent.RolloutCompleted))
	if r := f.latest(); r.Trigger != intent.TriggerPin || r.Actor != "ada" {
		t.Errorf("rollout %+v", r)
	}
}

// A node down when its domain's turn comes is skipped, left pending, and
// converges when it comes back.
func TestDownNodePendingConverges(t *testing.T) {
	f := newFixture(t, 3)
	f.install(3)
	f.m.setAlive("n2", false)
	f.register("1.1.0", nil)
	f.until("the rollout completed", f.state(1, intent.RolloutCompleted))
	r := f.latest()
	if !reflect.DeepEqual(r.Pending, []string{"n2"}) || !r.Converged.IsZero() {
		t.Fatalf("pending %v converged %v", r.Pending, r.Converged)
	}
	if got := f.versions(); got["n2"] != "1.1.0" {
		t.Errorf("n2, down, is assigned %s", got["n2"])
	}
	f.m.setAlive("n2", true)
	f.until("n2 converged", func() bool { return !f.latest().Converged.IsZero() })
	if r := f.latest(); len(r.Pending) != 0 {
		t.Errorf("pending %v", r.Pending)
	}
}

// A node down through two rollouts converges both when it comes back, to
// the newer one's target.
func TestDownThroughTwoRollouts(t *testing.T) {
	f := newFixture(t, 3)
	f.install(3)
	f.m.setAlive("n3", false)
	f.register("1.1.0", nil)
	f.until("the first rollout completed", f.state(1, intent.RolloutCompleted))
	f.register("1.2.0", nil)
	f.until("the second rollout completed", f.state(2, intent.RolloutCompleted))
	if r := f.latest(); !reflect.DeepEqual(r.Pending, []string{"n3"}) {
		t.Fatalf("pending %v", r.Pending)
	}
	f.m.setAlive("n3", true)
	for _, seq := range []int64{1, 2} {
		f.until(fmt.Sprint("rollout ", seq, " converged"), func() bool {
			it, _, err := intent.Get[intent.Rollout](f.ctx, f.db, intent.RolloutKey("echo", seq))
			return err == nil && !it.Value.Converged.IsZero() && len(it.Value.Pending) == 0
		})
	}
	if got := f.versions(); !reflect.DeepEqual(got, all("1.2.0", 3)) {
		t.Errorf("assigned %v", got)
	}
}

// A new target while a rollout runs supersedes it; the new one starts
// each domain from what it runs.
func TestSupersede(t *testing.T) {
	f := newFixture(t, 3)
	f.install(3)
	f.register("1.1.0", nil)
	f.until("ud1 done", func() bool { r := f.latest(); return r != nil && r.Domains[0].Phase == intent.DomainDone })
	f.register("1.2.0", nil)
	f.round()
	old, found, err := intent.Get[intent.Rollout](f.ctx, f.db, intent.RolloutKey("echo", 1))
	if err != nil || !found || old.Value.State != intent.RolloutSuperseded || old.Value.SupersededBy != "echo-2" {
		t.Fatalf("old rollout: %+v", old.Value)
	}
	r := f.latest()
	if r.ID != "echo-2" || r.From != "1.0.0" || r.To != "1.2.0" || r.Domains[0].From != "1.1.0" || r.Domains[2].From != "1.0.0" {
		t.Fatalf("new rollout %+v", r)
	}
	f.until("the new rollout completed", f.state(2, intent.RolloutCompleted))
	if got := f.versions(); !reflect.DeepEqual(got, all("1.2.0", 3)) {
		t.Errorf("assigned %v", got)
	}
	if hs := f.history("rollout"); len(hs) != 2 || hs[0].Outcome != rollout.OutcomeSuperseded || hs[1].Outcome != rollout.OutcomeCompleted {
		t.Errorf("history %+v", hs)
	}
}

// A new controller (a new leader) resumes the record: no domain repeated
// or skipped.
func TestNewLeaderResumes(t *testing.T) {
	f := newFixture(t, 3)
	f.install(3)
	f.register("1.1.0", nil)
	f.until("ud2 in its gate", func() bool { r := f.latest(); return r != nil && r.Domains[1].Phase == intent.DomainUpdating })
	f.c = f.newController()
	f.until("the rollout completed", f.state(1, intent.RolloutCompleted))
	if got, want := f.domains(rollout.EventDomainUpdating), []string{"ud1", "ud2", "ud3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("domain events %v, want %v", got, want)
	}
}

// Operator requests: pause holds it, resume goes on, abort rolls back.
func TestOperatorRequests(t *testing.T) {
	f := newFixture(t, 3)
	f.install(3)
	f.register("1.1.0", nil)
	f.until("ud1 in its gate", func() bool { r := f.latest(); return r != nil && r.Domains[0].Phase == intent.DomainUpdating })
	ctl := &intent.RolloutControl{Plugin: "echo", ID: "echo-1", Action: intent.ControlPause, Actor: "ada", At: f.clock.Now()}
	if _, err := f.db.Put(f.ctx, ctl); err != nil {
		t.Fatal(err)
	}
	f.until("paused", f.state(1, intent.RolloutPaused))
	for range 40 {
		f.round()
	}
	if r := f.latest(); r.State != intent.RolloutPaused || r.Domains[1].Phase != intent.DomainWaiting {
		t.Fatalf("a paused rollout moved: %+v", r)
	}
	ctl.Action, ctl.At = intent.ControlAbort, f.clock.Now()
	if _, err := f.db.Put(f.ctx, ctl); err != nil {
		t.Fatal(err)
	}
	f.until("rolled back", f.state(1, intent.RolloutRolledBack))
	if r := f.latest(); !strings.Contains(r.Failure, "aborted by ada") {
		t.Errorf("failure %q", r.Failure)
	}
	if got := f.versions(); !reflect.DeepEqual(got, all("1.0.0", 3)) {
		t.Errorf("assigned %v", got)
	}
}

// Run, the leader task, does it all by itself on the real clock.
func TestRun(t *testing.T) {
	f := newFixture(t, 2)
	f.c = rollout.New(rollout.Config{Store: f.st, Catalog: f.cat, Members: f.m, Node: "n1", Tick: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, run := range []func(context.Context) error{f.p.Run, f.c.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = run(ctx)
		}()
	}
	f.register("1.0.0", nil)
	testenv.Eventually(t, 20*time.Second, "1.0.0 placed", func() bool { f.observe(); return reflect.DeepEqual(f.versions(), all("1.0.0", 2)) })
	f.register("1.1.0", func(u *bundle.Upgrade) { u.MinHealthyTime = bundle.Dur(100 * time.Millisecond) })
	testenv.Eventually(t, 20*time.Second, "the rollout completed", func() bool {
		f.observe()
		r := f.latest()
		return r != nil && r.State == intent.RolloutCompleted
	})
	if got := f.versions(); !reflect.DeepEqual(got, all("1.1.0", 2)) {
		t.Errorf("assigned %v", got)
	}
}

// snapshots records what the controller asks of the data hook.
type snapshots struct {
	mu         sync.Mutex
	taken      []string
	restored   []string
	takeErr    error
	restoreErr error
}

func (s *snapshots) Take(_ context.Context, r *intent.Rollout) (*intent.RolloutSnapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.taken = append(s.taken, r.ID)
	if s.takeErr != nil {
		return nil, s.takeErr
	}
	return &intent.RolloutSnapshot{Namespace: r.Plugin, Keys: 1, Bytes: 10, SHA256: strings.Repeat("b", 64)}, nil
}

func (s *snapshots) Restore(_ context.Context, r *intent.Rollout) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.restoreErr != nil {
		return s.restoreErr
	}
	s.restored = append(s.restored, r.ID)
	return nil
}

func (s *snapshots) calls() (taken, restored []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.taken...), append([]string(nil), s.restored...)
}

// The data hook: a snapshot before the first domain; a restore of the
// rollout's own snapshot after an abort -restore-data, and of the
// rollout it undoes after a rollback -restore-data, each once the old
// version serves again.
func TestDataSnapshots(t *testing.T) {
	f := newFixture(t, 2)
	snaps := &snapshots{}
	f.c = rollout.New(rollout.Config{Store: f.st, Catalog: f.cat, Members: f.m, Node: "n1", Now: f.clock.Now, Snapshots: snaps})
	f.install(2)
	f.register("1.1.0", nil)
	f.round()
	if taken, _ := snaps.calls(); !reflect.DeepEqual(taken, []string{"echo-1"}) {
		t.Fatalf("taken %v before the first domain", taken)
	}
	if r := f.latest(); r.Snapshot == nil || r.Snapshot.Keys != 1 || r.Domains[0].Phase != intent.DomainUpdating {
		t.Fatalf("rollout %+v", r)
	}
	f.until("ud1 done", func() bool { return f.latest().Domains[0].Phase == intent.DomainDone })
	ctl := &intent.RolloutControl{Plugin: "echo", ID: "echo-1", Action: intent.ControlAbort, RestoreData: true, Actor: "ada", At: f.clock.Now()}
	if _, err := f.db.Put(f.ctx, ctl); err != nil {
		t.Fatal(err)
	}
	f.until("rolled back", f.state(1, intent.RolloutRolledBack))
	if _, restored := snaps.calls(); !reflect.DeepEqual(restored, []string{"echo-1"}) {
		t.Fatalf("restored %v", restored)
	}
	if r := f.latest(); r.Restored.IsZero() {
		t.Errorf("restored not recorded: %+v", r)
	}

	// 1.1.0 by pin, then 'plugin rollback -restore-data' to 1.0.0:
	// restores echo-2's snapshot, taken before 1.1.0 first ran.
	if err := f.cat.SetPin(f.ctx, "echo", "1.1.0", "ada"); err != nil {
		t.Fatal(err)
	}
	f.until("echo-2 completed", f.state(2, intent.RolloutCompleted))
	if err := f.cat.SetPinAs(f.ctx, "echo", catalog.Pin{Version: "1.0.0", Actor: "bob", Action: intent.TriggerRollback, RestoreData: true}); err != nil {
		t.Fatal(err)
	}
	f.until("echo-3 completed", f.state(3, intent.RolloutCompleted))
	r := f.latest()
	if r.Trigger != intent.TriggerRollback || !r.RestoreData || r.Restored.IsZero() || r.Actor != "bob" {
		t.Errorf("rollback rollout %+v", r)
	}
	if _, restored := snaps.calls(); !reflect.DeepEqual(restored, []string{"echo-1", "echo-2"}) {
		t.Fatalf("restored %v, want echo-1 then echo-2", restored)
	}

	// A snapshot that fails pauses the rollout before any domain moves.
	snaps.mu.Lock()
	snaps.takeErr = fmt.Errorf("disk full")
	snaps.mu.Unlock()
	if err := f.cat.SetPin(f.ctx, "echo", "1.1.0", "ada"); err != nil {
		t.Fatal(err)
	}
	f.until("echo-4 paused", f.state(4, intent.RolloutPaused))
	if r := f.latest(); !strings.Contains(r.Failure, "disk full") || r.Domains[0].Phase != intent.DomainWaiting {
		t.Errorf("rollout %+v", r)
	}
}

// A 'plugin rollback -restore-data' rollout that fails itself turns back
// to the version it moved away from, which wrote since it began: it does
// not restore its own snapshot over that.
func TestFailedRestoringRollbackKeepsTheData(t *testing.T) {
	f := newFixture(t, 2)
	snaps := &snapshots{}
	f.c = rollout.New(rollout.Config{Store: f.st, Catalog: f.cat, Members: f.m, Node: "n1", Now: f.clock.Now, Snapshots: snaps})
	f.install(2)
	f.register("1.1.0", func(u *bundle.Upgrade) { u.Policy = bundle.UpgradeManual })
	if err := f.cat.SetPin(f.ctx, "echo", "1.1.0", "ada"); err != nil {
		t.Fatal(err)
	}
	f.until("echo-1 completed", f.state(1, intent.RolloutCompleted))
	f.bad["n2"] = "1.0.0"
	// The leader's clock after the pin's: the failure is newer than the
	// pin, which then does not restart a rollout to 1.0.0.
	f.clock.add(48 * time.Hour)
	if err := f.cat.SetPinAs(f.ctx, "echo", catalog.Pin{Version: "1.0.0", Actor: "bob", Action: intent.TriggerRollback, RestoreData: true}); err != nil {
		t.Fatal(err)
	}
	f.until("echo-2 rolled back", f.state(2, intent.RolloutRolledBack))
	if _, restored := snaps.calls(); len(restored) > 0 {
		t.Errorf("the failed rollback (back on 1.1.0) restored %v", restored)
	}
	if r := f.latest(); r.RestoreData || !r.Restored.IsZero() {
		t.Errorf("rollout %+v still asks a restore", r)
	}
}

// A restore that can never succeed (the snapshot is gone) pauses saying
// so, and resume finishes the rollout without restoring.
func TestRestoreOfAGoneSnapshotFinishesOnResume(t *testing.T) {
	f := newFixture(t, 2)
	snaps := &snapshots{restoreErr: fmt.Errorf("%w: deleted", rollout.ErrSnapshotGone)}
	f.c = rollout.New(rollout.Config{Store: f.st, Catalog: f.cat, Members: f.m, Node: "n1", Now: f.clock.Now, Snapshots: snaps})
	f.install(2)
	f.register("1.1.0", nil)
	f.until("ud1 done", func() bool { r := f.latest(); return r != nil && r.Domains[0].Phase == intent.DomainDone })
	ctl := &intent.RolloutControl{Plugin: "echo", ID: "echo-1", Action: intent.ControlAbort, RestoreData: true, Actor: "ada", At: f.clock.Now()}
	if _, err := f.db.Put(f.ctx, ctl); err != nil {
		t.Fatal(err)
	}
	f.until("paused", f.state(1, intent.RolloutPaused))
	if r := f.latest(); !strings.Contains(r.Failure, "cannot be restored") || !strings.Contains(r.Failure, "resume or abort to finish without restoring") {
		t.Fatalf("paused: %q", r.Failure)
	}
	f.clock.add(time.Second)
	ctl = &intent.RolloutControl{Plugin: "echo", ID: "echo-1", Action: intent.ControlResume, Actor: "ada", At: f.clock.Now()}
	if _, err := f.db.Put(f.ctx, ctl); err != nil {
		t.Fatal(err)
	}
	f.until("rolled back", f.state(1, intent.RolloutRolledBack))
	if r := f.latest(); !r.Restored.IsZero() {
		t.Errorf("recorded a restore: %+v", r)
	}
}

// A refused record at the next seq does not block the plugin's rollouts:
// the next one is numbered past it.
func TestRefusedRecordDoesNotBlockRollouts(t *testing.T) {
	f := newFixture(t, 3)
	f.install(3)
	f.register("1.1.0", nil)
	f.until("done", f.state(1, intent.RolloutCompleted))
	if _, err := f.st.Put(f.ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(intent.RolloutKey("echo", 2)), Value: []byte("{garbage")}); err != nil {
		t.Fatal(err)
	}
	f.register("1.2.0", nil)
	f.until("echo-3 completed", f.state(3, intent.RolloutCompleted))
	if got := f.versions(); !reflect.DeepEqual(got, all("1.2.0", 3)) {
		t.Errorf("assigned %v", got)
	}
}

// A pin and a failure are ordered by store revision, not by the clocks of
// the nodes that wrote them: a pin made before the rollout it started
// failed does not start it again, though the pinning node's clock is a
// day ahead of the leader's (the fixture's clock is a day behind the
// catalog's). A pin made after the failure does.
func TestFailedVersionStaysFailedWhenThePinnersClockIsAhead(t *testing.T) {
	f := newFixture(t, 3)
	f.install(3)
	f.register("1.1.0", func(u *bundle.Upgrade) { u.Policy = bundle.UpgradeManual })
	f.bad["n2"] = "1.1.0"
	if err := f.cat.SetPin(f.ctx, "echo", "1.1.0", "ada"); err != nil {
		t.Fatal(err)
	}
	f.until("echo-1 rolled back", f.state(1, intent.RolloutRolledBack))
	for range 100 {
		f.round()
	}
	if r := f.latest(); r.Seq != 1 {
		t.Fatalf("the pin made before the failure started %s again (%s)", r.ID, r.Reason)
	}
	delete(f.bad, "n2")
	if err := f.cat.SetPin(f.ctx, "echo", "1.1.0", "ada"); err != nil {
		t.Fatal(err)
	}
	f.until("echo-2 completed", f.state(2, intent.RolloutCompleted))
}

// Operator requests are applied in the order the cluster committed them:
// a request stamped by a clock an hour ahead does not hide the next one.
func TestOperatorRequestsInCommitOrder(t *testing.T) {
	f := newFixture(t, 3)
	f.install(3)
	f.register("1.1.0", nil)
	f.until("ud1 in its gate", func() bool { r := f.latest(); return r != nil && r.Domains[0].Phase == intent.DomainUpdating })
	ctl := &intent.RolloutControl{Plugin: "echo", ID: "echo-1", Action: intent.ControlPause, Actor: "ada", At: f.clock.Now().Add(time.Hour)}
	if _, err := f.db.Put(f.ctx, ctl); err != nil {
		t.Fatal(err)
	}
	f.until("paused", f.state(1, intent.RolloutPaused))
	ctl = &intent.RolloutControl{Plugin: "echo", ID: "echo-1", Action: intent.ControlAbort, Actor: "bob", At: f.clock.Now()}
	if _, err := f.db.Put(f.ctx, ctl); err != nil {
		t.Fatal(err)
	}
	f.until("rolled back", f.state(1, intent.RolloutRolledBack))
	if r := f.latest(); !strings.Contains(r.Failure, "aborted by bob") {
		t.Errorf("failure %q", r.Failure)
	}
}

// A node that fell back from the target does not try it again by itself,
// so under failure_action pause a resume alone cannot get it through: the
// resume is refused, saying what to do; once the version is pinned again
// the node may try it, and a resume goes on.
func TestResumeAfterFallbackNeedsAPin(t *testing.T) {
	f := newFixture(t, 3)
	f.install(3)
	f.register("1.1.0", func(u *bundle.Upgrade) { u.FailureAction = bundle.FailurePause })
	f.until("ud1 in its gate", func() bool { r := f.latest(); return r != nil && r.Domains[0].Phase == intent.DomainUpdating })
	if err := f.cat.MarkFailed(f.ctx, "n1", "echo", "1.1.0", "port in use"); err != nil {
		t.Fatal(err)
	}
	f.until("paused", f.state(1, intent.RolloutPaused))
	hint := "'plughost plugin pin echo 1.1.0' has it try again, then 'plughost rollout resume echo-1'"
	if r := f.latest(); r.FailedNode != "n1" || !strings.Contains(r.Failure, intent.NoRetry) || !strings.Contains(r.Failure, hint) {
		t.Fatalf("failure %q on %q", r.Failure, r.FailedNode)
	}
	resume := func(actor string) {
		t.Helper()
		ctl := &intent.RolloutControl{Plugin: "echo", ID: "echo-1", Action: intent.ControlResume, Actor: actor, At: f.clock.Now()}
		if _, err := f.db.Put(f.ctx, ctl); err != nil {
			t.Fatal(err)
		}
		for range 4 {
			f.round()
		}
	}
	resume("ada")
	if r := f.latest(); r.State != intent.RolloutPaused || r.ControlAt.IsZero() {
		t.Fatalf("resume without a pin: state %s, request applied at %v", r.State, r.ControlAt)
	}
	refused := false
	for _, ev := range f.events() {
		refused = refused || (ev.Type == rollout.EventRequest && strings.Contains(ev.Reason, "resume by ada refused: n1 fell back from 1.1.0") &&
			strings.Contains(ev.Reason, hint))
	}
	if !refused {
		t.Fatalf("no event says the resume was refused and why: %+v", f.events())
	}
	if err := f.cat.SetPin(f.ctx, "echo", "1.1.0", "bob"); err != nil {
		t.Fatal(err)
	}
	resume("bob")
	if r := f.latest(); r.State != intent.RolloutRunning && r.State != intent.RolloutCompleted {
		t.Fatalf("resume after a pin: state %s (%s)", r.State, r.Failure)
	}
	f.until("completed", f.state(1, intent.RolloutCompleted))
}

// The leader keeps the newest Keep rollouts of a plugin, deleting older
// ones with their snapshots, but never one whose down nodes are pending.
func TestOldRolloutsPruned(t *testing.T) {
	f := newFixture(t, 3)
	f.c = rollout.New(rollout.Config{Store: f.st, Catalog: f.cat, Members: f.m, Node: "n1", Now: f.clock.Now, Keep: 1})
	f.install(3)
	seqs := func() []int64 {
		rs, _, err := f.db.Rollouts(f.ctx, "echo")
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, it := range rs {
			out = append(out, it.Value.Seq)
		}
		return out
	}
	chunk := func(seq int64) []byte { return []byte(rollout.SnapshotPrefix("echo", seq) + "0000000000") }
	for i, v := range []string{"1.1.0", "1.2.0"} {
		f.register(v, nil)
		f.until(v+" completed", f.state(int64(i+1), intent.RolloutCompleted))
		if _, err := f.st.Put(f.ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: chunk(int64(i + 1)), Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	f.round()
	if got := seqs(); !reflect.DeepEqual(got, []int64{2}) {
		t.Fatalf("rollouts kept %v, want [2]", got)
	}
	for seq, want := range map[int64]bool{1: false, 2: true} {
		resp, err := f.st.Get(f.ctx, &storev1.GetRequest{Namespace: store.SystemNamespace, Key: chunk(seq)})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetKv() != nil; got != want {
			t.Errorf("echo-%d's snapshot kept %v, want %v", seq, got, want)
		}
	}
	// n3 down through two rollouts: both keep it pending, and are kept.
	f.m.setAlive("n3", false)
	f.register("1.3.0", nil)
	f.until("1.3.0 completed", f.state(3, intent.RolloutCompleted))
	f.register("1.4.0", nil)
	f.until("1.4.0 completed", f.state(4, intent.RolloutCompleted))
	f.round()
	if got := seqs(); !reflect.DeepEqual(got, []int64{3, 4}) {
		t.Fatalf("rollouts kept %v with n3 pending, want [3 4]", got)
	}
	f.m.setAlive("n3", true)
	f.until("echo-3 pruned once n3 converged", func() bool { return reflect.DeepEqual(seqs(), []int64{4}) })
}

// A restore is recorded as begun before it runs: a new leader that finds
// it begun with no outcome recorded does not restore again over what was
// written since, but pauses; resume restores (once), abort does not.
func TestRestoreNotRunTwiceAcrossLeaders(t *testing.T) {
	for _, action := range []string{intent.ControlResume, intent.ControlAbort} {
		t.Run(action, func(t *testing.T) {
			f := newFixture(t, 2)
			snaps := &snapshots{}
			leader := func() *rollout.Controller {
				return rollout.New(rollout.Config{Store: f.st, Catalog: f.cat, Members: f.m, Node: "n1", Now: f.clock.Now, Snapshots: snaps})
			}
			f.c = leader()
			f.install(2)
			f.register("1.1.0", nil)
			f.until("ud1 done", func() bool { r := f.latest(); return r != nil && r.Domains[0].Phase == intent.DomainDone })
			ctl := &intent.RolloutControl{Plugin: "echo", ID: "echo-1", Action: intent.ControlAbort, RestoreData: true, Actor: "ada", At: f.clock.Now()}
			if _, err := f.db.Put(f.ctx, ctl); err != nil {
				t.Fatal(err)
			}
			f.until("restore begun", func() bool { return !f.latest().Restoring.IsZero() })
			if _, restored := snaps.calls(); len(restored) > 0 {
				t.Fatalf("restored %v before the record said it would", restored)
			}
			f.c = leader() // the leader changed: did the old one restore?
			f.until("paused", f.state(1, intent.RolloutPaused))
			if r := f.latest(); !strings.Contains(r.Failure, "has no recorded outcome") {
				t.Fatalf("paused: %q", r.Failure)
			}
			if _, restored := snaps.calls(); len(restored) > 0 {
				t.Fatalf("the new leader restored %v again", restored)
			}
			f.clock.add(time.Second)
			ctl = &intent.RolloutControl{Plugin: "echo", ID: "echo-1", Action: action, Actor: "ada", At: f.clock.Now()}
			if _, err := f.db.Put(f.ctx, ctl); err != nil {
				t.Fatal(err)
			}
			f.until("rolled back", f.state(1, intent.RolloutRolledBack))
			want := []string{"echo-1"}
			if action == intent.ControlAbort {
				want = nil
			}
			if _, restored := snaps.calls(); !reflect.DeepEqual(restored, want) {
				t.Errorf("restored %v after %s, want %v", restored, action, want)
			}
		})
	}
}
