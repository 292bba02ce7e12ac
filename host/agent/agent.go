package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/plughost/plughost/host/acl"
	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/cluster"
	"github.com/plughost/plughost/host/clusterrpc"
	"github.com/plughost/plughost/host/controller"
	"github.com/plughost/plughost/host/fence"
	"github.com/plughost/plughost/host/governance"
	"github.com/plughost/plughost/host/install"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/launch"
	"github.com/plughost/plughost/host/leader"
	"github.com/plughost/plughost/host/rollout"
	"github.com/plughost/plughost/host/routefeed"
	"github.com/plughost/plughost/host/router"
	"github.com/plughost/plughost/host/supervisor"
	"github.com/plughost/plughost/host/tlsutil"
	"github.com/plughost/plughost/internal/netlimit"
	aclv1 "github.com/plughost/plughost/proto/plughost/acl/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/sdk/wire"
	"github.com/plughost/plughost/store"
)

// Version is the agent's version, set at build time with
// -ldflags "-X github.com/plughost/plughost/host/agent.Version=...".
var Version = "0.1.0-dev"

// Agent is one running plughost node.
type Agent struct {
	cfg       Config
	log       hclog.Logger
	store     *store.Store
	cluster   *cluster.Cluster
	catalog   *catalog.Catalog
	router    *router.Router
	super     *supervisor.Supervisor
	gov       *governance.Manager
	installer *install.Intake
	trusted   *bundle.TrustedKeys // publisher keys bundles must be signed by; nil: any bundle
	acl       *acl.Resolver

	apiLn  net.Listener
	httpLn net.Listener
	grpc   *grpc.Server
	http   *http.Server

	// tls is the node's TLS material (nil: a -dev agent without it);
	// rpc its cluster RPC port, and clusterGRPC the gRPC server on it.
	tls         *tlsutil.Config
	rpc         *clusterrpc.Mux
	clusterGRPC *grpc.Server

	// apiLimit and httpLimit are the listeners' limits (see listen).
	apiLimit, httpLimit *netlimit.Listener

	ready chan struct{}
}

// New checks cfg and prepares an agent; Run starts it.
func New(cfg Config, log hclog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.checkGossipKey(); err != nil {
		return nil, err
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	trusted, err := bundle.LoadTrustedKeys(cfg.TrustedKeys)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: log, trusted: trusted, ready: make(chan struct{})}
	if files := cfg.tlsFiles(); files.Set() {
		tc, err := tlsutil.Load(files)
		if err != nil {
			return nil, err
		}
		if err := tc.CheckServerFor(cfg.Node); err != nil {
			return nil, fmt.Errorf("%w (-cert-file %s)", err, cfg.CertFile)
		}
		a.tls = tc
	}
	return a, nil
}

// Ready is closed once the store has a leader and the agent's plugins and
// bundle intake have started; the API answers from before that.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// APIAddr is the address the API listens on (useful with port 0).
func (a *Agent) APIAddr() string {
	if a.apiLn != nil {
		return a.apiLn.Addr().String()
	}
	return a.cfg.APIAddr
}

// HTTPAddr is the address of the health and metrics endpoint.
func (a *Agent) HTTPAddr() string {
	if a.httpLn != nil {
		return a.httpLn.Addr().String()
	}
	return a.cfg.HTTPAddr
}

