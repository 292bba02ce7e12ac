// Package supervisor runs this node's assignment (the plugin versions the
// placement controller assigned to it, with a singleton's role and epoch):
// it starts instances, gates them on health before routing to them,
// restarts them when they fail, swaps versions with a local fallback, stops
// what is no longer assigned here, and reports what runs as observations.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/governance"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/router"
	"github.com/plughost/plughost/host/sandbox"
	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// Config is what a supervisor needs. Zero durations take the defaults of
// DefaultConfig.
type Config struct {
	Node         *pluginv1.NodeInfo
	PluginsDir   string // installed bundles: <PluginsDir>/<name>/<version>/
	SocketDir    string // where plugins' unix sockets go (launch.Spec.SocketDir)
	Catalog      *catalog.Catalog
	Store        *store.Store
	Router       *router.Router
	Governance   *governance.Manager // nil: no resource governance
	Sandbox      *sandbox.Sandbox    // nil: plugins run as the agent's user, unconfined
	Defaults     governance.Limits   // limits for bundles that give none
	Overrides    map[string]governance.Limits
	Logger       hclog.Logger
	StartTimeout time.Duration
	StoreRate    float64 // store requests/s per plugin; 0 = unlimited
	StoreBurst   int
	// BackoffInitial and BackoffMax bound restart delays (doubling, jittered).
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// CrashLoopRestarts restarts within CrashLoopWindow put a plugin in failed.
	CrashLoopRestarts int
	CrashLoopWindow   time.Duration
	// CheckInstalled, when set, is asked before every start whether the
	// installed files of e in dir may run; an error refuses the version on
	// this node, with an event. (The agent checks publisher signatures
	// with it: area bundle.)
	CheckInstalled func(e *catalog.Entry, dir string) error
	// Fetch, when set, is asked for a version that is registered but whose
	// bundle is not installed on this node: it fetches the bundle from a
	// peer and installs it, telling progress how far it got ("fetching
	// greeter 1.2.0 from n2: 40%", shown as the plugin's last error while
	// nothing of it runs). The version starts once it is installed. (Area
	// fetch: host/install.Fetcher.)
	Fetch func(ctx context.Context, e *catalog.Entry, progress func(string)) error
	// FetchRetry is the wait before a failed fetch is tried again
	// (default 5 s), doubled while it fails the same way, up to a minute.
	FetchRetry time.Duration
	// Fence, when set, is this node's singleton lease: while it holds a
	// plugin's active here fenced, the instance's writes are refused, the
	// instance that was the active is stopped, and nothing of the plugin
	// starts until its singleton is assigned anew (tell the supervisor
	// with RoleChanged). (Area fence: host/fence.Tracker; see fence.go.)
	Fence Fencer
}

// DefaultConfig returns the supervision defaults.
func DefaultConfig() Config {
	return Config{
		StartTimeout:      10 * time.Second,
		BackoffInitial:    time.Second,
		BackoffMax:        time.Minute,
		CrashLoopRestarts: 5,
		CrashLoopWindow:   10 * time.Minute,
		StoreBurst:        100,
	}
}

