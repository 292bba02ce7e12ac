// Package routefeed keeps a node's route table of other nodes' plugin
// instances in step with the cluster: each node's observations of what it
// runs (observe/<node>/<plugin> in _sys) and the membership that says
// which nodes are alive and where their cluster RPC port is.
//
// It is level-triggered: on any change of an observation or a member, and
// every ResyncInterval, it reads all observations from this node's copy
// of the store and sets the route table to match. An instance is routable
// when its node observes it healthy, it is not a singleton's standby, and
// gossip knows its node alive with an RPC address; the others stay in the
// table, not routable, so that an UNAVAILABLE names them.
package routefeed

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/cluster"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/router"
)

// Table is the route table the feed sets; *router.Router has it.
type Table interface {
	SetRemote(router.Remote) error
	RemoveRemote(node, plugin string)
	SetRegistered(plugins map[string][]string)
	SetFailover(plugin, note string)
	// RoutesKnown says the feed made its first pass: calls to services
	// not known until then stop waiting for it.
	RoutesKnown()
}

// Catalog lists the registered plugins; *catalog.Catalog (its Local view)
// has it.
type Catalog interface {
	All(ctx context.Context) (map[string][]*catalog.Entry, error)
}

// Members is the membership the feed reads; *cluster.Cluster has it.
type Members interface {
	Members() []cluster.Member
	MemberChanges() (changes <-chan struct{}, stop func())
}

// Config configures Run.
type Config struct {
	// Node is this node's name: its own observations are the supervisor's
	// business (it sets the local backend), not the feed's.
	Node    string
	DB      *intent.DB
	Members Members
	// Catalog gives every registered plugin's services, so that a call to
	// a plugin no node runs is answered naming it.
	Catalog Catalog
	Table   Table
	Logger  hclog.Logger
	// ResyncInterval is how often the table is set from a full read even
	// without a change seen. Default 30s.
	ResyncInterval time.Duration
}

// DefaultResyncInterval is Config.ResyncInterval's default.
const DefaultResyncInterval = 30 * time.Second

// settle is how long the feed waits after a change for more to come, so
// that a burst of observation writes makes one pass.
const settle = 20 * time.Millisecond

// Run keeps cfg.Table in step until ctx ends, then returns ctx's error.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = DefaultResyncInterval
	}
	f := &feed{cfg: cfg, set: map[key]router.Remote{}}
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	changes, stop := cfg.Members.MemberChanges()
	defer stop()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		// A catalog change rewrites the plugin's intent in the same txn.
		_ = cfg.DB.Watch(ctx, 0, []string{intent.PrefixObserve, intent.PrefixIntent, intent.PrefixSingleton}, cfg.Logger, func(intent.Change) { poke() })
	}()
	defer func() { <-watchDone }()

	tick := time.NewTicker(cfg.ResyncInterval)
	defer tick.Stop()
	for first := true; ; first = false {
		f.pass(ctx)
		if first {
			// Known or not (a read that failed was logged), the table is
			// as complete as this node can make it now.
			cfg.Table.RoutesKnown()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-kick:
		case <-changes:
		case <-tick.C:
		}
		// Let a burst of changes arrive before reading.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(settle):
		}
	}
}

// key is one instance: a plugin on a node.
type key struct{ node, plugin string }

// feed is Run's state: what it last set in the table.
type feed struct {
	cfg        Config
	set        map[key]router.Remote
	registered map[string][]string
	// notes are the failover notes set, by singleton plugin; lastActive
	// is the node each singleton was last seen serving on.
	notes      map[string]string
	lastActive map[string]string
	// warned is what the last pass warned about, by record key: a
	// refusal is warned about once, not at every pass (one follows every
	// observation write in the cluster), and again if it changes.
	warned map[string]string
}

// warn logs msg about the record at k unless the last pass did.
func (f *feed) warn(seen map[string]string, k, msg string, args ...any) {
	seen[k] = msg + fmt.Sprint(args...)
	if f.warned[k] != seen[k] {
		f.cfg.Logger.Warn(msg, args...)
	}
}

