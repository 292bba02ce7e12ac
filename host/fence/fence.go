// Package fence holds this node's plugin instances to their part in their
// singletons: it follows the singleton records (_sys singleton/<plugin>,
// whose mod revision is the singleton's epoch) to tell whether this node
// runs a singleton's active and at which epoch, and it keeps the node's
// lease: a node that has not heard from a raft leader for longer than the
// lease fences its actives by itself (the agent refuses their writes and
// stops them), until the placement controller assigns the singleton anew
// (its record changes: a new epoch).
//
// The store's state machine refuses any write whose epoch is not the
// singleton's current one (store/fsm/fence.go), so an active that was cut
// off and replaced cannot change its successor's state even before its
// lease runs out; the lease makes it stop trying, and stop serving.
//
// The supervisor takes an instance's role from its assignment; while the
// tracker holds a plugin's active here fenced, that role is fenced instead.
package fence

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/store"
)

// DefaultLease is how long a node may go without hearing from a raft
// leader before it fences its singleton actives: longer than a leader
// election takes (about two seconds on a LAN), shorter than a failover.
const DefaultLease = 3 * time.Second

// Config configures a Tracker.
type Config struct {
	// Node is this node's name, as singleton records name nodes.
	Node string
	// DB reads the singleton records; its reads must be linearizable.
	DB *intent.DB
	// Contact is when this node last heard from a raft leader (now while
	// it leads): store.Store.LeaderContact.
	Contact func() time.Time
	// Lease is singleton_lease; 0 is DefaultLease.
	Lease  time.Duration
	Logger hclog.Logger
	// Events records why a node fenced its actives (plugin, kind,
	// message); nil records nothing.
	Events func(plugin, kind, msg string)
}

// single is what a singleton record says.
type single struct {
	active  string
	epoch   int64
	invalid string // why the record was refused, if it was
}

// Tracker knows this node's role in each singleton.
type Tracker struct {
	cfg Config
	log hclog.Logger

	mu      sync.Mutex
	singles map[string]single
	// lost is set while this node is cut off from the leader, or has not
	// read the records through one since it was: every active it holds is
	// fenced, for lostWhy.
	lost    bool
	lostWhy string
	// fenced holds the actives a lost lease stopped, by the epoch they
	// were stopped at: they stay fenced until their record changes (a new
	// assignment). stops counts the lease's stops of each plugin.
	fenced  map[string]fencedAt
	stops   map[string]int
	stopWhy map[string]string
	subs    []func(plugin string)
}

// fencedAt is an active stopped by a lost lease.
type fencedAt struct {
	epoch int64
	why   string
}

// New returns a tracker; Run starts it. Until Run has read the records
// through a leader, no instance is active.
func New(cfg Config) *Tracker {
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Tracker{
		cfg:     cfg,
		log:     cfg.Logger.Named("fence"),
		singles: map[string]single{},
		fenced:  map[string]fencedAt{},
		stops:   map[string]int{},
		stopWhy: map[string]string{},
		lost:    true,
		lostWhy: "this node has not read the singleton records through a raft leader yet",
	}
}

// Lease is the tracker's lease.
func (t *Tracker) Lease() time.Duration { return t.cfg.Lease }

// OnChange registers fn to be told, on the tracker's goroutine, the
// plugins whose role on this node may have changed. fn must not block.
func (t *Tracker) OnChange(fn func(plugin string)) {
	t.mu.Lock()
	t.subs = append(t.subs, fn)
	t.mu.Unlock()
}

// Role is what this node's instances of plugin are in its singleton.
func (t *Tracker) Role(plugin string) store.Role {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.roleLocked(plugin)
}

func (t *Tracker) roleLocked(plugin string) store.Role {
	s, ok := t.singles[plugin]
	switch {
	case !ok && !t.lost:
		return store.Role{}
	case !ok:
		// Not known to be a singleton, but the records may say otherwise
		// by now: write without an epoch, which the store judges.
		return store.Role{}
	case s.invalid != "":
		return store.Role{Kind: store.RoleStandby, Why: "its singleton record is invalid: " + s.invalid}
	case t.fenced[plugin].epoch == s.epoch && t.fenced[plugin].why != "":
		return store.Role{Kind: store.RoleFenced, Why: t.fenced[plugin].why}
	case s.active != t.cfg.Node:
		why := "the active is " + s.active
		if s.active == "" {
			why = "the singleton has no active"
		}
		return store.Role{Kind: store.RoleStandby, Why: why}
	case t.lost:
		return store.Role{Kind: store.RoleFenced, Why: t.lostWhy}
	}
	return store.Role{Kind: store.RoleActive, Epoch: s.epoch}
}

// Fenced says whether this node's active of plugin is fenced, and why: a
// lost lease stopped it and its singleton was not assigned anew since, or
// the node has not read the records through a leader since it lost it.
func (t *Tracker) Fenced(plugin string) (string, bool) {
	r := t.Role(plugin)
	return r.Why, r.Kind == store.RoleFenced
}

// Stops counts the times a lost lease stopped this node's active of
// plugin, and says why the last time: the supervisor stops the instance
// that was the active each time the count grows, whatever the plugin's
// role has become since.
func (t *Tracker) Stops(plugin string) (int, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stops[plugin], t.stopWhy[plugin]
}

// setSingle records plugin's record, and lifts a lease's fence once the
// record changed. The caller holds mu.
func (t *Tracker) setSingle(plugin string, s single, deleted bool) {
	if deleted {
		delete(t.singles, plugin)
	} else {
		t.singles[plugin] = s
	}
	if f, ok := t.fenced[plugin]; ok && (deleted || f.epoch != s.epoch) {
		delete(t.fenced, plugin)
	}
}

