package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/intent"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	"github.com/plughost/plughost/store"
)

// managed supervises one plugin on this node. Its run loop is the only
// writer of cur; status readers take mu.
type managed struct {
	s         *Supervisor
	name      string
	log       hclog.Logger
	nudgeCh   chan struct{}
	restartCh chan struct{}

	mu       sync.Mutex
	cur      *instance
	state    operatorv1.InstanceState
	since    time.Time
	lastErr  string
	restarts int
	// draining is the version of the instance being drained, with
	// inFlight calls still in it; "" when none is.
	draining     string
	inFlight     int64
	restartTimes []time.Time
	desired      string
	pinned       string
	// assign is this node's assignment of the plugin; nil when it has none
	// (the plugin then stops here). role and epoch are those the running
	// instance was given: from the assignment, once it is applied.
	assign   *intent.Assignment
	role     string
	epoch    int64
	services []string
	declared []string
	// failed is the version that will not be started again on this node
	// until an operator acts (restart, a new pin) or a newer version arrives.
	failed      string
	failedPinAt time.Time
	pinAt       time.Time

	subs     map[int]chan Progress
	nextSub  int
	swapping bool

	// leaseStops is how many of the fence's lease stops of this plugin
	// the run loop has carried out (fence.go).
	leaseStops int

	// refusals already recorded as events: catalog records and installed
	// files refused on read, by message.
	refusals map[string]bool

	// fetching is the version whose bundle is being fetched from a peer;
	// fetchErr the last failure recorded as an event, and fetchWait the
	// wait before the next try, doubled while the failure repeats.
	fetching  string
	fetchErr  string
	fetchWait time.Duration
}

func newManaged(s *Supervisor, name string) *managed {
	return &managed{
		s:         s,
		name:      name,
		log:       s.log.With("plugin", name),
		nudgeCh:   make(chan struct{}, 1),
		restartCh: make(chan struct{}, 1),
		state:     operatorv1.InstanceState_INSTANCE_STATE_STARTING,
		since:     time.Now(),
	}
}

func (m *managed) nudge() {
	select {
	case m.nudgeCh <- struct{}{}:
	default:
	}
}

func (m *managed) requestRestart() {
	select {
	case m.restartCh <- struct{}{}:
	default:
	}
}

func (m *managed) setState(st operatorv1.InstanceState, lastErr string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != st {
		m.state, m.since = st, time.Now()
	}
	if lastErr != "" {
		m.lastErr = lastErr
	}
	switch {
	case st == operatorv1.InstanceState_INSTANCE_STATE_RUNNING && m.role == intent.RoleStandby:
		m.s.cfg.Router.SetState(m.name, "standby: the active instance runs on another node")
	case st == operatorv1.InstanceState_INSTANCE_STATE_RUNNING:
		m.s.cfg.Router.SetState(m.name, "running")
	default:
		state := stateWord(st)
		if m.lastErr != "" && st != operatorv1.InstanceState_INSTANCE_STATE_STARTING {
			state += ": " + m.lastErr
		}
		m.s.cfg.Router.SetState(m.name, state)
	}
	m.publishLocked()
}

// publishLocked hands the plugin's state to the observer, which writes it
// to the store when it can. m.mu is held.
func (m *managed) publishLocked() {
	if m.assign == nil && m.cur == nil {
		// Not assigned here and nothing runs: no record.
		m.s.obs.remove(m.name)
		return
	}
	obs := intent.Observation{
		Plugin:    m.name,
		Version:   m.desired,
		Role:      m.role,
		Epoch:     m.epoch,
		State:     stateWord(m.state),
		Since:     m.since.UTC(),
		Restarts:  m.restarts,
		LastError: m.lastErr,
		Services:  slices.Clone(m.services),
		Draining:  m.draining,
		InFlight:  m.inFlight,
	}
	if m.cur != nil {
		obs.Version = m.cur.entry.Version
		if st, since := m.cur.getState(); st == operatorv1.InstanceState_INSTANCE_STATE_RUNNING && m.state == st {
			obs.Healthy = true
			if since.After(m.since) {
				obs.Since = since.UTC()
			}
		}
	}
	m.s.obs.set(obs)
}

func (m *managed) current() *instance {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur
}

func (m *managed) assignment() *intent.Assignment {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.assign
}

func (m *managed) setAssignment(a *intent.Assignment) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a != nil {
		c := *a
		a = &c
	}
	m.assign = a
}

