// Package rollout is the leader-only rollout controller: it turns a change
// of a plugin's intended version into a rollout record
// (rollout/<plugin>/<seq>, see host/intent) and moves it one upgrade domain
// at a time, gated on the nodes' observations, rolling back everywhere on
// failure. The placement controller (host/controller) reads the record to
// choose each assignment's version; nodes do their part with their own
// swap. Like every leader-only task it is level-triggered and keeps
// nothing between terms: a new leader resumes from the record.
package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/controller"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/supervisor"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// Catalog is what the controller needs of the plugin catalog;
// *catalog.Catalog has it.
type Catalog interface {
	GetPin(ctx context.Context, name string) (*catalog.Pin, error)
	Get(ctx context.Context, name, version string) (*catalog.Entry, error)
	Failures(ctx context.Context, node, name string) (map[string]catalog.Failure, error)
	AddHistory(ctx context.Context, name string, r catalog.Record) error
}

var _ Catalog = (*catalog.Catalog)(nil)

// noSnapshots is the Snapshots of an agent without them.
type noSnapshots struct{}

func (noSnapshots) Take(context.Context, *intent.Rollout) (*intent.RolloutSnapshot, error) {
	return &intent.RolloutSnapshot{Skipped: "this agent takes no data snapshots"}, nil
}

func (noSnapshots) Restore(context.Context, *intent.Rollout) error {
	return errors.New("this agent cannot restore data snapshots")
}

// Config configures a Controller.
type Config struct {
	Store   intent.Store
	Catalog Catalog
	Members controller.Membership
	// Snapshots: nil takes none.
	Snapshots Snapshots
	// Node is this agent's node name: the events it writes name it.
	Node   string
	Logger hclog.Logger
	// Tick is how often a pass runs while a health gate runs, so that
	// time-based gates pass or fail on time.
	Tick time.Duration
	// Resync is the longest time between two passes, changes or not.
	Resync time.Duration
	// Now is the controller's clock; time.Now by default.
	Now func() time.Time
	// Keep is how many rollouts of each plugin are kept (DefaultKeep
	// when 0): older finished ones are deleted with their snapshots.
	Keep int
}

// Defaults.
const (
	DefaultKeep   = 20
	DefaultTick   = 250 * time.Millisecond
	DefaultResync = 30 * time.Second
	debounce      = 20 * time.Millisecond
	retryPause    = 500 * time.Millisecond
)

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Snapshots == nil {
		c.Snapshots = noSnapshots{}
	}
	if c.Keep <= 0 {
		c.Keep = DefaultKeep
	}
	if c.Tick <= 0 {
		c.Tick = DefaultTick
	}
	if c.Resync <= 0 {
		c.Resync = DefaultResync
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Controller is the rollout controller.
type Controller struct {
	cfg Config
	db  *intent.DB
	log hclog.Logger
	// blocked is the last reason logged why a plugin's rollout does not
	// start, so each is logged once (logging only: nothing is decided
	// from it).
	blocked map[string]string
	// refused are the refused rollout records logged (key -> mod
	// revision), and casFails the creates refused in a row by plugin:
	// each logged once (logging only).
	refused  map[string]int64
	casFails map[string]int
	// restoring are the rollouts (by ID) whose Restoring this
	// controller recorded and has not restored yet: only those it
	// restores; a Restoring it did not record may have been restored.
	restoring map[string]bool
}

// New returns a Controller.
func New(cfg Config) *Controller {
	cfg = cfg.withDefaults()
	return &Controller{cfg: cfg, db: intent.New(cfg.Store), log: cfg.Logger, blocked: map[string]string{},
		refused: map[string]int64{}, casFails: map[string]int{}, restoring: map[string]bool{}}
}

// maxCASFails is how many creates of a plugin's rollout refused in a row
// are logged as an error.
const maxCASFails = 5

// rolloutKeySeq parses a rollout record's key.
func rolloutKeySeq(key string) (plugin string, seq int64, ok bool) {
	rest, ok := strings.CutPrefix(key, intent.PrefixRollout)
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return "", 0, false
	}
	seq, err := strconv.ParseInt(rest[i+1:], 10, 64)
	if err != nil || seq <= 0 || intent.RolloutKey(rest[:i], seq) != key {
		return "", 0, false
	}
	return rest[:i], seq, true
}