// Run follows the singleton records and keeps the lease until ctx ends.
func (t *Tracker) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	from := t.reread(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t.watch(ctx, from)
	}()
	t.keepLease(ctx)
	return ctx.Err()
}

// reread reads every singleton record through the leader, retrying until
// it succeeds or ctx ends, replaces what the tracker knew with it and
// lifts a lost lease. It returns the revision to watch from.
func (t *Tracker) reread(ctx context.Context) int64 {
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		from := t.cfg.DB.Store().Revision() + 1
		items, refused, err := t.cfg.DB.Singletons(ctx)
		if err == nil {
			fresh := make(map[string]single, len(items)+len(refused))
			for _, it := range items {
				fresh[it.Value.Plugin] = single{active: it.Value.Active, epoch: it.ModRevision}
			}
			for _, r := range refused {
				var re *intent.RecordError
				if errors.As(r, &re) {
					if p, ok := pluginOf(re.Key); ok {
						fresh[p] = single{invalid: r.Error()}
					}
				}
				t.log.Warn("singleton record refused", "error", r)
			}
			t.mu.Lock()
			changed := t.differ(t.singles, fresh)
			wasLost := t.lost
			for p := range t.singles {
				if _, ok := fresh[p]; !ok {
					t.setSingle(p, single{}, true)
				}
			}
			for p, s := range fresh {
				t.setSingle(p, s, false)
			}
			t.lost, t.lostWhy = false, ""
			if wasLost {
				for p, s := range fresh {
					if s.active == t.cfg.Node {
						changed[p] = true
					}
				}
			}
			t.mu.Unlock()
			if wasLost {
				t.log.Info("singleton records read through the leader; this node's actives may run", "singletons", len(fresh))
			}
			t.notify(changed)
			return from
		}
		t.log.Debug("cannot read the singleton records yet", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
	return 0
}

// differ lists the plugins whose record differs between a and b. The
// caller holds mu.
func (t *Tracker) differ(a, b map[string]single) map[string]bool {
	out := map[string]bool{}
	for p, s := range a {
		if b[p] != s {
			out[p] = true
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			out[p] = true
		}
	}
	return out
}

func (t *Tracker) notify(plugins map[string]bool) {
	if len(plugins) == 0 {
		return
	}
	t.mu.Lock()
	subs := append([]func(string){}, t.subs...)
	t.mu.Unlock()
	for p := range plugins {
		for _, fn := range subs {
			fn(p)
		}
	}
}

// watch applies each change of a singleton record.
func (t *Tracker) watch(ctx context.Context, from int64) {
	_ = t.cfg.DB.Watch(ctx, from, []string{intent.PrefixSingleton}, t.log, func(c intent.Change) {
		if c.Resync {
			t.reread(ctx)
			return
		}
		plugin, ok := pluginOf(c.Key)
		if !ok {
			return
		}
		var s single
		if !c.Deleted {
			it, err := intent.Decode[intent.Singleton](c.KV)
			if err != nil {
				t.log.Warn("singleton record refused", "error", err)
				s = single{invalid: err.Error()}
			} else {
				s = single{active: it.Value.Active, epoch: it.ModRevision}
			}
		}
		t.mu.Lock()
		t.setSingle(plugin, s, c.Deleted)
		t.mu.Unlock()
		t.notify(map[string]bool{plugin: true})
	})
}

func pluginOf(key string) (string, bool) {
	p, ok := strings.CutPrefix(key, intent.PrefixSingleton)
	return p, ok && p != ""
}

// keepLease checks the node's contact with a leader every quarter lease.
// The lease is lost when raft's last contact is older than the lease, or
// when the tracker itself was not run for longer than that (the process
// was stopped or starved: raft may hear from a leader before the tracker
// runs again, and the time in between counts as silence all the same).
// It is regained by reading the records through the leader again.
func (t *Tracker) keepLease(ctx context.Context) {
	tick := time.NewTicker(max(t.cfg.Lease/4, 10*time.Millisecond))
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		gap := now.Sub(last)
		last = now
		silent := now.Sub(t.cfg.Contact())
		t.mu.Lock()
		lost := t.lost
		t.mu.Unlock()
		switch {
		case !lost && gap > t.cfg.Lease:
			t.lose(fmt.Sprintf("this node's agent did not run for %s (stopped or starved), longer than singleton_lease %s", gap.Round(time.Millisecond), t.cfg.Lease))
		case !lost && silent > t.cfg.Lease:
			t.lose(fmt.Sprintf("this node has not heard from a raft leader for %s, longer than singleton_lease %s", silent.Round(time.Millisecond), t.cfg.Lease))
		case lost && silent < t.cfg.Lease/2:
			t.reread(ctx)
			last = time.Now()
		}
	}
}

// lose fences every active of this node for why.
func (t *Tracker) lose(why string) {
	t.mu.Lock()
	t.lost, t.lostWhy = true, why
	actives := map[string]bool{}
	for p, s := range t.singles {
		if s.active == t.cfg.Node && s.invalid == "" {
			actives[p] = true
			t.fenced[p] = fencedAt{epoch: s.epoch, why: why}
			t.stops[p]++
			t.stopWhy[p] = why
		}
	}
	t.mu.Unlock()
	t.log.Warn("lease lost: fencing this node's singleton actives", "reason", why, "actives", len(actives))
	for _, p := range slices.Sorted(maps.Keys(actives)) {
		if t.cfg.Events != nil {
			t.cfg.Events(p, "fenced", "stopping the active: "+why+"; it starts again when the placement controller assigns the singleton anew")
		}
	}
	t.notify(actives)
}
