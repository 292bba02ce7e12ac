package agent

import (
	"context"
	"path/filepath"

	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/install"
	"github.com/plughost/plughost/host/intent"
	clusterv1 "github.com/plughost/plughost/proto/plughost/cluster/v1"
)

// Bundles that travel (area: fetch): this node serves its installed
// bundles to its peers on the cluster gRPC server, fetches a version it
// must run but lacks from them, records what it holds in bundles/<node>
// and removes versions no longer wanted.

// fetchTempDir holds the archives served to peers and received from them:
// inside the staging dir, which only the agent may enter and which is
// emptied at every start.
func (c *Config) fetchTempDir() string { return filepath.Join(c.stagingDir(), "peers") }

// registerBundleService serves this node's bundles on the cluster gRPC
// server. Its mutual TLS admits only nodes with the cluster's server
// certificates, and the cluster enforcer asks for management for a
// service that host/acl's table does not list: another agent's own call,
// known by that certificate, or a management token.
func (a *Agent) registerBundleService() {
	cfg := &a.cfg
	clusterv1.RegisterBundleServiceServer(a.clusterGRPC, install.NewServer(install.ServerConfig{
		Node: cfg.Node, PluginsDir: cfg.pluginsDir(), TempDir: cfg.fetchTempDir(),
		Catalog: a.catalog.Local(), Concurrency: cfg.BundleServeConcurrency, Logger: a.log.Named("bundles"),
	}))
}

// newFetcher returns the fetcher the supervisor asks for a missing bundle.
func (a *Agent) newFetcher() *install.Fetcher {
	cfg := &a.cfg
	return install.NewFetcher(install.FetcherConfig{
		Node: cfg.Node,
		Peers: func() []install.Peer {
			var out []install.Peer
			// Nodes, not Members: names and addresses a peer gossips
			// are checked before they are dialed.
			for _, n := range a.cluster.Nodes() {
				out = append(out, install.Peer{Node: n.Name, RPCAddr: n.RPCAddr, Alive: n.Status == "alive"})
			}
			return out
		},
		Held: func(ctx context.Context) ([]*intent.Held, error) {
			items, _, err := intent.New(a.store).Local().Held(ctx)
			held := make([]*intent.Held, len(items))
			for i := range items {
				held[i] = &items[i].Value
			}
			return held, err
		},
		Dial:        a.rpc.DialGRPC,
		Credentials: a.acl.ForwardCredentials(),
		Intake: func(ctx context.Context, path, actor string) error {
			_, err := a.installer.Install(ctx, path, actor)
			return err
		},
		TempDir: cfg.fetchTempDir(),
		Event: func(plugin, version, kind, reason string) {
			a.super.Events().Record(plugin, version, "", kind, reason)
		},
		Logger: a.log.Named("bundles"),
	})
}

// newKeeper returns the keeper of this node's installed versions, which
// fetches the target versions this node lacks with fetcher.
func (a *Agent) newKeeper(fetcher *install.Fetcher) *install.Keeper {
	cfg := &a.cfg
	return install.NewKeeper(install.KeeperConfig{
		Node: cfg.Node, PluginsDir: cfg.pluginsDir(), DB: intent.New(a.store), Catalog: a.catalog.Local(), Keep: cfg.BundleKeep,
		InUse: a.bundlesInUse,
		Fetch: func(ctx context.Context, e *catalog.Entry) error { return fetcher.Fetch(ctx, e, nil) },
		Event: func(plugin, version, kind, reason string) {
			a.super.Events().Record(plugin, version, "", kind, reason)
		},
		Logger: a.log.Named("bundles"),
	})
}

// bundlesInUse lists the versions whose bundles must stay on this node:
// what runs here and what this node wants to run (its fallback from a
// version that failed here included), every plugin's desired version (its
// pin, else its highest), every pinned one, and every version assigned to
// or observed running on any node.
func (a *Agent) bundlesInUse(ctx context.Context) (map[string]bool, error) {
	cfg := &a.cfg
	use := map[string]bool{}
	add := func(name, version string) {
		if version != "" {
			use[intent.HeldRef(name, version)] = true
		}
	}
	for _, st := range a.super.List() {
		add(st.Name, st.Running)
		add(st.Name, st.Desired)
		add(st.Name, st.Pinned)
		for _, in := range st.Instances {
			add(st.Name, in.Version)
		}
	}
	names, err := a.catalog.Names(ctx)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		e, pin, err := a.catalog.Desired(ctx, name)
		if err != nil {
			return nil, err
		}
		add(name, e.Version)
		if pin != nil {
			add(name, pin.Version)
		}
		// What this node falls back to when the desired version failed
		// here, before its supervisor has started it.
		running := ""
		if st, ok := a.super.Status(name); ok {
			running = st.Running
		}
		if e, _, err := a.catalog.Effective(ctx, cfg.Node, name, running); err == nil {
			add(name, e.Version)
		}
	}
	// Assigned anywhere, and running anywhere (observed), as intent says.
	db := intent.New(a.store).Local()
	assigned, _, err := db.Assignments(ctx)
	if err != nil {
		return nil, err
	}
	for _, it := range assigned {
		add(it.Value.Plugin, it.Value.Version)
	}
	observed, _, err := db.Observations(ctx)
	if err != nil {
		return nil, err
	}
	for _, it := range observed {
		add(it.Value.Plugin, it.Value.Version)
	}
	return use, nil
}

// checkInstalled returns the supervisor's check of installed files before
// every start: with trusted keys, the installed bundle must be signed by
// one of them (install.CheckInstalled). Without trusted keys it is nil.
func (a *Agent) checkInstalled() func(e *catalog.Entry, dir string) error {
	if a.trusted == nil {
		return nil
	}
	return func(e *catalog.Entry, dir string) error { return install.CheckInstalled(a.trusted, e, dir) }
}