// Run starts the agent and blocks until ctx ends, then stops every plugin
// and closes every listener before it returns.
func (a *Agent) Run(ctx context.Context) (err error) {
	cfg := &a.cfg
	// The data dir is the agent's alone (0700; see secureDataDir).
	if err := os.MkdirAll(cfg.DataDir, privateDirMode); err != nil {
		return fmt.Errorf("agent: data dir: %w", err)
	}
	if err := secureDataDir(cfg.DataDir, a.log); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.storeDir(), privateDirMode); err != nil {
		return fmt.Errorf("agent: data dir: %w", err)
	}
	for _, d := range []string{cfg.bundlesDir(), cfg.pluginsDir(), cfg.stagingDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("agent: data dir: %w", err)
		}
	}
	_ = os.RemoveAll(cfg.stagingDir())
	_ = os.MkdirAll(cfg.stagingDir(), 0o700)
	// The bundle store and staging hold the verified private copies of
	// bundles, the files that run: no one but the agent may enter them.
	if err := os.Chmod(cfg.pluginsDir(), 0o700); err != nil {
		return fmt.Errorf("agent: data dir: %w", err)
	}
	if a.trusted != nil {
		a.log.Info("accepting only bundles signed by a trusted key", "trusted_keys", strings.Join(a.trusted.IDs(), ", "))
	}

	// Listeners first, so a taken port fails fast with its flag named.
	if a.apiLimit, err = a.listen("api", cfg.APIAddr); err != nil {
		return err
	}
	a.apiLn = a.apiLimit
	defer a.apiLn.Close()
	if a.httpLimit, err = a.listen("http", cfg.HTTPAddr); err != nil {
		return err
	}
	a.httpLn = a.httpLimit
	defer a.httpLn.Close()
	if cfg.APITLS {
		a.apiLn = tls.NewListener(a.apiLn, a.tls.API(cfg.APIVerifyClient))
	}
	// The -http port (area: secnet): its requests carry a bearer token.
	if cfg.HTTPTLS {
		a.httpLn = tls.NewListener(a.httpLn, a.tls.HTTP())
	} else if !loopbackOnly(a.httpLn.Addr().String()) {
		a.log.Warn("the -http port is reachable beyond this machine without TLS: the token of each /metrics and /v1/health request crosses the network in clear; give -http-tls (it uses the API's certificate) or bind -http to 127.0.0.1",
			"http", a.httpLn.Addr().String())
	}
	rpcTLS := a.tls
	if rpcTLS != nil {
		a.log.Info("node-to-node connections are mutual TLS", "node", a.tls.Node, "api_tls", cfg.APITLS, "api_verify_client", cfg.APIVerifyClient)
	} else {
		// A -dev agent without certificates: its RPC port takes only
		// itself, with a CA made for this run alone.
		if rpcTLS, err = tlsutil.Ephemeral(cfg.Node); err != nil {
			return fmt.Errorf("agent: a certificate for this run: %w", err)
		}
		a.log.Info("dev agent: its cluster RPC port uses a CA made for this run; give -ca-file, -cert-file and -key-file for a cluster")
	}
	// The cluster RPC port closes after the store, whose raft uses it.
	if a.rpc, err = clusterrpc.Listen(cfg.RPCAddr, rpcTLS, clusterrpc.Limits{
		MaxHandshakes: cfg.RPCMaxHandshakes, MaxHandshakesPerClient: cfg.RPCMaxHandshakesPerClient,
		HandshakeTimeout: cfg.RPCHandshakeTimeout.Duration}, a.log.Named("rpc")); err != nil {
		return fmt.Errorf("agent: -rpc %s: %w", cfg.RPCAddr, err)
	}
	defer a.rpc.Close()

	if err := a.openStore(); err != nil {
		return err
	}
	defer a.store.Close()
	// ACLs are always on. Tokens resolve from a copy of the store's ACL
	// records; a follower's own store calls to the leader carry no token
	// (the leader knows it by its server certificate). The agent's own
	// PLUGHOST_TOKEN, if any, is no one
	// else's: plugins inherit the agent's environment.
	a.acl = acl.NewResolver(a.store, a.log.Named("acl"))
	a.acl.SetCacheFile(filepath.Join(cfg.DataDir, "acl-cache.json"))
	// secacl: the cluster's first management token from config.
	initial, err := cfg.initialManagement()
	if err != nil {
		return err
	}
	a.acl.SetInitialManagement(initial)
	a.store.SetForwardCredentials(a.acl.ForwardCredentials())
	enforcer := acl.NewEnforcer(a.acl)
	for _, k := range []string{"PLUGHOST_TOKEN", "PLUGHOST_TOKEN_FILE"} {
		_ = os.Unsetenv(k)
	}
	// Runs before the store closes: leave the gossip gracefully so the
	// leader removes this node at once.
	defer a.leaveCluster()
	a.catalog = catalog.New(a.store)
	// core: the leader-only tasks, run while this node leads.
	leader.Run(a.store, "intents", leader.TaskFunc(func(ctx context.Context) error {
		return a.catalog.KeepIntents(ctx, a.log.Named("intents"))
	}), a.log.Named("leader"))
	placer := controller.New(controller.Config{Store: a.store, Members: placementMembers{a.cluster, a.store}, Logger: a.log.Named("placement")})
	leader.Run(a.store, "placement", leader.TaskFunc(placer.Run), a.log.Named("leader"))
	// rollout: version changes move one upgrade domain at a time (area roll).
	snapCfg := cfg.SnapshotConfig()
	snapCfg.Logger = a.log.Named("rollout")
	rollouts := rollout.New(rollout.Config{Store: a.store, Catalog: a.catalog, Members: placementMembers{a.cluster, a.store},
		Snapshots: rollout.NewSnapshots(a.store, snapCfg), Node: cfg.Node, Logger: a.log.Named("rollout"), Keep: cfg.RolloutKeep})
	leader.Run(a.store, "rollout", leader.TaskFunc(rollouts.Run), a.log.Named("leader"))

	stopGovernance, err := a.startGovernance(ctx)
	if err != nil {
		return err
	}
	// Runs once every plugin has stopped.
	defer stopGovernance()
	// Plugins' unix sockets go in a directory of the agent's own, which it
	// empties now (plugins of an earlier run are gone: the reaper is done)
	// and removes when it stops.
	sockets, err := prepareSocketDir(cfg)
	if err != nil {
		return err
	}
	defer RemoveSocketDir(sockets)
	sb, err := a.startSandbox(sockets)
	if err != nil {
		return err
	}
	defer sb.Close()
	if reason := a.gov.Reason(); reason != "" {
		a.log.Warn("resource limits are not fully enforced", "mode", a.gov.Mode(), "reason", reason)
	} else {
		a.log.Info("resource governance", "mode", a.gov.Mode())
	}

	a.router = router.New(router.Config{Logger: a.log.Named("router"), HoldTimeout: cfg.HoldTimeout.Duration,
		Authorize: enforcer.AuthorizeCall, FirstCallTimeout: cfg.FirstCallTimeout.Duration,
		// secnet: connections idle after their first call are closed.
		IdleTimeout: idleTimeout(cfg.ConnIdleTimeout.Duration),
		// secacl: reflection describes only the plugins the token may read.
		MayDescribe: enforcer.MayDescribe,
		// remote: calls that find no local instance go to another node's
		// over the cluster RPC port (mutual TLS).
		Node: cfg.Node, DialPeer: a.rpc.DialRelay,
		// hold: calls to services the route feed has not made known yet
		// wait for its first pass.
		AwaitRoutes: true})
	// Bundles that travel (area: fetch; see bundles.go).
	fetcher := a.newFetcher()
	defer fetcher.Close()
	node := &pluginv1.NodeInfo{Name: cfg.Node, ApiAddress: a.apiLn.Addr().String(), Tags: cfg.Tags}
	// Singleton fencing (area: fence): this node's role in each singleton
	// and its lease.
	fencer := fence.New(fence.Config{Node: cfg.Node, DB: intent.New(a.store), Contact: a.store.LeaderContact,
		Lease: cfg.SingletonLease.Duration, Logger: a.log,
		Events: func(plugin, kind, msg string) { a.super.Events().Record(plugin, "", "", kind, msg) }})
	a.super = supervisor.New(supervisor.Config{
		Node:              node,
		PluginsDir:        cfg.pluginsDir(),
		SocketDir:         sockets,
		Catalog:           a.catalog,
		Store:             a.store,
		Router:            a.router,
		Governance:        a.gov,
		Sandbox:           sb,
		Defaults:          limits(cfg.DefaultResources),
		Overrides:         overrides(cfg.Overrides),
		Logger:            a.log,
		StartTimeout:      cfg.StartTimeout.Duration,
		StoreRate:         cfg.StoreRate,
		StoreBurst:        cfg.StoreBurst,
		BackoffInitial:    cfg.BackoffInitial.Duration,
		BackoffMax:        cfg.BackoffMax.Duration,
		CrashLoopRestarts: cfg.CrashLoopRestarts,
		CrashLoopWindow:   cfg.CrashLoopWindow.Duration,
		CheckInstalled:    a.checkInstalled(),
		Fetch:             fetcher.Fetch,
		Fence:             fencer,
	})
	fencer.OnChange(a.super.RoleChanged)
	keeper := a.newKeeper(fetcher)
	a.installer = install.NewIntake(install.IntakeConfig{
		PluginsDir: cfg.pluginsDir(), StagingDir: cfg.stagingDir(), Catalog: a.catalog, Trusted: a.trusted, Logger: a.log.Named("bundles"),
		BaseSpec: func() launch.Spec {
			return launch.Spec{StartTimeout: cfg.StartTimeout.Duration, Logger: a.log.Named("probe"), SocketDir: sockets}
		},
		Sandbox: sb, Governance: a.gov, ProbeLimits: limits(cfg.DefaultResources),
		Installed: func(name string) { a.super.Reconcile(name); keeper.Changed() },
	})

	// Stream workers keep their grown stacks across calls: small unary
	// calls (store reads) otherwise pay a stack growth each. The agent's
	// own services take messages as large as the store's largest legal
	// request (store.ServerOptions, after the router's larger limit).
	// A connection whose first call went to them is held to that limit in
	// its plugin calls too (README, Architecture).
	a.grpc = grpc.NewServer(slices.Concat(a.router.ServerOptions(),
		[]grpc.ServerOption{grpc.NumStreamWorkers(uint32(4 * runtime.GOMAXPROCS(0)))},
		a.store.ServerOptions(),
		[]grpc.ServerOption{grpc.ChainUnaryInterceptor(enforcer.Unary), grpc.ChainStreamInterceptor(enforcer.Stream)})...)
	enforcer.SetServer(a.grpc)
	aclv1.RegisterACLServiceServer(a.grpc, acl.NewService(a.store, a.acl))
	operatorv1.RegisterOperatorServiceServer(a.grpc, &operator{a: a})
	storeSrv := store.NewServer(a.store)
	storev1.RegisterStoreServiceServer(a.grpc, storeSrv)
	storev1.RegisterStoreAdminServiceServer(a.grpc, storeSrv)
	a.router.RegisterReflection(a.grpc)
	// The cluster gRPC server, on the cluster RPC port, takes what other
	// nodes send: requests forwarded to the leader.
	// Calls forwarded to the leader carry the client's token (a client's
	// own store call) or none (the agent's own work): the cluster RPC
	// port is checked as the API is, and a call without a token there is
	// an agent's, known by its server certificate.
	clusterEnforcer := acl.NewClusterEnforcer(a.acl)
	// secacl: the server knows another agent by the server certificate
	// its connection presented (clusterrpc.ServerCredentials).
	a.clusterGRPC = grpc.NewServer(append(a.store.ServerOptions(), grpc.MaxSendMsgSize(64<<20), grpc.Creds(clusterrpc.ServerCredentials()),
		grpc.ChainUnaryInterceptor(clusterEnforcer.Unary), grpc.ChainStreamInterceptor(clusterEnforcer.Stream))...)
	clusterEnforcer.SetServer(a.clusterGRPC)
	storev1.RegisterStoreServiceServer(a.clusterGRPC, storeSrv)
	storev1.RegisterStoreAdminServiceServer(a.clusterGRPC, storeSrv)
	a.registerBundleService()
	a.http = newHTTPServer(a.httpHandler())

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if a.tls != nil {
		// Certificates rotate without a restart (area: secnet).
		watchCtx, stopWatch := context.WithCancel(runCtx)
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			a.watchTLS(watchCtx)
		}()
		defer func() {
			stopWatch()
			<-watched
		}()
	}
	var wg sync.WaitGroup
	errc := make(chan error, 6)
	// The API and /v1/health answer from here on, with a leader or not:
	// members, raft peers and this node's plugins are what an operator
	// needs to see in a cluster that has none.
	wg.Add(6)
	go func() {
		defer wg.Done()
		// remote: calls other nodes relay to this node's plugins, on the
		// cluster RPC port; stopServers closes its listener.
		if err := a.router.ServeRelayed(a.rpc.Relay()); err != nil && !errors.Is(err, clusterrpc.ErrClosed) && runCtx.Err() == nil {
			errc <- fmt.Errorf("agent: relayed calls: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := a.clusterGRPC.Serve(a.rpc.GRPC()); err != nil && !errors.Is(err, grpc.ErrServerStopped) && runCtx.Err() == nil {
			errc <- fmt.Errorf("agent: cluster RPC: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		a.acl.Run(runCtx)
	}()
	go func() {
		defer wg.Done()
		// The router accepts every API connection: it relays calls to
		// plugins and hands the agent's own API to a.grpc.
		if err := a.router.Serve(a.apiLn, a.grpc); err != nil {
			errc <- fmt.Errorf("agent: api: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := a.http.Serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("agent: http: %w", err)
		}
	}()
	// Plugins and bundle intake need the catalog, so they start once there
	// is a leader.
	go func() {
		defer wg.Done()
		if err := a.waitForLeader(runCtx); err != nil {
			if runCtx.Err() == nil {
				errc <- err
			}
			return
		}
		if cfg.Dev {
			if err := a.devToken(runCtx); err != nil {
				if runCtx.Err() == nil {
					errc <- err
				}
				return
			}
		}
		if err := a.waitForACLBootstrap(runCtx); err != nil {
			return
		}
		wg.Add(5) // this goroutine's count keeps wg above zero meanwhile
		go func() {
			defer wg.Done()
			errc <- a.super.Run(runCtx)
		}()
		go func() {
			defer wg.Done()
			_ = fencer.Run(runCtx)
		}()
		go func() {
			defer wg.Done()
			keeper.Run(runCtx)
		}()
		go func() {
			defer wg.Done()
			// remote: other nodes' instances, from their observations and
			// membership, into the router's table.
			_ = routefeed.Run(runCtx, routefeed.Config{Node: cfg.Node, DB: intent.New(a.store),
				Members: a.cluster, Catalog: a.catalog.Local(), Table: a.router, Logger: a.log.Named("routes")})
		}()
		go func() {
			defer wg.Done()
			w := &watcher{dir: cfg.bundlesDir(), refused: cfg.refusedDir(), log: a.log.Named("bundles"),
				install: func(ctx context.Context, path string) error {
					_, err := a.installer.Install(ctx, path, "bundles-dir")
					return err
				}}
			w.run(runCtx)
		}()
		a.log.Info("agent started", "node", cfg.Node, "api", a.APIAddr(), "http", a.HTTPAddr(), "data_dir", cfg.DataDir, "version", Version)
		close(a.ready)
	}()

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	a.log.Info("agent stopping")
	cancel()
	a.stopServers()
	wg.Wait()
	if cfg.Dev {
		acl.ForgetTokenFile(a.APIAddr(), filepath.Join(cfg.DataDir, acl.TokenFileName))
	}
	plugin.CleanupClients()
	a.log.Info("agent stopped")
	return err
}

func (a *Agent) stopServers() {
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	a.router.Stop(rctx)
	rcancel()
	_ = a.rpc.Relay().Close() // remote: ServeRelayed returns
	done := make(chan struct{})
	go func() {
		a.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		a.grpc.Stop()
	}
	a.clusterGRPC.Stop() // forwarded calls end; their senders try the next leader
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = a.http.Shutdown(sctx)
}

func (a *Agent) openStore() error {
	cfg := &a.cfg
	sc := store.DefaultConfig()
	sc.NodeID = cfg.Node
	sc.Dir = cfg.storeDir()
	sc.RaftAddr = cfg.RPCAddr
	sc.Transport = a.rpc
	sc.LogStore = cfg.RaftLog
	sc.Bootstrap = cfg.Dev || cfg.BootstrapExpect <= 1
	sc.MaxValueBytes = cfg.MaxValueBytes
	sc.MaxTxnBytes = cfg.MaxTxnBytes
	sc.MaxWatches, sc.MaxWatchesPerClient = cfg.MaxWatches, cfg.MaxWatchesPerClient
	sc.PluginWatchReserve = cfg.PluginWatchReserve // secacl
	sc.DefaultQuota = store.Quota{MaxBytes: cfg.DefaultQuota.MaxBytes, MaxKeys: cfg.DefaultQuota.MaxKeys}
	sc.Quotas = map[string]store.Quota{}
	for ns, q := range cfg.Quotas {
		sc.Quotas[ns] = store.Quota{MaxBytes: q.MaxBytes, MaxKeys: q.MaxKeys}
	}
	sc.Logger = a.log.Named("store")
	st, err := store.Open(sc)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	ccfg := cluster.Config{
		NodeName:        cfg.Node,
		BindAddr:        cfg.SerfAddr,
		APIAddr:         a.apiLn.Addr().String(),
		Tags:            cfg.Tags,
		Join:            cfg.Join,
		BootstrapExpect: cfg.BootstrapExpect,
		DataDir:         cfg.serfDir(),
		Store:           st,
		Logger:          a.log.Named("cluster"),

		DeadServerGrace:     cfg.DeadServerGrace.Duration,
		ServerStabilization: cfg.ServerStabilization.Duration,
		MinQuorum:           cfg.MinQuorum,

		EncryptKey:        cfg.Encrypt,
		RequireEncryption: !cfg.Dev,

		// Node identity (area: nodes).
		FaultDomain:      cfg.FaultDomain,
		UpgradeDomain:    cfg.UpgradeDomain,
		FailureDetection: cfg.FailureDetection.cluster(),
	}
	ccfg.VerifyServer = a.rpc.Verify
	c, err := cluster.Start(ccfg)
	if err != nil {
		st.Close()
		return fmt.Errorf("agent: membership: %w", err)
	}
	a.store, a.cluster = st, c
	return nil
}

// waitForLeader waits until the store has a leader. A dev agent leads alone
// at once, and is given 30 s; a cluster node waits for its peers (-join,
// -bootstrap-expect) as long as it takes.
func (a *Agent) waitForLeader(ctx context.Context) error {
	cfg := &a.cfg
	wctx, cancel := context.WithCancel(ctx)
	if cfg.Dev || cfg.BootstrapExpect <= 1 {
		wctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	} else {
		a.log.Info("waiting for the cluster to elect a leader; the API answers meanwhile", "bootstrap_expect", cfg.BootstrapExpect, "join", cfg.Join)
	}
	defer cancel()
	if err := a.store.WaitForLeader(wctx); err != nil {
		return fmt.Errorf("agent: store has no leader: %w", err)
	}
	return nil
}

// waitForACLBootstrap holds plugins and bundle intake until the cluster's
// ACLs are bootstrapped: until then `acl bootstrap` answers anyone without
// a token, and the operator, not a plugin that started first, must be the
// one who gets the management token. It returns ctx's error if ctx ends
// first.
func (a *Agent) waitForACLBootstrap(ctx context.Context) error {
	told := false
	for !a.acl.Bootstrapped() {
		if !told {
			a.log.Info("plugins and bundle intake start once the cluster's ACLs are bootstrapped: run 'plughost acl bootstrap' against any node")
			told = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// devToken makes sure a dev agent's data dir holds a management token
// (bootstrapping ACLs on first start) and records where it is for the CLI
// on this host, which then needs no -token.
func (a *Agent) devToken(ctx context.Context) error {
	path := filepath.Join(a.cfg.DataDir, acl.TokenFileName)
	created, err := acl.EnsureDevToken(ctx, a.store, a.acl, path)
	if err != nil {
		return fmt.Errorf("agent: dev agent's management token: %w", err)
	}
	if created {
		a.log.Info("dev agent: ACLs bootstrapped; management token written", "path", path)
	}
	rec, err := acl.RecordTokenFile(a.APIAddr(), path)
	if err != nil {
		a.log.Warn("the CLI will not find the dev agent's token by itself; give it -token-file", "path", path, "error", err)
		return nil
	}
	a.log.Debug("dev token recorded for the CLI", "record", rec)
	return nil
}

// leaveCluster leaves the gossip gracefully.
func (a *Agent) leaveCluster() {
	if a.cluster == nil {
		return
	}
	if err := a.cluster.Leave(); err != nil {
		a.log.Warn("leaving the cluster", "error", err)
	}
}

func limits(r Resources) governance.Limits {
	return governance.Limits{MemoryBytes: r.MemoryMB << 20, CPU: r.CPU, Pids: r.Pids}
}

func overrides(m map[string]Resources) map[string]governance.Limits {
	out := make(map[string]governance.Limits, len(m))
	for k, v := range m {
		out[k] = limits(v)
	}
	return out
}

var _ = wire.APIVersion