func (c *Config) setDefaults() {
	d := DefaultConfig()
	if c.StartTimeout <= 0 {
		c.StartTimeout = d.StartTimeout
	}
	if c.BackoffInitial <= 0 {
		c.BackoffInitial = d.BackoffInitial
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = d.BackoffMax
	}
	if c.CrashLoopRestarts <= 0 {
		c.CrashLoopRestarts = d.CrashLoopRestarts
	}
	if c.CrashLoopWindow <= 0 {
		c.CrashLoopWindow = d.CrashLoopWindow
	}
	if c.StoreBurst <= 0 {
		c.StoreBurst = d.StoreBurst
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.FetchRetry <= 0 {
		c.FetchRetry = 5 * time.Second
	}
}

// Supervisor owns every plugin instance on this node.
type Supervisor struct {
	cfg    Config
	log    hclog.Logger
	events *Events
	obs    *observer
	db     *intent.DB

	mu      sync.Mutex
	plugins map[string]*managed
	ctx     context.Context
	wg      sync.WaitGroup
}

// New returns a supervisor; Run starts it.
func New(cfg Config) *Supervisor {
	cfg.setDefaults()
	return &Supervisor{
		cfg:     cfg,
		log:     cfg.Logger.Named("supervisor"),
		events:  &Events{st: cfg.Store, node: cfg.Node.GetName()},
		obs:     newObserver(cfg.Store, cfg.Node.GetName(), cfg.Logger),
		db:      intent.New(cfg.Store),
		plugins: map[string]*managed{},
	}
}

// Events returns the supervisor's event log.
func (s *Supervisor) Events() *Events { return s.events }

// Run runs this node's assignment (the _sys records assign/<node>/) and
// follows its changes, and those of the catalog, until ctx ends; then it
// stops every instance and returns.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()

	// Watch from before the first read, so no change falls between, and
	// from the revision the cluster had then, not this node's: a node that
	// restarts behind the leader replays its old log, and the assignments
	// in it would follow the current ones and start a version it is no
	// longer assigned (a node back after a rollout served the old
	// version while it fetched the new one).
	all, rev := s.readAssignments(ctx)
	from := max(s.cfg.Store.Revision(), rev) + 1
	s.applyAssignments(all)
	go func() {
		// Catalog records refused before this start: say so once more.
		names, _ := s.cfg.Catalog.Names(ctx)
		for _, n := range names {
			s.Reconcile(n)
		}
	}()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		s.watchCatalog(ctx, from)
	}()
	assignDone := make(chan struct{})
	go func() {
		defer close(assignDone)
		s.watchAssignments(ctx, from)
	}()
	obsDone := make(chan struct{})
	go func() {
		defer close(obsDone)
		s.obs.run(ctx, s.known)
	}()
	<-ctx.Done()
	<-watchDone
	<-assignDone
	<-obsDone
	s.wg.Wait()
	return nil
}

// storeRetryMax caps the wait between reads of this node's assignment
// while the store cannot answer them (no leader yet, or the leader's
// address not yet known by gossip).
const storeRetryMax = 5 * time.Second

// readAssignments reads this node's assignments, retrying until the store
// answers or ctx ends: an agent that starts before its cluster has a
// leader waits for one instead of exiting. Records that fail their checks
// are logged and left out. rev is the store's revision, read linearizably
// just before them: every change up to it is in what they say.
func (s *Supervisor) readAssignments(ctx context.Context) (all []intent.Assignment, rev int64) {
	wait := 100 * time.Millisecond
	prefix := intent.AssignPrefix(s.node())
	for attempt := 1; ; attempt++ {
		probe, err := s.db.Store().List(ctx, &storev1.ListRequest{Namespace: store.SystemNamespace, Prefix: []byte(prefix), Limit: 1, KeysOnly: true})
		var items []intent.Item[intent.Assignment]
		var refused []error
		if err == nil {
			items, refused, err = intent.List[intent.Assignment](ctx, s.db, prefix)
		}
		if err == nil {
			if attempt > 1 {
				s.log.Info("assignments read; starting plugins", "attempts", attempt)
			}
			for _, r := range refused {
				s.log.Error("an assignment of this node is not valid; ignored", "error", r)
			}
			out := make([]intent.Assignment, 0, len(items))
			for _, it := range items {
				out = append(out, it.Value)
			}
			return out, probe.GetRevision()
		}
		if ctx.Err() != nil {
			return nil, 0
		}
		s.log.Warn("cannot read this node's assignments yet; plugins start once the store answers", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, 0
		case <-time.After(wait):
		}
		wait = min(2*wait, storeRetryMax)
	}
}

// applyAssignments makes all the node's assignments: plugins not among
// them stop here.
func (s *Supervisor) applyAssignments(all []intent.Assignment) {
	want := map[string]bool{}
	for _, a := range all {
		want[a.Plugin] = true
		s.assign(a.Plugin, &a)
	}
	s.mu.Lock()
	var gone []string
	for name := range s.plugins {
		if !want[name] {
			gone = append(gone, name)
		}
	}
	s.mu.Unlock()
	for _, name := range gone {
		s.assign(name, nil)
	}
}