// pass reads observations, members and the catalog and sets the table to
// match.
func (f *feed) pass(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if f.cfg.Catalog != nil {
		if all, err := f.cfg.Catalog.All(ctx); err != nil {
			if ctx.Err() == nil {
				f.cfg.Logger.Warn("could not read the catalog; the registered plugins known to routing stay as they were", "error", err)
			}
		} else if reg := registered(all); !maps.EqualFunc(reg, f.registered, slices.Equal) {
			f.cfg.Table.SetRegistered(reg)
			f.registered = reg
		}
	}
	obs, refused, err := f.cfg.DB.Local().Observations(ctx)
	if err != nil {
		if ctx.Err() == nil {
			f.cfg.Logger.Warn("could not read the cluster's observations; routes to other nodes stay as they were", "error", err)
		}
		return
	}
	seen := map[string]string{}
	defer func() { f.warned = seen }()
	for _, err := range refused {
		k := err.Error()
		var re *intent.RecordError
		if errors.As(err, &re) {
			k = re.Key
		}
		f.warn(seen, k, "an observation record is malformed; its instance is not routed to", "error", err)
	}
	want := remotes(f.cfg.Node, obs, f.cfg.Members.Members())
	for k, rem := range want {
		if old, ok := f.set[k]; ok && equal(old, rem) {
			continue
		}
		if err := f.cfg.Table.SetRemote(rem); err != nil {
			f.warn(seen, intent.ObserveKey(rem.Node, rem.Plugin), "an observed instance cannot be routed to", "plugin", rem.Plugin, "node", rem.Node, "error", err)
			delete(want, k)
			continue
		}
		f.set[k] = rem
	}
	for k := range f.set {
		if _, ok := want[k]; !ok {
			f.cfg.Table.RemoveRemote(k.node, k.plugin)
			delete(f.set, k)
		}
	}
	f.failovers(ctx, obs)
}

// failovers tells the table which singletons are between actives: one
// whose assigned active is not observed serving on an alive node.
func (f *feed) failovers(ctx context.Context, obs []intent.Item[intent.Observation]) {
	singletons, _, err := f.cfg.DB.Local().Singletons(ctx)
	if err != nil {
		return // the notes stay as they were; the next pass tries again
	}
	if f.notes == nil {
		f.notes, f.lastActive = map[string]string{}, map[string]string{}
	}
	alive := map[string]bool{f.cfg.Node: true}
	for _, m := range f.cfg.Members.Members() {
		alive[m.Name] = m.Status == "alive"
	}
	serving := map[key]bool{}
	for _, it := range obs {
		o := it.Value
		serving[key{o.Node, o.Plugin}] = o.Healthy && o.Role != intent.RoleStandby && alive[o.Node]
	}
	notes := map[string]string{}
	for _, it := range singletons {
		sg := it.Value
		note := ""
		switch from := f.lastActive[sg.Plugin]; {
		case sg.Active != "" && serving[key{sg.Active, sg.Plugin}]:
			f.lastActive[sg.Plugin] = sg.Active
		case sg.Active == "":
			note = fmt.Sprintf("singleton %s has no node to run on (see 'plughost plugin status %s')", sg.Plugin, sg.Plugin)
		case from != "" && from != sg.Active:
			note = fmt.Sprintf("singleton %s is failing over from %s to %s", sg.Plugin, from, sg.Active)
		default:
			note = fmt.Sprintf("singleton %s is starting on %s", sg.Plugin, sg.Active)
		}
		notes[sg.Plugin] = note
	}
	for plugin, old := range f.notes {
		if _, ok := notes[plugin]; !ok && old != "" {
			f.cfg.Table.SetFailover(plugin, "")
		}
	}
	for plugin, note := range notes {
		if f.notes[plugin] != note {
			f.cfg.Table.SetFailover(plugin, note)
		}
	}
	f.notes = notes
}

// remotes is the route table's view of the other nodes' instances, from
// their observations and the members: see the package doc for which are
// routable. Observations of self, and of nodes gossip does not know, are
// left out.
func remotes(self string, obs []intent.Item[intent.Observation], members []cluster.Member) map[key]router.Remote {
	byName := make(map[string]cluster.Member, len(members))
	for _, m := range members {
		byName[m.Name] = m
	}
	out := make(map[key]router.Remote)
	for _, it := range obs {
		o := it.Value
		m, known := byName[o.Node]
		if o.Node == self || !known || m.Status == "left" || len(o.Services) == 0 {
			continue
		}
		out[key{o.Node, o.Plugin}] = router.Remote{
			Node: o.Node, RPCAddr: m.RPCAddr, Plugin: o.Plugin, Version: o.Version,
			Services: o.Services,
			Healthy:  o.Healthy && o.Role != intent.RoleStandby && m.Status == "alive" && m.RPCAddr != "",
		}
	}
	return out
}

// registered maps each registered plugin to the services of its newest
// version.
func registered(all map[string][]*catalog.Entry) map[string][]string {
	out := make(map[string][]string, len(all))
	for name, versions := range all {
		if n := len(versions); n > 0 && versions[n-1].Manifest != nil {
			out[name] = versions[n-1].Manifest.Services
		}
	}
	return out
}

// equal reports whether two Remotes set the same route.
func equal(a, b router.Remote) bool {
	return a.Node == b.Node && a.RPCAddr == b.RPCAddr && a.Plugin == b.Plugin && a.Version == b.Version &&
		a.Healthy == b.Healthy && slices.Equal(a.Services, b.Services)
}