func (m *managed) setCurrent(in *instance) {
	m.mu.Lock()
	m.cur = in
	m.mu.Unlock()
}

// run is the plugin's supervision loop.
func (m *managed) run(ctx context.Context) {
	var backoffC <-chan time.Time
	attempt := 0
	for {
		var exitC <-chan struct{}
		var unhealthyC <-chan string
		if cur := m.current(); cur != nil {
			exitC, unhealthyC = cur.Exited(), cur.unhealthy
		}
		select {
		case <-ctx.Done():
			m.shutdown()
			return
		case <-m.nudgeCh:
		case <-m.restartCh:
			m.mu.Lock()
			m.failed, m.restartTimes = "", nil
			m.mu.Unlock()
			attempt, backoffC = 0, nil
			if cur := m.current(); cur != nil {
				m.retire(cur, "restart requested by operator")
			}
			m.s.events.Record(m.name, m.desiredVersion(), "", "restart", "restart requested by operator")
		case <-exitC:
			cur := m.current()
			kind := "exited"
			if ok, _ := cur.oomKilled(); ok {
				kind = "oom-killed"
			}
			backoffC = m.lost(cur, kind, cur.exitReason(), &attempt)
		case reason := <-unhealthyC:
			cur := m.current()
			cur.kill()
			backoffC = m.lost(cur, "unhealthy", "health: "+reason, &attempt)
		case <-backoffC:
			backoffC = nil
		}
		if backoffC != nil && !m.newVersionArrived(ctx) {
			continue
		}
		backoffC = nil
		// attempt is not reset by a successful start: an instance that
		// passes its health gate and dies soon after must still back off
		// longer each time (lost resets it once an instance lived long).
		if err := m.reconcile(ctx); err != nil && ctx.Err() == nil {
			backoffC = m.startFailed(err, &attempt)
		}
	}
}

// lost handles an instance that died or failed its liveness checks: it stops
// routing to it, records why, and schedules a restart, or gives up after a
// crash loop.
func (m *managed) lost(in *instance, kind, reason string, attempt *int) <-chan time.Time {
	m.s.cfg.Router.SetBackend(m.name, nil)
	in.stop(context.Background())
	m.setCurrent(nil)
	m.log.Warn("instance lost", "version", in.entry.Version, "reason", reason)
	// The wait doubles while instances keep dying young; one that outlived
	// the longest wait starts the doubling afresh.
	if time.Since(in.Started) >= m.s.cfg.BackoffMax {
		*attempt = 0
	}
	m.s.events.Record(m.name, in.entry.Version, in.Spec.InstanceID, kind, reason)
	return m.scheduleRestart(in.entry.Version, reason, attempt)
}

func (m *managed) startFailed(err error, attempt *int) <-chan time.Time {
	m.log.Warn("start failed", "error", err)
	version := m.desiredVersion()
	m.s.events.Record(m.name, version, "", "start-failed", err.Error())
	return m.scheduleRestart(version, err.Error(), attempt)
}

// scheduleRestart counts a restart; within the crash-loop limit it returns a
// backoff timer, past it it marks the version failed and returns nil.
func (m *managed) scheduleRestart(version, reason string, attempt *int) <-chan time.Time {
	cfg := m.s.cfg
	now := time.Now()
	m.mu.Lock()
	cut := 0
	for cut < len(m.restartTimes) && now.Sub(m.restartTimes[cut]) > cfg.CrashLoopWindow {
		cut++
	}
	m.restartTimes = m.restartTimes[cut:]
	// A loss after CrashLoopRestarts restarts within the window is a crash
	// loop; only restarts that are made are counted.
	loop := len(m.restartTimes) >= cfg.CrashLoopRestarts
	if loop {
		m.failed, m.failedPinAt = version, m.pinAt
	} else {
		m.restarts++
		m.restartTimes = append(m.restartTimes, now)
	}
	m.mu.Unlock()
	if loop {
		why := fmt.Sprintf("crash loop: %d restarts within %s, last: %s (fix the plugin, then 'plughost plugin restart %s' or add a new version)",
			cfg.CrashLoopRestarts, cfg.CrashLoopWindow, reason, m.name)
		m.setState(operatorv1.InstanceState_INSTANCE_STATE_FAILED, why)
		m.s.events.Record(m.name, version, "", "failed", why)
		return nil
	}
	d := backoff(cfg.BackoffInitial, cfg.BackoffMax, *attempt)
	*attempt++
	m.setState(operatorv1.InstanceState_INSTANCE_STATE_BACKOFF, reason)
	m.s.events.Record(m.name, version, "", "backoff", fmt.Sprintf("restarting in %s", d.Round(time.Millisecond)))
	return time.After(d)
}