// watched are the _sys prefixes whose changes make a pass.
var watched = append([]string{intent.PrefixIntent, intent.PrefixObserve, intent.PrefixRollout, intent.PrefixRolloutCtl,
	intent.PrefixVersionFail, intent.PrefixAssign, "failed/"}, catalog.WatchPrefixes...)

// Run runs passes until ctx ends, then returns ctx's error: on a change of
// the records it reads or of membership, every Tick while a gate runs,
// and every Resync. It is a leader-only task (host/leader).
func (c *Controller) Run(ctx context.Context) error {
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	members, stop := c.cfg.Members.MemberChanges()
	defer stop()
	wctx, cancel := context.WithCancel(ctx)
	var watches sync.WaitGroup
	from := c.cfg.Store.Revision() + 1
	// A watch a prefix: they have no common prefix but _sys itself,
	// whose events and snapshot chunks would wake a watch of it all.
	for _, p := range watched {
		watches.Go(func() {
			_ = c.db.Watch(wctx, from, []string{p}, c.log, func(intent.Change) { poke() })
		})
	}
	defer func() {
		cancel()
		watches.Wait()
	}()
	timer := time.NewTimer(0) // the first pass at once
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-kick:
		case <-members:
		case <-timer.C:
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(debounce):
		}
		select {
		case <-kick:
		default:
		}
		next := c.cfg.Resync
		active, err := c.Pass(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			c.log.Warn("rollout pass failed; trying again", "error", err, "retry_in", retryPause)
			next = retryPause
		case active:
			next = c.cfg.Tick
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// world is what one pass reads.
type world struct {
	now      time.Time
	intents  map[string]intent.Intent
	assigned map[string]map[string]string // plugin -> node -> version
	observed map[string]map[string]intent.Observation
	rollouts map[string][]intent.Item[intent.Rollout] // by plugin, oldest first
	controls map[string]intent.Item[intent.RolloutControl]
	vfailed  map[string]map[string]intent.Item[intent.VersionFailure]
	nodes    map[string]NodeView
	// topSeq is, by plugin, the highest seq of a rollout key present,
	// refused records' too: a new rollout is numbered past it.
	topSeq map[string]int64
}

// Pass reads the store and moves every plugin's rollout one step; active
// reports whether a health gate runs (a pass is due in a Tick).
func (c *Controller) Pass(ctx context.Context) (active bool, err error) {
	w, err := c.read(ctx)
	if err != nil {
		return false, err
	}
	plugins := map[string]bool{}
	for p := range w.intents {
		plugins[p] = true
	}
	for p := range w.rollouts {
		plugins[p] = true
	}
	names := make([]string, 0, len(plugins))
	for p := range plugins {
		names = append(names, p)
	}
	sort.Strings(names)
	var errs []error
	for _, p := range names {
		a, err := c.reconcile(ctx, w, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("plugin %s: %w", p, err))
		}
		active = active || a
		if err := c.prune(ctx, w, p); err != nil {
			errs = append(errs, fmt.Errorf("plugin %s: pruning its rollouts: %w", p, err))
		}
	}
	return active, errors.Join(errs...)
}

// prune deletes plugin's oldest rollouts but the newest Keep, each with
// its snapshot: never the newest, an unfinished one, or one whose nodes
// are pending (they still converge). Each pass reads what is left.
func (c *Controller) prune(ctx context.Context, w *world, plugin string) error {
	list := w.rollouts[plugin]
	extra := len(list) - c.cfg.Keep
	if extra <= 0 {
		return nil
	}
	var t intent.Txn
	var gone []int64
	for _, it := range list[:len(list)-1] {
		if len(gone) == extra || t.Len() >= maxTxnOps-2 {
			break
		}
		if r := it.Value; !r.Done() || len(r.Pending) > 0 {
			continue
		}
		t.IfModRevision(it.Value.Key(), it.ModRevision).Delete(it.Value.Key()).DeletePrefix(SnapshotPrefix(plugin, it.Value.Seq))
		gone = append(gone, it.Value.Seq)
	}
	if len(gone) == 0 {
		return nil
	}
	if _, ok, err := c.db.Commit(ctx, &t); err != nil || !ok {
		return err // changed since read: the next pass prunes
	}
	c.log.Debug("old rollouts deleted", "plugin", plugin, "seqs", gone, "keep", c.cfg.Keep)
	w.rollouts[plugin] = slices.DeleteFunc(list, func(it intent.Item[intent.Rollout]) bool { return slices.Contains(gone, it.Value.Seq) })
	return nil
}

