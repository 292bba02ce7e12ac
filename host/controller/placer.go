// Package controller holds the leader-only controllers that turn the
// cluster's intent into assignments (see host/intent): the placement
// controller, Placer. They run on the raft leader only (host/leader), are
// level-triggered (each pass reads everything it needs from the store and
// writes only what differs) and keep nothing between terms.
package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/placement"
)

// Membership is the cluster's membership as the placement controller needs
// it; host/cluster gives it in the agent.
type Membership interface {
	// Nodes lists the members the scheduler may place on, with their
	// domains, tags and whether gossip sees them alive. Members that left
	// are not listed. Eligible is ignored: the controller reads the
	// operator's node/<node> records.
	Nodes() []placement.Node
	// MemberChanges tells of member joins, leaves, failures and tag
	// changes; several may come as one value.
	MemberChanges() (changes <-chan struct{}, stop func())
}

// Config configures a Placer.
type Config struct {
	Store   intent.Store
	Members Membership
	Logger  hclog.Logger
	// Debounce is how long a pass waits after the change that started it,
	// so a burst of changes makes one pass.
	Debounce time.Duration
	// Resync is the longest time between two passes, changes or not.
	Resync time.Duration
	// Now is the clock of the diagnostics' Since; time.Now by default.
	Now func() time.Time
}

// Defaults.
const (
	DefaultDebounce = 50 * time.Millisecond
	DefaultResync   = 30 * time.Second
	retryPause      = 500 * time.Millisecond
)

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Debounce <= 0 {
		c.Debounce = DefaultDebounce
	}
	if c.Resync <= 0 {
		c.Resync = DefaultResync
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Placer is the placement controller: on every change of intent, node
// eligibility, observed health or membership it runs placement.Schedule
// and writes the difference as assign/<node>/<plugin> records, with the
// singletons' records (and epochs) and the placement/<plugin>
// diagnostics.
type Placer struct {
	cfg Config
	db  *intent.DB
	log hclog.Logger
	// refused are the keys of refused records already logged.
	refused map[string]bool
}

// New returns a Placer.
func New(cfg Config) *Placer {
	cfg = cfg.withDefaults()
	return &Placer{cfg: cfg, db: intent.New(cfg.Store), log: cfg.Logger, refused: map[string]bool{}}
}

// watched are the _sys prefixes whose changes start a pass. The
// controller's own records (assign/, singleton/, placement/) are not: a
// change to them made by another hand is undone by the next resync.
// A rollout record's change (area rollout) makes a pass at once: it says
// which version each upgrade domain runs.
var watched = []string{intent.PrefixIntent, intent.PrefixNode, intent.PrefixObserve, intent.PrefixRollout}

// Run runs passes until ctx ends, then returns ctx's error. It is a
// leader-only task (host/leader).
func (p *Placer) Run(ctx context.Context) error {
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	members, stop := p.cfg.Members.MemberChanges()
	defer stop()
	wctx, cancel := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	from := p.cfg.Store.Revision() + 1
	go func() {
		defer close(watchDone)
		_ = p.db.Watch(wctx, from, watched, p.log, func(intent.Change) { poke() })
	}()
	defer func() {
		cancel()
		<-watchDone
	}()

	resync := time.NewTimer(0) // the first pass at once
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-kick:
		case <-members:
		case <-resync.C:
		}
		// Coalesce the burst this change is part of.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(p.cfg.Debounce):
		}
		select {
		case <-kick:
		default:
		}
		select {
		case <-members:
		default:
		}
		next := p.cfg.Resync
		if _, err := p.Pass(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			p.log.Warn("placement pass failed; trying again", "error", err, "retry_in", retryPause)
			next = retryPause
		}
		if !resync.Stop() {
			select {
			case <-resync.C:
			default:
			}
		}
		resync.Reset(next)
	}
}

// Writes counts what a pass wrote.
type Writes struct {
	Assigned, Removed int // assign/ puts and deletes
	Singletons        int // singleton/ records written (new epochs) or removed
	Stamped           int // active assignments given their epoch
	Diagnostics       int // placement/ records written or removed
}

// Total is the number of records a pass wrote.
func (w Writes) Total() int {
	return w.Assigned + w.Removed + w.Singletons + w.Stamped + w.Diagnostics
}