// backoff is initial doubling per attempt up to max, with ±20% jitter.
func backoff(initial, max time.Duration, attempt int) time.Duration {
	d := initial
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	j := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(d) * j)
}

// newVersionArrived reports whether the desired version moved away from the
// version that is backing off or failed, which ends the wait.
func (m *managed) newVersionArrived(ctx context.Context) bool {
	a := m.assignment()
	if a == nil {
		return true // not assigned here any more: stop waiting, stop
	}
	e, pin, err := m.s.cfg.Catalog.Assigned(ctx, m.s.cfg.Node.GetName(), m.name, a.Version, m.runningVersion())
	if err != nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	failing := m.failed
	if failing == "" {
		failing = m.desired
	}
	repinned := pin != nil && !pin.At.Equal(m.pinAt)
	return e.Version != failing || repinned
}

func (m *managed) runningVersion() string {
	if cur := m.current(); cur != nil {
		return cur.entry.Version
	}
	return ""
}

func (m *managed) desiredVersion() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.desired
}

// reconcile makes what runs match this node's assignment.
func (m *managed) reconcile(ctx context.Context) error {
	if m.holdFenced() {
		return nil
	}
	a := m.assignment()
	if a == nil {
		m.unassigned()
		// Records that fail their checks are never placed; say why
		// nothing of them runs.
		if refused, _ := m.s.cfg.Catalog.Refused(ctx, m.name); len(refused) > 0 {
			for _, r := range refused {
				m.refuse("", r.Error())
			}
			m.setState(operatorv1.InstanceState_INSTANCE_STATE_FAILED, refused[0].Error())
		}
		return nil
	}
	if a.Role == intent.RoleActive && a.Epoch == 0 {
		// The controller stamps the active's epoch right after choosing
		// it: until then it must not start as active.
		if m.current() == nil {
			m.mu.Lock()
			m.lastErr = "assigned as the active instance; waiting for the placement controller to give it its epoch"
			m.mu.Unlock()
			m.setState(operatorv1.InstanceState_INSTANCE_STATE_STARTING, "")
		}
		return nil
	}
	refused, _ := m.s.cfg.Catalog.Refused(ctx, m.name)
	for _, r := range refused {
		m.refuse("", r.Error())
	}
	e, pin, err := m.s.cfg.Catalog.Assigned(ctx, m.s.cfg.Node.GetName(), m.name, a.Version, m.runningVersion())
	if err != nil {
		switch {
		case errors.Is(err, catalog.ErrUnknownVersion):
			// The catalog is read linearizably; a version the controller
			// assigned and the catalog lacks was removed meanwhile: the
			// next assignment replaces this one.
			why := fmt.Sprintf("%s %s is assigned to this node but not registered", m.name, a.Version)
			m.refuse(a.Version, why)
			if m.current() == nil {
				m.setState(operatorv1.InstanceState_INSTANCE_STATE_FAILED, why)
			}
			return nil
		case errors.Is(err, catalog.ErrUnknownPlugin):
			if len(refused) > 0 && m.current() == nil {
				m.setState(operatorv1.InstanceState_INSTANCE_STATE_FAILED, refused[0].Error())
			}
			return nil
		case errors.Is(err, catalog.ErrInvalidRecord):
			// The pinned version's record: nothing to retry until it is
			// replaced, which nudges this plugin again.
			m.refuse("", err.Error())
			if m.current() == nil {
				m.setState(operatorv1.InstanceState_INSTANCE_STATE_FAILED, err.Error())
			}
			return nil
		}
		return fmt.Errorf("reading the desired version: %w", err)
	}
	m.mu.Lock()
	m.desired, m.pinned = e.Version, ""
	var pinAt time.Time
	if pin != nil {
		m.pinned, pinAt = pin.Version, pin.At
	}
	if !pinAt.Equal(m.pinAt) || m.failed != e.Version {
		// A new pin, or another version: a failed version gets another try
		// only by the operator's word or when it is no longer desired.
		if m.failed != "" && (m.failed != e.Version || !pinAt.Equal(m.failedPinAt)) {
			m.failed = ""
			m.restartTimes = nil
		}
	}
	m.pinAt = pinAt
	failed := m.failed
	m.services = e.Manifest.Services
	m.mu.Unlock()

	if err := m.declare(e.Manifest.Services); err != nil {
		m.setState(operatorv1.InstanceState_INSTANCE_STATE_FAILED, err.Error())
		return nil
	}
	if failed == e.Version {
		return nil
	}
	exe, err := m.s.executable(e)
	if err == nil && m.s.cfg.CheckInstalled != nil {
		err = m.s.cfg.CheckInstalled(e, filepath.Dir(exe))
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Installed files that are not what the agent installed: refuse
		// them until the bundle is added again, which reconciles again.
		m.refuse(e.Version, err.Error())
		if m.current() == nil {
			m.setState(operatorv1.InstanceState_INSTANCE_STATE_FAILED, err.Error())
		}
		return nil
	} else if err != nil && m.s.cfg.Fetch != nil {
		// The catalog is shared by the cluster, the files are per node:
		// fetch them from a peer; the install reconciles again.
		m.fetch(ctx, e)
		return nil
	} else if err != nil {
		// The catalog is shared by the cluster, the files are per node:
		// wait for the bundle to be added here, which reconciles again.
		why := fmt.Sprintf("%s %s is registered in the cluster but its bundle is not on this node: add it here ('plughost bundle add' to this node, or drop it into its bundles dir)", m.name, e.Version)
		m.mu.Lock()
		m.lastErr = why
		m.publishLocked()
		m.mu.Unlock()
		if m.current() == nil {
			m.setState(operatorv1.InstanceState_INSTANCE_STATE_STARTING, why)
		}
		return nil
	}
	cur := m.current()
	if cur != nil && cur.entry.Version == e.Version {
		m.applyRole(cur, a)
		return nil
	}
	m.mu.Lock()
	m.role, m.epoch = a.Role, a.Epoch
	m.mu.Unlock()
	m.setSwapping(true)
	defer m.setSwapping(false)
	if cur == nil {
		return m.startFresh(ctx, e)
	}
	return m.swap(ctx, cur, e, actorOf(pin))
}