func (c *Controller) read(ctx context.Context) (*world, error) {
	w := &world{now: c.cfg.Now(), intents: map[string]intent.Intent{}, assigned: map[string]map[string]string{},
		observed: map[string]map[string]intent.Observation{}, rollouts: map[string][]intent.Item[intent.Rollout]{},
		controls: map[string]intent.Item[intent.RolloutControl]{}, vfailed: map[string]map[string]intent.Item[intent.VersionFailure]{}, nodes: map[string]NodeView{},
		topSeq: map[string]int64{}}
	ins, _, err := c.db.Intents(ctx)
	if err != nil {
		return nil, err
	}
	for _, it := range ins {
		w.intents[it.Value.Plugin] = it.Value
	}
	as, _, err := c.db.Assignments(ctx)
	if err != nil {
		return nil, err
	}
	for _, it := range as {
		a := it.Value
		if w.assigned[a.Plugin] == nil {
			w.assigned[a.Plugin] = map[string]string{}
		}
		w.assigned[a.Plugin][a.Node] = a.Version
	}
	obs, _, err := c.db.Observations(ctx)
	if err != nil {
		return nil, err
	}
	for _, it := range obs {
		o := it.Value
		if w.observed[o.Plugin] == nil {
			w.observed[o.Plugin] = map[string]intent.Observation{}
		}
		w.observed[o.Plugin][o.Node] = o
	}
	rs, refused, err := c.db.AllRollouts(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, e := range refused {
		var re *intent.RecordError
		if !errors.As(e, &re) {
			c.log.Warn("a rollout record is refused", "error", e)
			continue
		}
		seen[re.Key] = true
		if plugin, seq, ok := rolloutKeySeq(re.Key); ok {
			w.topSeq[plugin] = max(w.topSeq[plugin], seq)
		}
		if c.refused[re.Key] != re.ModRevision {
			c.refused[re.Key] = re.ModRevision
			c.log.Warn("a rollout record is refused: the plugin's next rollout is numbered past it, and its rollouts go on from the newest valid one",
				"key", re.Key, "error", e)
		}
	}
	for k := range c.refused {
		if !seen[k] {
			delete(c.refused, k)
		}
	}
	for _, it := range rs {
		w.rollouts[it.Value.Plugin] = append(w.rollouts[it.Value.Plugin], it)
		w.topSeq[it.Value.Plugin] = max(w.topSeq[it.Value.Plugin], it.Value.Seq)
	}
	for _, list := range w.rollouts {
		sort.Slice(list, func(i, j int) bool { return list[i].Value.Seq < list[j].Value.Seq })
	}
	ctls, _, err := intent.List[intent.RolloutControl](ctx, c.db, intent.PrefixRolloutCtl)
	if err != nil {
		return nil, err
	}
	for _, it := range ctls {
		w.controls[it.Value.Plugin] = it
	}
	vfs, _, err := intent.List[intent.VersionFailure](ctx, c.db, intent.PrefixVersionFail)
	if err != nil {
		return nil, err
	}
	for _, it := range vfs {
		if w.vfailed[it.Value.Plugin] == nil {
			w.vfailed[it.Value.Plugin] = map[string]intent.Item[intent.VersionFailure]{}
		}
		w.vfailed[it.Value.Plugin][it.Value.Version] = it
	}
	for _, n := range c.cfg.Members.Nodes() {
		w.nodes[n.Name] = NodeView{UpgradeDomain: controller.UpgradeDomain(n), Alive: n.Alive}
	}
	return w, nil
}

// reconcile starts a rollout of plugin if its intent asks for one, then
// moves its newest rollout a step.
func (c *Controller) reconcile(ctx context.Context, w *world, plugin string) (active bool, err error) {
	list := w.rollouts[plugin]
	var latest *intent.Item[intent.Rollout]
	if len(list) > 0 {
		latest = &list[len(list)-1]
	}
	in, ok := w.intents[plugin]
	if !ok {
		// Not registered (any more), or its intent is refused: nothing of
		// it is assigned by a rollout; its records stay as they are.
		return false, nil
	}
	created, err := c.maybeStart(ctx, w, in, latest)
	if err != nil {
		return false, err
	}
	if created != nil {
		w.rollouts[plugin] = append(list, *created)
		latest = created
	}
	if latest == nil {
		return false, nil
	}
	// Finished rollouts before the newest whose down nodes have not come
	// back: they converge to what the newest gives them.
	for i := range w.rollouts[plugin] {
		it := &w.rollouts[plugin][i]
		if it.Value.Seq < latest.Value.Seq && it.Value.Done() && len(it.Value.Pending) > 0 && it.Value.Converged.IsZero() {
			if _, err := c.advance(ctx, w, it, latest.Value); err != nil {
				return false, err
			}
		}
	}
	r := latest.Value
	if r.State == intent.RolloutSuperseded || (r.Done() && (len(r.Pending) == 0 || !r.Converged.IsZero())) {
		return false, nil
	}
	return c.advance(ctx, w, latest, intent.Rollout{})
}

// maybeStart creates the rollout the plugin's intent asks for, if any,
// superseding latest when it is unfinished.
func (c *Controller) maybeStart(ctx context.Context, w *world, in intent.Intent, latest *intent.Item[intent.Rollout]) (*intent.Item[intent.Rollout], error) {
	want := Want{Now: w.now, Intent: in, Assigned: w.assigned[in.Plugin], Nodes: w.nodes, Failed: w.vfailed[in.Plugin]}
	if latest != nil {
		lv := latest.Value
		want.Latest, want.LatestRev = &lv, latest.ModRevision
	}
	// Cheap checks first: most passes have nothing to start.
	if len(want.Assigned) == 0 {
		return nil, nil
	}
	if want.Latest != nil && want.Latest.Target() == in.Version {
		return nil, nil
	}
	if want.Latest == nil && allOn(want.Assigned, in.Version) {
		return nil, nil
	}
	pin, err := c.cfg.Catalog.GetPin(ctx, in.Plugin)
	if err != nil {
		return nil, err
	}
	want.Pin = pin
	e, err := c.cfg.Catalog.Get(ctx, in.Plugin, in.Version)
	if err != nil {
		return nil, fmt.Errorf("reading the catalog entry of its target %s: %w", in.Version, err)
	}
	want.Upgrade, want.Registrant = e.Manifest.Upgrade, e.Actor
	r, why := Plan(want)
	if r == nil {
		if why != "" && c.blocked[in.Plugin] != why {
			c.log.Info("no rollout starts", "plugin", in.Plugin, "reason", why)
		}
		c.blocked[in.Plugin] = why
		return nil, nil
	}
	delete(c.blocked, in.Plugin)
	if top := w.topSeq[in.Plugin]; r.Seq <= top {
		r.Seq = top + 1 // past a refused record
		r.ID = intent.RolloutID(r.Plugin, r.Seq)
	}
	var t intent.Txn
	t.IfModRevision(r.Key(), 0).Put(r)
	var old *intent.Rollout
	if latest != nil && !latest.Value.Done() {
		o := latest.Value
		o.State, o.Paused, o.SupersededBy, o.Finished, o.Updated = intent.RolloutSuperseded, "", r.ID, w.now, w.now
		t.IfModRevision(o.Key(), latest.ModRevision).Put(&o)
		old = &o
	}
	rev, ok, err := c.db.Commit(ctx, &t)
	if err != nil || !ok {
		// Another write came first: the next pass sees it. Not again and
		// again: that is a record this controller cannot see.
		if c.casFails[in.Plugin]++; c.casFails[in.Plugin] == maxCASFails {
			c.log.Error("a rollout cannot be created: its record was written by another in every one of the last passes",
				"plugin", in.Plugin, "key", r.Key(), "passes", maxCASFails, "error", err)
		}
		return nil, err
	}
	delete(c.casFails, in.Plugin)
	c.log.Info("rollout started", "plugin", r.Plugin, "id", r.ID, "from", r.From, "to", r.To, "trigger", r.Trigger, "reason", r.Reason)
	if old != nil {
		c.record(ctx, old, []Note{{Type: EventSuperseded, Version: old.To, Reason: old.ID + ": superseded by " + r.ID + " (to " + r.To + ")", Outcome: OutcomeSuperseded}})
	}
	c.record(ctx, r, []Note{{Type: EventStarted, Version: r.To, Reason: fmt.Sprintf("%s: %s to %s over %d upgrade domain(s): %s", r.ID, r.From, r.To, len(r.Domains), r.Reason)}})
	return &intent.Item[intent.Rollout]{Value: *r, ModRevision: rev, CreateRevision: rev}, nil
}

// advance applies the plugin's operator request, if new, and steps its
// rollout, writing the record if it changed.
// newer, when it has an ID, is a newer rollout: it says what it's
// pending nodes converge to.
func (c *Controller) advance(ctx context.Context, w *world, it *intent.Item[intent.Rollout], newer intent.Rollout) (active bool, err error) {
	r := clone(it.Value)
	before, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	v, err := c.view(ctx, w, r, it.CreateRevision)
	if err != nil {
		return false, err
	}
	if newer.ID != "" {
		v.Converge = func(node string) string {
			ud := node
			if nv, ok := w.nodes[node]; ok {
				ud = nv.UpgradeDomain
			}
			return newer.VersionForNode(node, ud)
		}
	}
	var notes []Note
	var failed []*intent.VersionFailure
	if ctl, ok := w.controls[r.Plugin]; ok && newer.ID == "" {
		ns, f, _ := Control(r, ctl, v)
		notes, failed = append(notes, ns...), append(failed, f)
	}
	began := false // a restore, recorded as begun by this pass
	for range 4 {  // a step, and again after each effect it needs
		ns, need, f := Step(r, v)
		notes, failed = append(notes, ns...), append(failed, f)
		if need == NeedNothing {
			break
		}
		if need == NeedRestore && r.Restoring.IsZero() {
			// Recorded first: a restore whose outcome a leader change
			// loses is not run again over what was written since.
			r.Restoring, began = w.now, true
			break
		}
		ns, err := c.effect(ctx, w, r, need)
		if err != nil {
			return false, err
		}
		notes = append(notes, ns...)
	}
	after, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	if string(after) != string(before) {
		r.Updated = w.now
		var t intent.Txn
		t.IfModRevision(r.Key(), it.ModRevision).Put(r)
		for _, f := range failed {
			if f != nil {
				t.Put(f)
			}
		}
		_, ok, err := c.db.Commit(ctx, &t)
		if err != nil || !ok {
			return false, err // changed meanwhile: the next pass starts from it
		}
		if began {
			c.restoring[r.ID] = true
		}
		c.record(ctx, r, notes)
	}
	return r.State == intent.RolloutRunning || r.State == intent.RolloutRollingBack, nil
}

// effect does what a step needs and records its outcome in r: the
// snapshot before the first domain, the restore after the old version
// serves again. A failure pauses r with the reason.
func (c *Controller) effect(ctx context.Context, w *world, r *intent.Rollout, need Need) ([]Note, error) {
	s := &stepper{r: r, v: View{Now: w.now}}
	switch need {
	case NeedSnapshot:
		snap, err := c.cfg.Snapshots.Take(ctx, r)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			s.pause(intent.RolloutRunning, "", clip(fmt.Sprintf("the data snapshot before the first domain failed: %v; resume to try again, or abort", err)))
			return s.notes, nil
		case snap == nil:
			snap = &intent.RolloutSnapshot{Skipped: "the plugin has no data in the store"}
		}
		r.Snapshot = snap
	case NeedRestore:
		if !c.restoring[r.ID] {
			state := intent.RolloutRunning
			if r.Back() {
				state = intent.RolloutRollingBack
			}
			s.pause(state, "", clip(fmt.Sprintf("a restore of the plugin's data begun at %s has no recorded outcome (the leader changed during it): it may have happened, and restoring again would lose what was written since; %s serves; resume restores the data again, abort finishes without restoring it",
				r.Restoring.UTC().Format(time.RFC3339), r.Target())))
			return s.notes, nil
		}
		delete(c.restoring, r.ID)
		from := r
		if !r.Back() {
			// A rollback by pin restores the data as it was before the
			// rollout it undoes: the one to this one's From.
			from = nil
			for _, it := range w.rollouts[r.Plugin] {
				if it.Value.Seq < r.Seq && it.Value.To == r.From {
					v := it.Value
					from = &v
				}
			}
		}
		var err error
		if from == nil {
			err = fmt.Errorf("%w: no earlier rollout to %s took a snapshot", ErrNoSnapshot, r.From)
		} else {
			err = c.cfg.Snapshots.Restore(ctx, from)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			state := intent.RolloutRunning
			if r.Back() {
				state = intent.RolloutRollingBack
			}
			if errors.Is(err, ErrNoSnapshot) || errors.Is(err, ErrSnapshotGone) || errors.Is(err, ErrSnapshotCorrupt) {
				// No retry can succeed: resume or abort finishes
				// without restoring.
				r.RestoreData = false
				s.pause(state, "", clip(fmt.Sprintf("the plugin's data cannot be restored: %v; %s serves; resume or abort to finish without restoring it", err, r.Target())))
				return s.notes, nil
			}
			s.pause(state, "", clip(fmt.Sprintf("restoring the plugin's data failed: %v; %s serves; resume to try again", err, r.Target())))
			return s.notes, nil
		}
		r.Restored = w.now
		s.note(Note{Type: EventRestored, Version: r.Target(), Reason: "data restored to the snapshot of " + from.ID})
	}
	return s.notes, nil
}

