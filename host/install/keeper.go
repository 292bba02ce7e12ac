package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	hclog "github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/intent"
)

// KeeperConfig is what a Keeper needs.
type KeeperConfig struct {
	Node       string
	PluginsDir string
	DB         *intent.DB // where bundles/<node> is written
	// Catalog is read from this node's copy of the store.
	Catalog *catalog.Catalog
	// Keep is how many installed versions of each plugin stay on disk,
	// newest first (agent config bundle_keep); 0 takes DefaultKeep.
	// Versions in use stay besides them.
	Keep int
	// InUse lists, as intent.HeldRef, the versions that must stay on disk
	// whatever their age: running on this node, desired, pinned, assigned.
	// An error skips the removal of old versions this time.
	InUse func(ctx context.Context) (map[string]bool, error)
	// Fetch, when set, fetches a version's bundle from a peer and installs
	// it (Fetcher.Fetch): the keeper fetches every plugin's target version
	// (its intent's) that another node holds and this one lacks, so that a
	// bundle added on one node survives that node's loss and a node
	// assigned the version later has it at once.
	Fetch  func(ctx context.Context, e *catalog.Entry) error
	Event  func(plugin, version, kind, reason string)
	Logger hclog.Logger
	// Every is how often the keeper looks again without being told
	// (default 1 minute).
	Every time.Duration
}

// Keeper removes the installed versions no longer wanted (GC) and keeps
// this node's bundles/<node> record, which says what it holds, up to date.
type Keeper struct {
	cfg     KeeperConfig
	trigger chan struct{}
	written []string // the record last written; nil before the first
	// failed are the target versions whose prefetch failed, by
	// intent.HeldRef: not tried again before next (Run's goroutine only).
	failed map[string]*backoff
}

// backoff is when a failed prefetch is tried again.
type backoff struct {
	next time.Time
	wait time.Duration
}

// Waits between tries of a prefetch that keeps failing: the keeper looks
// at every observation change in the cluster, several a second.
const (
	prefetchRetryFirst = 10 * time.Second
	prefetchRetryMax   = 10 * time.Minute
)

// NewKeeper returns a Keeper; Run runs it.
func NewKeeper(cfg KeeperConfig) *Keeper {
	if cfg.Keep <= 0 {
		cfg.Keep = DefaultKeep
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Every <= 0 {
		cfg.Every = time.Minute
	}
	if cfg.Event == nil {
		cfg.Event = func(string, string, string, string) {}
	}
	return &Keeper{cfg: cfg, trigger: make(chan struct{}, 1), failed: map[string]*backoff{}}
}

// Changed tells the keeper that installed bundles or what runs changed.
func (k *Keeper) Changed() {
	select {
	case k.trigger <- struct{}{}:
	default:
	}
}

// Run removes old versions, writes the record and fetches missing target
// versions at once, then whenever Changed is called, an intent, assignment
// or observation changes, and every cfg.Every, until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	tick := time.NewTicker(k.cfg.Every)
	defer tick.Stop()
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		// A new target, an assignment, or a change of what some node runs
		// (a swap that ended) can each make a version wanted or garbage.
		prefixes := []string{intent.PrefixIntent, intent.PrefixAssign, intent.PrefixObserve}
		_ = k.cfg.DB.Local().Watch(watchCtx, 0, prefixes, k.cfg.Logger, func(intent.Change) { k.Changed() })
	}()
	defer func() {
		stopWatch()
		<-watched
	}()
	for {
		if err := k.collect(ctx); err != nil && ctx.Err() == nil {
			k.cfg.Logger.Warn("old bundle versions not removed this time", "error", err)
		}
		retry := (<-chan time.Time)(nil)
		if err := k.publish(ctx); err != nil && ctx.Err() == nil {
			k.cfg.Logger.Warn("cannot record the bundles this node holds yet; other nodes may not fetch from it meanwhile", "error", err)
			retry = time.After(2 * time.Second)
		}
		k.prefetch(ctx)
		select {
		case <-ctx.Done():
			return
		case <-k.trigger:
		case <-tick.C:
		case <-retry:
		}
	}
}

// installed lists the registered versions installed on this node, by
// plugin, newest first.
func (k *Keeper) installed(ctx context.Context) (map[string][]*catalog.Entry, error) {
	all, err := k.cfg.Catalog.All(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]*catalog.Entry{}
	for name, vs := range all {
		for i := len(vs) - 1; i >= 0; i-- {
			if _, err := vs[i].ExecutableIn(k.cfg.PluginsDir); err == nil {
				out[name] = append(out[name], vs[i])
			}
		}
	}
	return out, nil
}