// fetchRetryMax caps the wait between tries of a fetch that keeps failing
// the same way.
const fetchRetryMax = time.Minute

// fetch starts fetching e's bundle from a peer, unless it is being
// fetched already. While nothing of the plugin runs, its state is
// starting and its last error says how far the fetch got. A failed fetch
// is recorded and tried again after FetchRetry, twice as long each time
// it fails the same way (at most fetchRetryMax).
func (m *managed) fetch(ctx context.Context, e *catalog.Entry) {
	m.mu.Lock()
	if m.fetching == e.Version {
		m.mu.Unlock()
		return
	}
	m.fetching = e.Version
	m.mu.Unlock()
	progress := func(msg string) {
		if m.current() == nil {
			m.setState(operatorv1.InstanceState_INSTANCE_STATE_STARTING, msg)
		} else {
			m.mu.Lock()
			m.lastErr = msg
			m.mu.Unlock()
		}
	}
	progress(fmt.Sprintf("%s %s is registered in the cluster but its bundle is not on this node: fetching it from a peer", m.name, e.Version))
	m.s.wg.Add(1)
	go func() {
		defer m.s.wg.Done()
		err := m.s.cfg.Fetch(ctx, e, progress)
		m.mu.Lock()
		m.fetching = ""
		repeated := err != nil && m.fetchErr == err.Error()
		switch {
		case err == nil:
			m.fetchErr, m.fetchWait = "", 0
		case repeated:
			m.fetchWait = min(2*m.fetchWait, fetchRetryMax)
		default:
			m.fetchErr, m.fetchWait = err.Error(), m.s.cfg.FetchRetry
		}
		wait := m.fetchWait
		m.mu.Unlock()
		if err == nil {
			m.nudge()
			return
		}
		if ctx.Err() != nil {
			return
		}
		why := fmt.Sprintf("%v; trying again in %s (or 'plughost bundle add' it on this node)", err, wait)
		progress(why)
		if !repeated {
			// Once per reason: a fetch that keeps failing the same way
			// does not fill the events.
			m.log.Warn("bundle fetch failed", "version", e.Version, "error", err)
			m.s.events.Record(m.name, e.Version, "", "fetch-failed", err.Error())
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
			m.nudge()
		}
	}()
}