// view is what the gate of r needs: the members, the plugin's
// observations, and the node-level fallbacks of the nodes in a gate, which
// count from created (r's CreateRevision) or the plugin's pin, if later.
func (c *Controller) view(ctx context.Context, w *world, r *intent.Rollout, created int64) (View, error) {
	v := View{Now: w.now, Nodes: w.nodes, Observed: w.observed[r.Plugin], Failed: map[string]map[string]Fallback{},
		Assigned: map[string]bool{}, GateRev: created}
	pinRead := false
	for n := range w.assigned[r.Plugin] {
		v.Assigned[n] = true
	}
	for _, d := range r.Domains {
		if d.Phase != intent.DomainUpdating && d.Phase != intent.DomainRollingBack {
			continue
		}
		if !pinRead {
			pin, err := c.cfg.Catalog.GetPin(ctx, r.Plugin)
			if err != nil {
				return v, err
			}
			if pin != nil {
				v.GateRev = max(v.GateRev, pin.ModRevision)
			}
			pinRead = true
		}
		for _, n := range d.Nodes {
			fs, err := c.cfg.Catalog.Failures(ctx, n.Name, r.Plugin)
			if err != nil {
				return v, err
			}
			for ver, f := range fs {
				if v.Failed[n.Name] == nil {
					v.Failed[n.Name] = map[string]Fallback{}
				}
				v.Failed[n.Name][ver] = Fallback{Reason: f.Reason, At: f.At, Rev: f.ModRevision}
			}
		}
	}
	return v, nil
}