// state is what one pass reads.
type state struct {
	intents    map[string]intent.Intent
	skip       map[string]bool                                      // plugins whose intent is refused: left as they are
	assigns    map[string]map[string]intent.Item[intent.Assignment] // plugin -> node -> record
	observed   map[string]intent.Observation                        // ObserveKey -> record
	singletons map[string]intent.Item[intent.Singleton]
	// badSingletons are the mod revisions of refused singleton records.
	badSingletons map[string]int64
	diags         map[string]intent.PlacementStatus
	badAssigns    []string // keys of refused assign/ records: removed
	// rollouts are each plugin's newest rollout: the versions it runs.
	rollouts map[string]intent.Rollout
}

// Pass reads the store, schedules and writes what differs. It is
// idempotent: with nothing changed it writes nothing.
func (p *Placer) Pass(ctx context.Context) (Writes, error) {
	var w Writes
	s, err := p.read(ctx)
	if err != nil {
		return w, err
	}
	ineligible, err := p.ineligible(ctx)
	if err != nil {
		return w, err
	}
	nodes := p.cfg.Members.Nodes()
	for i := range nodes {
		nodes[i].Eligible = !ineligible[nodes[i].Name]
	}
	specs := make([]placement.Spec, 0, len(s.intents))
	for _, in := range s.intents {
		specs = append(specs, placement.Spec{Plugin: in.Plugin, Version: in.Version, Placement: in.Placement})
	}
	var current []placement.Instance
	for plugin, byNode := range s.assigns {
		if s.skip[plugin] {
			continue
		}
		for node, a := range byNode {
			current = append(current, placement.Instance{Node: node, Plugin: plugin, Version: a.Value.Version, Role: a.Value.Role,
				Healthy: serving(s.observed[intent.ObserveKey(node, plugin)], a.Value)})
		}
	}
	res := placement.Schedule(nodes, specs, current)

	// The scheduler places the intent's version; the version each node
	// runs is the rollouts' to choose.
	uds := map[string]string{}
	for _, n := range nodes {
		uds[n.Name] = UpgradeDomain(n)
	}
	want := map[string]map[string]intent.Assignment{}
	for _, in := range res.Assign {
		if want[in.Plugin] == nil {
			want[in.Plugin] = map[string]intent.Assignment{}
		}
		v := s.version(in.Plugin, in.Node, uds[in.Node], in.Version)
		want[in.Plugin][in.Node] = intent.Assignment{Node: in.Node, Plugin: in.Plugin, Version: v, Role: in.Role, Draining: in.Draining}
	}
	plugins := map[string]bool{}
	for _, m := range []map[string]bool{keys(want), keys(s.assigns), keys(s.singletons), keys(s.badSingletons)} {
		for k := range m {
			plugins[k] = true
		}
	}
	var errs []error
	for _, plugin := range sorted(plugins) {
		if s.skip[plugin] {
			continue
		}
		if err := p.apply(ctx, s, plugin, want[plugin], &w); err != nil {
			errs = append(errs, fmt.Errorf("plugin %s: %w", plugin, err))
		}
	}
	if len(s.badAssigns) > 0 {
		var t intent.Txn
		for _, k := range s.badAssigns {
			t.Delete(k)
		}
		if err := p.commitChunks(ctx, &t); err != nil {
			errs = append(errs, err)
		} else {
			w.Removed += len(s.badAssigns)
		}
	}
	n, err := p.writeDiagnostics(ctx, s, res.Diagnostics)
	w.Diagnostics += n
	errs = append(errs, err)
	if w.Total() > 0 {
		p.log.Debug("placement pass", "assigned", w.Assigned, "removed", w.Removed, "singletons", w.Singletons, "stamped", w.Stamped, "diagnostics", w.Diagnostics)
	}
	return w, errors.Join(errs...)
}

// version is the version node, of upgrade domain ud, is assigned of
// plugin, whose intent's version is target: from the plugin's newest
// rollout (its domain's version while it runs, its final version once it
// is finished); without one, the version the node is assigned now, else
// the version the plugin's other nodes run (SettledVersion); a plugin
// assigned nowhere gets target (a first install is not a rollout).
func (s *state) version(plugin, node, ud, target string) string {
	if r, ok := s.rollouts[plugin]; ok {
		return r.VersionForNode(node, ud)
	}
	cur := s.assigns[plugin]
	if a, ok := cur[node]; ok {
		return a.Value.Version
	}
	vs := make([]string, 0, len(cur))
	for _, a := range cur {
		vs = append(vs, a.Value.Version)
	}
	return SettledVersion(vs, target)
}