// watchAssignments follows this node's assignments.
func (s *Supervisor) watchAssignments(ctx context.Context, from int64) {
	prefix := intent.AssignPrefix(s.node())
	_ = s.db.Watch(ctx, from, []string{prefix}, s.log, func(c intent.Change) {
		switch {
		case c.Resync:
			all, _ := s.readAssignments(ctx)
			s.applyAssignments(all)
		case c.Deleted:
			s.assign(strings.TrimPrefix(c.Key, prefix), nil)
		default:
			it, err := intent.Decode[intent.Assignment](c.KV)
			if err != nil {
				s.log.Error("an assignment of this node is not valid; ignored", "error", err)
				return
			}
			s.assign(it.Value.Plugin, &it.Value)
		}
	})
}

// assign gives a plugin its assignment on this node (nil: none, the
// plugin stops here), starting its supervision if this is its first.
func (s *Supervisor) assign(name string, a *intent.Assignment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.plugins[name]
	if !ok {
		if a == nil {
			return
		}
		if m = s.startManaged(name); m == nil {
			return
		}
	}
	m.setAssignment(a)
	m.nudge()
}

// startManaged begins supervising a plugin; s.mu is held. nil when the
// supervisor is not running.
func (s *Supervisor) startManaged(name string) *managed {
	if s.ctx == nil || s.ctx.Err() != nil {
		return nil
	}
	m := newManaged(s, name)
	s.plugins[name] = m
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		m.run(s.ctx)
	}()
	return m
}

func (s *Supervisor) node() string { return s.cfg.Node.GetName() }

// watchCatalog nudges a supervised plugin whenever its catalog entries,
// pin or failures change, whichever node wrote them.
func (s *Supervisor) watchCatalog(ctx context.Context, from int64) {
	for ctx.Err() == nil {
		err := s.cfg.Store.Watch(ctx, &storev1.WatchRequest{Namespace: store.SystemNamespace, StartRevision: from},
			func(resp *storev1.WatchResponse) error {
				for _, ev := range resp.GetEvents() {
					if name, ok := catalog.PluginOfKey(ev.GetKv().GetKey()); ok {
						s.Reconcile(name)
					}
				}
				from = resp.GetRevision() + 1
				return nil
			})
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, store.ErrCompacted) {
			// Missed changes: look at everything again.
			from = s.cfg.Store.Revision() + 1
			s.mu.Lock()
			for _, m := range s.plugins {
				m.nudge()
			}
			s.mu.Unlock()
			continue
		}
		s.log.Warn("catalog watch ended; resuming", "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Reconcile asks a plugin's supervisor to compare what runs with what is
// assigned, if the plugin is supervised on this node (the bundle installer
// calls it once a version's files are in place).
func (s *Supervisor) Reconcile(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.plugins[name]; ok {
		m.nudge()
		return
	}
	if s.ctx != nil && s.ctx.Err() == nil {
		go s.noticeRefused(s.ctx, name)
	}
}

// noticeRefused supervises a plugin that has no assignment here but
// catalog records that fail their checks (written straight into _sys, or
// damaged): nothing of it runs, and its events and status say why. No
// assignment follows from such records: the catalog's valid versions are
// all the controller places.
func (s *Supervisor) noticeRefused(ctx context.Context, name string) {
	refused, err := s.cfg.Catalog.Refused(ctx, name)
	if err != nil || len(refused) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.plugins[name]
	if !ok {
		if m = s.startManaged(name); m == nil {
			return
		}
	}
	m.nudge()
}

// known reports whether the plugin is assigned to this node or runs here.
func (s *Supervisor) known(name string) bool {
	s.mu.Lock()
	m, ok := s.plugins[name]
	s.mu.Unlock()
	return ok && (m.assignment() != nil || m.current() != nil)
}

// Restart clears a failed plugin and starts it again.
func (s *Supervisor) Restart(name string) error {
	s.mu.Lock()
	m, ok := s.plugins[name]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("plugin %q is not known on this node: %w", name, catalog.ErrUnknownPlugin)
	}
	m.requestRestart()
	return nil
}

// Status reports one plugin on this node.
func (s *Supervisor) Status(name string) (Status, bool) {
	s.mu.Lock()
	m, ok := s.plugins[name]
	s.mu.Unlock()
	if !ok {
		return Status{}, false
	}
	return m.status(), true
}

// List reports every plugin on this node, sorted by name.
func (s *Supervisor) List() []Status {
	s.mu.Lock()
	ms := make([]*managed, 0, len(s.plugins))
	for _, m := range s.plugins {
		ms = append(ms, m)
	}
	s.mu.Unlock()
	out := make([]Status, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