// refuse records, once per reason, that something of the plugin was
// refused on read and will not run.
func (m *managed) refuse(version, reason string) {
	m.mu.Lock()
	if m.refusals == nil {
		m.refusals = map[string]bool{}
	}
	seen := m.refusals[reason]
	m.refusals[reason] = true
	m.mu.Unlock()
	if seen {
		return
	}
	m.log.Error("refused", "version", version, "reason", reason)
	m.s.events.Record(m.name, version, "", "refused", reason)
}

func (m *managed) setSwapping(v bool) {
	m.mu.Lock()
	m.swapping = v
	m.mu.Unlock()
}

func actorOf(pin *catalog.Pin) string {
	if pin != nil && pin.Actor != "" {
		return pin.Actor
	}
	return "agent"
}

// declare tells the router which services this plugin serves.
func (m *managed) declare(services []string) error {
	m.mu.Lock()
	same := slices.Equal(m.declared, services)
	m.mu.Unlock()
	if same {
		return nil
	}
	// Declare replaces the plugin's services in one step: calls never see
	// the plugin undeclared in between.
	if err := m.s.cfg.Router.Declare(m.name, services); err != nil {
		return fmt.Errorf("plugin %s cannot be routed: %w", m.name, err)
	}
	m.mu.Lock()
	m.declared = slices.Clone(services)
	m.mu.Unlock()
	return nil
}

// startFresh starts e when nothing of the plugin runs: it is routed at its
// first healthy check, since there is nothing to protect.
func (m *managed) startFresh(ctx context.Context, e *catalog.Entry) error {
	m.setState(operatorv1.InstanceState_INSTANCE_STATE_STARTING, "")
	began := time.Now()
	m.emit(Progress{Phase: operatorv1.SwapPhase_SWAP_PHASE_STARTING, To: e.Version, Message: "starting " + e.Version})
	in, err := m.s.startInstance(ctx, e, 0, nil)
	if err != nil {
		m.emit(Progress{Phase: operatorv1.SwapPhase_SWAP_PHASE_FELL_BACK, To: e.Version, Message: err.Error(), Elapsed: time.Since(began)})
		return err
	}
	m.serve(in)
	m.emit(Progress{Phase: operatorv1.SwapPhase_SWAP_PHASE_DONE, To: e.Version, Message: e.Version + " serves", Elapsed: time.Since(began)})
	m.s.events.Record(m.name, e.Version, in.Spec.InstanceID, "started", "healthy and serving")
	return nil
}

// serve makes in the instance the router sends calls to, in one atomic
// switch, and returns the instance that served before (or nil).
func (m *managed) serve(in *instance) {
	in.setState(operatorv1.InstanceState_INSTANCE_STATE_RUNNING)
	m.mu.Lock()
	m.cur = in
	m.lastErr = ""
	m.mu.Unlock()
	if m.routed() {
		m.s.cfg.Router.SetBackend(m.name, in.backend)
	} else if m.s.cfg.Router.Backend(m.name) != nil {
		m.s.cfg.Router.SetBackend(m.name, nil)
	}
	m.setState(operatorv1.InstanceState_INSTANCE_STATE_RUNNING, "")
}

// routed reports whether calls go to the plugin's instance here: not to a
// singleton's standby.
func (m *managed) routed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.role != intent.RoleStandby
}

// applyRole gives the running instance the role and epoch of its
// assignment: a standby is not routed to, an active (or any other) is; the
// plugin is told (SetRole) and its store writes are fenced by it.
func (m *managed) applyRole(cur *instance, a *intent.Assignment) {
	m.mu.Lock()
	changed := m.role != a.Role || m.epoch != a.Epoch
	from := m.role
	m.mu.Unlock()
	if !changed {
		return
	}
	if a.Role == intent.RoleStandby {
		m.s.cfg.Router.SetBackend(m.name, nil) // no call reaches it once it is standby
	}
	m.mu.Lock()
	m.role, m.epoch = a.Role, a.Epoch
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), cur.entry.Manifest.Health.Timeout.Duration+5*time.Second)
	err := cur.SetRole(ctx, pluginRole(a.Role), a.Epoch)
	cancel()
	if err != nil {
		// Its writes are fenced by the agent all the same.
		m.log.Warn("telling the plugin its role failed", "role", a.Role, "epoch", a.Epoch, "error", err)
	}
	if a.Role != intent.RoleStandby {
		m.s.cfg.Router.SetBackend(m.name, cur.backend)
	}
	m.s.events.Record(m.name, cur.entry.Version, cur.Spec.InstanceID, "role",
		fmt.Sprintf("%s → %s (epoch %d)", orNone(from), orNone(a.Role), a.Epoch))
	st, _ := cur.getState()
	m.setState(st, "")
}