// record writes notes as the plugin's events and, those with an outcome,
// as history records. A write that fails is logged: the record is what
// counts.
func (c *Controller) record(ctx context.Context, r *intent.Rollout, notes []Note) {
	for i, n := range notes {
		at := c.cfg.Now().UTC().Add(time.Duration(i))
		ev := supervisor.Event{At: at, Node: c.cfg.Node, Plugin: r.Plugin, Version: n.Version, Type: n.Type, Reason: n.Reason}
		if val, err := json.Marshal(ev); err == nil {
			_, err = c.cfg.Store.Put(ctx, &storev1.PutRequest{Namespace: store.SystemNamespace,
				Key: []byte(supervisor.EventKey(r.Plugin, at, c.cfg.Node)), Value: val, TtlMs: supervisor.EventTTL.Milliseconds()})
			if err != nil && ctx.Err() == nil {
				c.log.Warn("could not record a rollout event", "plugin", r.Plugin, "type", n.Type, "error", err)
			}
		}
		c.log.Info("rollout", "plugin", r.Plugin, "event", n.Type, "reason", n.Reason)
		if n.Outcome == "" {
			continue
		}
		h := catalog.Record{At: at, Actor: r.Actor, Action: "rollout", From: r.From, To: r.To, Strategy: r.Policy.Strategy,
			Outcome: n.Outcome, Reason: n.Reason, Node: n.Node, Rollout: r.ID}
		if err := c.cfg.Catalog.AddHistory(ctx, r.Plugin, h); err != nil && ctx.Err() == nil {
			c.log.Warn("could not record a rollout in the plugin's history", "plugin", r.Plugin, "error", err)
		}
	}
}

// clone deep-copies a rollout record.
func clone(r intent.Rollout) *intent.Rollout {
	c := r
	c.Domains = make([]intent.RolloutDomain, len(r.Domains))
	for i, d := range r.Domains {
		d.Nodes = append([]intent.RolloutNode(nil), d.Nodes...)
		c.Domains[i] = d
	}
	c.Pending = append([]string(nil), r.Pending...)
	if len(r.Pending) == 0 {
		c.Pending = nil
	}
	if r.Snapshot != nil {
		s := *r.Snapshot
		c.Snapshot = &s
	}
	return &c
}
