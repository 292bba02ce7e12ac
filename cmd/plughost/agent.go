package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	hclog "github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/agent"
	"github.com/plughost/plughost/host/cluster"
	"github.com/plughost/plughost/host/sandbox"
	"github.com/plughost/plughost/store"
)

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runAgent(ctx context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	dev := fs.Bool("dev", false, "single-node agent on loopback with one raft voter")
	configFile := fs.String("config", "", "JSON config file (flags override it)")
	dataDir := fs.String("data-dir", "", "data directory (default ./plughost-data)")
	node := fs.String("node", "", "node name (default the host name)")
	api := fs.String("api", "", "gRPC API address (default "+agent.DefaultAPIAddr+")")
	httpAddr := fs.String("http", "", "HTTP address of /v1/health and /metrics, which need a token whose policy gives operator = \"read\" (default "+agent.DefaultHTTPAddr+")")
	rpc := fs.String("rpc", "", "cluster RPC and raft address (default "+agent.DefaultRPCAddr+")")
	serfAddr := fs.String("serf", "", "serf gossip address (default "+agent.DefaultSerfAddr+")")
	bootstrapExpect := fs.Int("bootstrap-expect", -1, "servers to wait for before bootstrapping the cluster")
	raftLog := fs.String("raft-log", "", "raft log store for a new data dir: wal or boltdb (default "+store.DefaultLogStore+"; an existing data dir keeps its own)")
	maxProcs := fs.Int("max-procs", -1, "CPUs the agent's own Go code runs on at once (default half of those it may use, at least 1; GOMAXPROCS in the environment wins)")
	cgroupParent := fs.String("cgroup-parent", "", "cgroup that agents on this machine share; each makes its own inside, one per plugin instance in that (default plughost)")
	deadServerGrace := fs.Duration("dead-server-grace", 0, "how long a server is failed, to gossip and to raft, before the leader removes it from raft (default "+cluster.DefaultDeadServerGrace.String()+")")
	serverStabilization := fs.Duration("server-stabilization", 0, "how long a new server is healthy before it gets a vote (default "+cluster.DefaultServerStabilization.String()+")")
	minQuorum := fs.Int("min-quorum", -1, "fewest voters the removal of dead servers leaves, so the servers that come back make a quorum (default the -bootstrap-expect count)")
	// sandbox
	pluginUser := fs.String("plugin-user", "", "user every plugin runs as (default: a uid of its own per plugin, from plugin_uid_range)")
	pluginUIDRange := fs.String("plugin-uid-range", "", "uids LOW-HIGH given to plugins one per plugin, when -plugin-user is not set (default "+sandbox.DefaultUIDRange+": 65536 uids from 0x70000000, outside systemd's DynamicUser= pool 61184-65519 and container ranges, useradd's /etc/subuid ranges 100000-600165535 and nobody; a uid a process runs with, systemd gave a service, /etc/subuid or /etc/subgid include or the user database has is skipped)")
	logLevel := fs.String("log-level", "", "trace, debug, info, warn or error")
	logJSON := fs.Bool("log-json", false, "log as JSON")
	// Gossip encryption (gossip area).
	encrypt := fs.String("encrypt", "", "gossip encryption `KEY`, base64 of 32 bytes (make one with 'plughost keygen'), the same on every agent; it seeds <data-dir>/serf/keyring on the first start, and that keyring wins after (required outside -dev)")
	// TLS (area: tls).
	caFile := fs.String("ca-file", "", "the cluster CA certificate (plughost tls ca create); required outside -dev")
	certFile := fs.String("cert-file", "", "this node's server certificate (plughost tls cert create -server -node NAME); required outside -dev")
	keyFile := fs.String("key-file", "", "the key of -cert-file; required outside -dev")
	apiTLS := fs.Bool("api-tls", false, "serve the API with TLS, with -cert-file (CLIs then need -ca-file)")
	apiVerifyClient := fs.Bool("api-verify-client", false, "with -api-tls, require a client certificate from the CA (plughost tls cert create -client)")
	// Connections and certificates (area: secnet).
	httpTLS := fs.Bool("http-tls", false, "serve -http (health, metrics) with TLS and the API's certificate, -cert-file, so its bearer tokens do not cross a network in clear")
	var joins, tags multiFlag
	fs.Var(&joins, "join", "serf address of a node to join (repeatable)")
	fs.Var(&tags, "tag", "node tag `KEY=VALUE` for placement constraints (repeatable; wins over the config file's tags); keys "+strings.Join(cluster.ReservedTags(), ", ")+" are plughost's own")
	// Node identity (area: nodes).
	faultDomain := fs.String("fault-domain", "", "the node's fault domain `NAME`, such as a rack or zone: instances of a plugin are spread over fault domains (default the node name: a domain of its own)")
	upgradeDomain := fs.String("upgrade-domain", "", "the node's upgrade domain `NAME`: rollouts upgrade one upgrade domain at a time (default the node name)")
	// ACL bootstrap from config (area: secacl).
	aclInitial := fs.String("acl-initial-management-file", "", "`FILE` (mode 0600) holding the secret, a UUID, of the cluster's first management token: the leader makes it if the cluster's ACLs are not bootstrapped, and 'acl bootstrap' is refused, so no one can take a new cluster first; the same on every server")
	// bundle
	var trustedKeys multiFlag
	fs.Var(&trustedKeys, "trusted-key", "public key file of a bundle publisher (repeatable); with any, only bundles signed by one of them are accepted")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("agent takes no arguments, got %q", fs.Args())
	}

	cfg := agent.DefaultConfig()
	if *configFile != "" {
		if err := cfg.LoadFile(*configFile); err != nil {
			return err
		}
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.DataDir, *dataDir)
	set(&cfg.Node, *node)
	set(&cfg.APIAddr, *api)
	set(&cfg.HTTPAddr, *httpAddr)
	set(&cfg.RPCAddr, *rpc)
	set(&cfg.SerfAddr, *serfAddr)
	set(&cfg.RaftLog, *raftLog)
	set(&cfg.CgroupParent, *cgroupParent)
	set(&cfg.PluginUser, *pluginUser)
	set(&cfg.PluginUIDRange, *pluginUIDRange)
	set(&cfg.LogLevel, *logLevel)
	set(&cfg.Encrypt, *encrypt)
	set(&cfg.CAFile, *caFile)
	set(&cfg.CertFile, *certFile)
	set(&cfg.KeyFile, *keyFile)
	set(&cfg.FaultDomain, *faultDomain)
	set(&cfg.UpgradeDomain, *upgradeDomain)
	set(&cfg.ACLInitialManagementFile, *aclInitial)
	if *apiTLS {
		cfg.APITLS = true
	}
	if *apiVerifyClient {
		cfg.APIVerifyClient = true
	}
	if *httpTLS {
		cfg.HTTPTLS = true
	}
	if *dev {
		cfg.Dev = true
	}
	if *logJSON {
		cfg.LogJSON = true
	}
	if *bootstrapExpect >= 0 {
		cfg.BootstrapExpect = *bootstrapExpect
	}
	if *maxProcs >= 0 {
		cfg.MaxProcs = *maxProcs
	}
	if *deadServerGrace != 0 {
		cfg.DeadServerGrace.Duration = *deadServerGrace
	}
	if *serverStabilization != 0 {
		cfg.ServerStabilization.Duration = *serverStabilization
	}
	if *minQuorum >= 0 {
		cfg.MinQuorum = *minQuorum
	}
	cfg.Join = append(cfg.Join, joins...)
	cfg.TrustedKeys = append(cfg.TrustedKeys, trustedKeys...)
	for _, t := range tags {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			return usagef("-tag %q: use key=value", t)
		}
		if cfg.Tags == nil {
			cfg.Tags = map[string]string{}
		}
		cfg.Tags[k] = v
	}
	if abs, err := filepath.Abs(cfg.DataDir); err == nil {
		cfg.DataDir = abs
	}

	// The reaper is this same binary; it outlives the agent to remove the
	// agent's cgroups whatever way the agent ends.
	if exe, err := os.Executable(); err == nil {
		cfg.ReaperCommand = []string{exe, "reaper"}
	}
	level := hclog.LevelFromString(cfg.LogLevel)
	if level == hclog.NoLevel {
		return usagef("-log-level %q: use trace, debug, info, warn or error", cfg.LogLevel)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "plughost", Level: level, Output: env.stderr, JSONFormat: cfg.LogJSON})
	a, err := agent.New(cfg, log)
	if err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	setMaxProcs(cfg, log)
	if cfg.Dev {
		fmt.Fprintf(env.stderr, "==> plughost dev agent: API %s, data dir %s\n    drop bundles into %s\n",
			cfg.APIAddr, cfg.DataDir, filepath.Join(cfg.DataDir, "bundles"))
	}
	// SIGHUP reloads the TLS files (the agent also reloads them when they
	// change).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = a.ReloadTLS()
			}
		}
	}()
	return a.Run(ctx)
}

// setMaxProcs sets how many CPUs the agent's Go code runs on at once (see
// agent.DefaultMaxProcs), unless GOMAXPROCS in the environment says.
func setMaxProcs(cfg agent.Config, log hclog.Logger) {
	available := runtime.GOMAXPROCS(0)
	if env := os.Getenv("GOMAXPROCS"); env != "" {
		log.Info("the agent's Go code runs on the CPUs GOMAXPROCS gives", "max_procs", available)
		return
	}
	n, source := cfg.MaxProcs, "max_procs"
	if n == 0 {
		n, source = agent.DefaultMaxProcs(available), "default: half the CPUs, at least one"
	}
	runtime.GOMAXPROCS(n)
	log.Info("the agent's Go code runs on at most this many CPUs at once; its plugins have their own", "max_procs", n, "available", available, "source", source)
}