// SettledVersion is the version a plugin without a rollout runs, given
// the versions its nodes are assigned: the one most are, the highest on a
// tie; fallback when none is.
func SettledVersion(assigned []string, fallback string) string {
	count := map[string]int{}
	best := ""
	for _, v := range assigned {
		count[v]++
		if best == "" || count[v] > count[best] || (count[v] == count[best] && bundle.CompareVersions(v, best) > 0) {
			best = v
		}
	}
	if best == "" {
		return fallback
	}
	return best
}

// UpgradeDomain is n's upgrade domain: its own name when it gives none
// (a raft server gossip does not know yet).
func UpgradeDomain(n placement.Node) string {
	if n.UpgradeDomain == "" {
		return n.Name
	}
	return n.UpgradeDomain
}

// serving reports whether o, a node's observation, shows the assigned
// instance serving: healthy, at the assigned version, in the assigned role
// (an observation without a role is of a node that does not report roles).
func serving(o intent.Observation, a intent.Assignment) bool {
	return o.Healthy && o.Version == a.Version && (o.Role == "" || o.Role == a.Role)
}

// read reads the records a pass needs, linearizably.
func (p *Placer) read(ctx context.Context) (*state, error) {
	s := &state{intents: map[string]intent.Intent{}, skip: map[string]bool{}, assigns: map[string]map[string]intent.Item[intent.Assignment]{},
		observed: map[string]intent.Observation{}, singletons: map[string]intent.Item[intent.Singleton]{}, badSingletons: map[string]int64{}, diags: map[string]intent.PlacementStatus{},
		rollouts: map[string]intent.Rollout{}}
	ins, refused, err := p.db.Intents(ctx)
	if err != nil {
		return nil, err
	}
	for _, it := range ins {
		s.intents[it.Value.Plugin] = it.Value
	}
	for _, key := range p.logRefused(refused) {
		// An unreadable intent says nothing: what its plugin runs stays.
		s.skip[strings.TrimPrefix(key, intent.PrefixIntent)] = true
	}
	as, refused, err := p.db.Assignments(ctx)
	if err != nil {
		return nil, err
	}
	for _, it := range as {
		a := it.Value
		if s.assigns[a.Plugin] == nil {
			s.assigns[a.Plugin] = map[string]intent.Item[intent.Assignment]{}
		}
		s.assigns[a.Plugin][a.Node] = it
	}
	s.badAssigns = p.logRefused(refused)
	obs, refused, err := p.db.Observations(ctx)
	if err != nil {
		return nil, err
	}
	p.logRefused(refused)
	for _, it := range obs {
		s.observed[it.Value.Key()] = it.Value
	}
	ss, refused, err := p.db.Singletons(ctx)
	if err != nil {
		return nil, err
	}
	p.logRefused(refused)
	for _, err := range refused {
		var re *intent.RecordError
		if errors.As(err, &re) {
			s.badSingletons[strings.TrimPrefix(re.Key, intent.PrefixSingleton)] = re.ModRevision
		}
	}
	for _, it := range ss {
		s.singletons[it.Value.Plugin] = it
	}
	ds, refused, err := p.db.Placements(ctx)
	if err != nil {
		return nil, err
	}
	p.logRefused(refused)
	for _, it := range ds {
		s.diags[it.Value.Plugin] = it.Value
	}
	rs, refused, err := p.db.AllRollouts(ctx)
	if err != nil {
		return nil, err
	}
	p.logRefused(refused)
	for _, it := range rs {
		if r, ok := s.rollouts[it.Value.Plugin]; !ok || it.Value.Seq > r.Seq {
			s.rollouts[it.Value.Plugin] = it.Value
		}
	}
	return s, nil
}

// logRefused logs each refused record once, and returns their keys.
func (p *Placer) logRefused(refused []error) []string {
	var out []string
	for _, err := range refused {
		var re *intent.RecordError
		if !errors.As(err, &re) {
			continue
		}
		out = append(out, re.Key)
		if !p.refused[re.Key] {
			p.refused[re.Key] = true
			p.log.Warn("a _sys record is refused", "error", err)
		}
	}
	return out
}