// pluginRole is a role in the plugin protocol's terms.
func pluginRole(role string) pluginv1.Role {
	switch role {
	case intent.RoleActive:
		return pluginv1.Role_ROLE_ACTIVE
	case intent.RoleStandby:
		return pluginv1.Role_ROLE_STANDBY
	}
	return pluginv1.Role_ROLE_UNSPECIFIED
}

// storeRole is the role the agent holds the plugin's instances to when
// they write to the store (store.Binding.Role).
func (m *managed) storeRole() store.Role {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch m.role {
	case intent.RoleActive:
		return store.Role{Kind: store.RoleActive, Epoch: m.epoch}
	case intent.RoleStandby:
		return store.Role{Kind: store.RoleStandby, Why: "this node runs the singleton's standby; the active runs on another node"}
	}
	return store.Role{}
}

func orNone(role string) string {
	if role == "" {
		return "none"
	}
	return role
}

// unassigned stops the plugin on this node, draining calls in flight: the
// node has no assignment of it any more.
func (m *managed) unassigned() {
	m.mu.Lock()
	m.failed, m.restartTimes, m.desired = "", nil, ""
	m.mu.Unlock()
	if cur := m.current(); cur != nil {
		m.setSwapping(true)
		m.retire(cur, "no longer assigned to this node")
		m.setSwapping(false)
	}
	m.mu.Lock()
	m.role, m.epoch, m.lastErr = "", 0, ""
	m.mu.Unlock()
	m.setState(operatorv1.InstanceState_INSTANCE_STATE_STOPPED, "")
}

// setDraining reports the instance of version being drained with inFlight
// calls in it ("" when none is), in the plugin's observation.
func (m *managed) setDraining(version string, inFlight int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.draining == version && m.inFlight == inFlight {
		return
	}
	m.draining, m.inFlight = version, inFlight
	m.publishLocked()
}

// retire stops routing to in, drains and stops it, and returns how many
// calls the drain timeout cut off.
func (m *managed) retire(in *instance, why string) int64 {
	if m.s.cfg.Router.Backend(m.name) == in.backend {
		m.s.cfg.Router.SetBackend(m.name, nil)
	}
	defer m.setDraining("", 0)
	cut := m.s.drainAndStop(context.Background(), in, func(inFlight int64, left time.Duration) {
		m.setDraining(in.entry.Version, inFlight)
		m.emit(Progress{Phase: operatorv1.SwapPhase_SWAP_PHASE_DRAINING, From: in.entry.Version, InFlight: inFlight, TimeLeft: left,
			Message: fmt.Sprintf("draining %s: %d calls in flight", in.entry.Version, inFlight)})
	})
	if m.current() == in {
		m.setCurrent(nil)
	}
	detail := why
	if cut > 0 {
		detail = fmt.Sprintf("%s; %d calls still in flight were cut off at the drain timeout", why, cut)
	}
	m.s.events.Record(m.name, in.entry.Version, in.Spec.InstanceID, "stopped", detail)
	return cut
}

// shutdown stops the plugin when the agent stops.
func (m *managed) shutdown() {
	cur := m.current()
	if cur == nil {
		return
	}
	m.s.cfg.Router.SetBackend(m.name, nil)
	cur.stop(context.Background())
	m.setCurrent(nil)
	m.setState(operatorv1.InstanceState_INSTANCE_STATE_STOPPED, "")
}

func stateWord(st operatorv1.InstanceState) string {
	switch st {
	case operatorv1.InstanceState_INSTANCE_STATE_STARTING:
		return "starting"
	case operatorv1.InstanceState_INSTANCE_STATE_RUNNING:
		return "running"
	case operatorv1.InstanceState_INSTANCE_STATE_UNHEALTHY:
		return "unhealthy"
	case operatorv1.InstanceState_INSTANCE_STATE_DRAINING:
		return "draining"
	case operatorv1.InstanceState_INSTANCE_STATE_BACKOFF:
		return "backoff"
	case operatorv1.InstanceState_INSTANCE_STATE_FAILED:
		return "failed"
	case operatorv1.InstanceState_INSTANCE_STATE_STOPPED:
		return "stopped"
	}
	return "unknown"
}