// publish writes bundles/<node> when what this node holds changed since
// it last wrote it.
func (k *Keeper) publish(ctx context.Context) error {
	inst, err := k.installed(ctx)
	if err != nil {
		return err
	}
	refs := []string{}
	for name, vs := range inst {
		for _, e := range vs {
			refs = append(refs, intent.HeldRef(name, e.Version))
		}
	}
	sort.Strings(refs)
	if k.written != nil && slices.Equal(refs, k.written) {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := k.cfg.DB.PutHeld(wctx, &intent.Held{Node: k.cfg.Node, Bundles: refs}); err != nil {
		return err
	}
	k.written = refs
	return nil
}

// collect removes, of each plugin's installed versions, those past the
// newest Keep that are not in use. Catalog records stay.
func (k *Keeper) collect(ctx context.Context) error {
	if k.cfg.InUse == nil {
		return errors.New("no way to tell which versions are in use")
	}
	inst, err := k.installed(ctx)
	if err != nil {
		return err
	}
	var old []*catalog.Entry
	for _, vs := range inst {
		if len(vs) > k.cfg.Keep {
			old = append(old, vs[k.cfg.Keep:]...)
		}
	}
	if len(old) == 0 {
		return nil
	}
	inUse, err := k.cfg.InUse(ctx)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range old {
		if inUse[intent.HeldRef(e.Name, e.Version)] || !bundle.ValidName(e.Name) || !bundle.ValidVersion(e.Version) {
			continue
		}
		dir := filepath.Join(k.cfg.PluginsDir, e.Name, e.Version)
		if err := os.RemoveAll(dir); err != nil {
			k.cfg.Logger.Warn("cannot remove an old bundle version", "plugin", e.Name, "version", e.Version, "dir", dir, "error", err)
			continue
		}
		removed = true
		why := fmt.Sprintf("removed from this node's disk: older than the newest %d installed versions and not running, desired, pinned or assigned (bundle_keep); still registered, and fetched again from a peer if it is needed", k.cfg.Keep)
		k.cfg.Logger.Info("old bundle version removed from disk", "plugin", e.Name, "version", e.Version, "keep", k.cfg.Keep)
		k.cfg.Event(e.Name, e.Version, "bundle-removed", why)
	}
	if removed {
		k.Changed()
	}
	return nil
}

// prefetch fetches, one at a time, each plugin's target version that this
// node has not installed and that another node's record says it holds.
// A failure is logged; the next round tries again.
func (k *Keeper) prefetch(ctx context.Context) {
	if k.cfg.Fetch == nil {
		return
	}
	db := k.cfg.DB.Local()
	intents, _, err := db.Intents(ctx)
	if err != nil {
		return
	}
	held, _, err := db.Held(ctx)
	if err != nil {
		return
	}
	targets := map[string]bool{}
	for _, it := range intents {
		targets[intent.HeldRef(it.Value.Plugin, it.Value.Version)] = true
	}
	for ref := range k.failed {
		if !targets[ref] {
			delete(k.failed, ref) // no longer a target
		}
	}
	for _, it := range intents {
		name, version := it.Value.Plugin, it.Value.Version
		elsewhere := false
		for _, h := range held {
			if h.Value.Node != k.cfg.Node && h.Value.Has(name, version) {
				elsewhere = true
			}
		}
		if !elsewhere {
			continue
		}
		e, err := k.cfg.Catalog.Get(ctx, name, version)
		if err != nil {
			continue
		}
		if _, err := e.ExecutableIn(k.cfg.PluginsDir); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		ref := intent.HeldRef(name, version)
		b := k.failed[ref]
		if b != nil && time.Now().Before(b.next) {
			continue
		}
		err = k.cfg.Fetch(ctx, e)
		switch {
		case err == nil:
			delete(k.failed, ref)
		case ctx.Err() == nil:
			if b == nil {
				b = &backoff{wait: prefetchRetryFirst}
				k.failed[ref] = b
			} else {
				b.wait = min(2*b.wait, prefetchRetryMax)
			}
			b.next = time.Now().Add(b.wait)
			k.cfg.Logger.Warn("could not fetch a plugin's target version ahead of need; trying again later", "plugin", name, "version", version, "error", err, "retry_in", b.wait)
		}
	}
}