// apply writes the difference between a plugin's current and wanted
// assignments, and for a singleton its record, in one txn (conditioned on
// the singleton record the pass read); then stamps the active's epoch.
func (p *Placer) apply(ctx context.Context, s *state, plugin string, want map[string]intent.Assignment, w *Writes) error {
	cur := s.assigns[plugin]
	sing, hasSing := s.singletons[plugin]
	in, hasIntent := s.intents[plugin]
	isSingleton := hasIntent && in.Placement.Mode == bundle.PlacementSingleton

	var active, standby string
	for node, a := range want {
		switch a.Role {
		case intent.RoleActive:
			active = node
		case intent.RoleStandby:
			standby = node
		}
	}
	// A refused singleton record is replaced: its mod revision is still the
	// condition of the txn.
	rev, bad := s.badSingletons[plugin]
	if !bad {
		rev = sing.ModRevision
	}
	var t intent.Txn
	t.IfModRevision(intent.SingletonKey(plugin), rev)
	newEpoch := false
	singletons := 0
	switch {
	case isSingleton && (!hasSing || bad || sing.Value.Active != active):
		t.Put(&intent.Singleton{Plugin: plugin, Active: active, Standby: standby})
		newEpoch, singletons = active != "", 1
	case !isSingleton && (hasSing || bad):
		t.Delete(intent.SingletonKey(plugin))
		singletons = 1
	}
	assigned, removed := 0, 0
	for _, node := range sorted(keys(want)) {
		a := want[node]
		if a.Role == intent.RoleActive && !newEpoch {
			a.Epoch = rev
		}
		if c, ok := cur[node]; ok && c.Value == a {
			continue
		}
		t.Put(&a)
		assigned++
	}
	for _, node := range sorted(keys(cur)) {
		if _, ok := want[node]; !ok {
			t.Delete(intent.AssignKey(node, plugin))
			removed++
		}
	}
	if t.Len() == 0 {
		return nil
	}
	if isSingleton || t.Len() <= intent.MaxTxnOps {
		rev, ok, err := p.db.Commit(ctx, &t)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("its singleton record changed during the pass")
		}
		w.Assigned += assigned
		w.Removed += removed
		w.Singletons += singletons
		if newEpoch {
			p.log.Info("singleton active assigned", "plugin", plugin, "active", active, "standby", standby, "epoch", rev,
				"previous", sing.Value.Active)
			return p.stamp(ctx, plugin, want[active], rev, w)
		}
		return nil
	}
	// A plugin on more nodes than a txn holds: its writes go in several.
	if err := p.commitChunks(ctx, &t); err != nil {
		return err
	}
	w.Assigned += assigned
	w.Removed += removed
	w.Singletons += singletons
	return nil
}

// stamp writes the epoch into the active's assignment, if the singleton
// record is still the one written at epoch.
func (p *Placer) stamp(ctx context.Context, plugin string, a intent.Assignment, epoch int64, w *Writes) error {
	a.Epoch = epoch
	var t intent.Txn
	t.IfModRevision(intent.SingletonKey(plugin), epoch).Put(&a)
	_, ok, err := p.db.Commit(ctx, &t)
	if err != nil {
		return fmt.Errorf("stamping epoch %d: %w", epoch, err)
	}
	if ok {
		w.Stamped++
	}
	return nil
}

// commitChunks commits t's writes in txns of at most intent.MaxTxnOps,
// without its conditions.
func (p *Placer) commitChunks(ctx context.Context, t *intent.Txn) error {
	for _, chunk := range t.Split(intent.MaxTxnOps) {
		if _, _, err := p.db.Commit(ctx, chunk); err != nil {
			return err
		}
	}
	return nil
}

// writeDiagnostics writes the placement/<plugin> records that differ from
// the scheduler's diagnostics, and removes those of plugins placed in full.
func (p *Placer) writeDiagnostics(ctx context.Context, s *state, diags []placement.Diagnostic) (int, error) {
	var t intent.Txn
	seen := map[string]bool{}
	for _, d := range diags {
		if seen[d.Plugin] || s.skip[d.Plugin] {
			continue // one record a plugin: the first diagnostic
		}
		seen[d.Plugin] = true
		rec := intent.PlacementStatus{Plugin: d.Plugin, Severity: d.Severity, Wanted: d.Wanted, Placed: d.Placed, Message: d.Message}
		if old, ok := s.diags[d.Plugin]; ok {
			rec.Since = old.Since
			if old == rec {
				continue
			}
		}
		rec.Since = p.cfg.Now().UTC()
		if rec.Severity == placement.SeverityError {
			p.log.Warn("plugin cannot be placed", "plugin", rec.Plugin, "reason", rec.Message)
		} else {
			p.log.Info("plugin placed in part", "plugin", rec.Plugin, "reason", rec.Message)
		}
		t.Put(&rec)
	}
	for plugin := range s.diags {
		if !seen[plugin] && !s.skip[plugin] {
			t.Delete(intent.PlacementKey(plugin))
		}
	}
	n := t.Len()
	if n == 0 {
		return 0, nil
	}
	return n, p.commitChunks(ctx, &t)
}

func keys[M ~map[string]V, V any](m M) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func sorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
