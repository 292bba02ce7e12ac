// Package agent is the plughost node agent: it opens the store, takes in
// bundles, supervises plugins and serves the API that routes calls to them.
package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/plughost/plughost/host/acl"
	"github.com/plughost/plughost/host/cluster"
	"github.com/plughost/plughost/host/clusterrpc"
	"github.com/plughost/plughost/host/fence"
	"github.com/plughost/plughost/host/install"
	"github.com/plughost/plughost/host/rollout"
	"github.com/plughost/plughost/host/router"
	"github.com/plughost/plughost/host/sandbox"
	"github.com/plughost/plughost/host/tlsutil"
	"github.com/plughost/plughost/internal/netlimit"
	"github.com/plughost/plughost/store"
)

// Default addresses: loopback, so a dev agent exposes nothing.
const (
	DefaultAPIAddr  = "127.0.0.1:7400"
	DefaultRPCAddr  = "127.0.0.1:7401"
	DefaultSerfAddr = "127.0.0.1:7402"
	DefaultHTTPAddr = "127.0.0.1:7480"
)

// Config is an agent's configuration: DefaultConfig, then a config file,
// then flags; Validate checks the result.
type Config struct {
	Node            string            `json:"node"`
	DataDir         string            `json:"data_dir"`
	Dev             bool              `json:"dev"`
	APIAddr         string            `json:"api_addr"`
	HTTPAddr        string            `json:"http_addr"`
	RPCAddr         string            `json:"rpc_addr"`
	SerfAddr        string            `json:"serf_addr"`
	Join            []string          `json:"join"`
	BootstrapExpect int               `json:"bootstrap_expect"`
	Tags            map[string]string `json:"tags"`
	LogLevel        string            `json:"log_level"`
	LogJSON         bool              `json:"log_json"`

	// StartTimeout bounds a plugin's go-plugin handshake.
	StartTimeout Duration `json:"start_timeout"`

	// Raft membership, kept by the leader. DeadServerGrace is how long a
	// server stays failed, to gossip and to raft, before it is removed;
	// ServerStabilization is how long a new server stays healthy before
	// it votes; MinQuorum is the fewest voters the removal of dead
	// servers leaves (0: BootstrapExpect).
	DeadServerGrace     Duration `json:"dead_server_grace"`
	ServerStabilization Duration `json:"server_stabilization"`
	MinQuorum           int      `json:"min_quorum"`

	// ReaperCommand starts the process that removes the agent's cgroups
	// when the agent ends, however it ends (see startReaper); the agent
	// appends -cgroup-parent and -group, naming its own cgroup. The
	// plughost binary sets it to itself; nil runs no reaper.
	ReaperCommand []string `json:"-"`

	// Governance. CgroupParent is the cgroup that every agent on the
	// machine shares; each keeps to a cgroup of its own in it (see
	// ownCgroup), holding one cgroup per plugin instance.
	CgroupParent     string               `json:"cgroup_parent"`
	DisableCgroups   bool                 `json:"disable_cgroups"`
	DefaultResources Resources            `json:"default_resources"`
	Overrides        map[string]Resources `json:"overrides"`

	// Sandbox (area: sandbox). PluginUser is the user every plugin runs
	// as; empty gives each plugin a uid of its own from PluginUIDRange
	// ("LOW-HIGH", default sandbox.DefaultUIDRange, a block no common
	// allocator uses: not systemd's DynamicUser= pool nor /etc/subuid
	// ranges). Either needs a root agent; plugin status says what holds.
	PluginUser     string `json:"plugin_user"`
	PluginUIDRange string `json:"plugin_uid_range"`

	// RaftLog is the raft log store for a new data dir: "wal" or "boltdb"
	// (empty: store.DefaultLogStore). A data dir keeps the one it has.
	RaftLog string `json:"raft_log"`

	// MaxProcs is how many CPUs the agent's own Go code runs on at once
	// (its GOMAXPROCS); 0: DefaultMaxProcs. A GOMAXPROCS environment
	// variable wins over both.
	MaxProcs int `json:"max_procs"`

	// Store limits.
	MaxValueBytes int              `json:"max_value_bytes"`
	DefaultQuota  Quota            `json:"default_quota"`
	Quotas        map[string]Quota `json:"quotas"`
	StoreRate     float64          `json:"store_rate"`
	StoreBurst    int              `json:"store_burst"`

	// TLS (area: tls). CAFile, CertFile and KeyFile are the cluster CA and
	// this node's server certificate (`plughost tls ca create`, `plughost
	// tls cert create -server -node NAME`): every node-to-node connection
	// (raft, forwarding, the cluster RPC port) is mutual TLS with them, and
	// a node's raft identity is the node its certificate names. Required
	// outside -dev. APITLS serves the API with the same certificate;
	// APIVerifyClient also requires a client certificate from the CA there.
	CAFile          string `json:"ca_file"`
	CertFile        string `json:"cert_file"`
	KeyFile         string `json:"key_file"`
	APITLS          bool   `json:"api_tls"`
	APIVerifyClient bool   `json:"api_verify_client"`

	// Supervision.
	BackoffInitial    Duration `json:"backoff_initial"`
	BackoffMax        Duration `json:"backoff_max"`
	CrashLoopRestarts int      `json:"crash_loop_restarts"`
	CrashLoopWindow   Duration `json:"crash_loop_window"`
	HoldTimeout       Duration `json:"hold_timeout"`

	// Gossip encryption (gossip area). Encrypt is the serf key, base64 of
	// 32 bytes ('plughost keygen'); it seeds <data-dir>/serf/keyring on the
	// first start, and the keyring wins after that. Outside -dev an agent
	// needs one or the other.
	Encrypt string `json:"encrypt"`

	// ACL bootstrap from config (area: secacl), Consul's
	// acl.tokens.initial_management: ACLInitialManagement is the secret
	// (a UUID) of the cluster's first management token, or
	// ACLInitialManagementFile a 0600 file that holds it. The leader makes
	// that token when the cluster's ACLs are not bootstrapped, and an agent
	// given one refuses 'acl bootstrap', so that no one can take the
	// cluster first. Give the same one to every server.
	ACLInitialManagement     string `json:"acl_initial_management"`
	ACLInitialManagementFile string `json:"acl_initial_management_file"`

	// Bundles (area: bundle). TrustedKeys are publisher public key files
	// (PEM PKIX ed25519, from 'plughost bundle keygen'): when there are
	// any, a bundle must be signed by one of them, or it is refused before
	// anything of it runs.
	TrustedKeys []string `json:"trusted_keys"`

	// Connection and request limits (area: limits; README "Limits").
	// MaxConns and MaxConnsPerClient bound the connections open at once
	// on each of the API and HTTP listeners, in all and from one client
	// IP address (0: unlimited); past them a connection is closed at
	// once. FirstCallTimeout is how long an API connection may stay open
	// without starting a call. MaxTxnBytes bounds a transaction's encoded
	// size, and with MaxValueBytes sizes the largest message the agent's
	// own services take. MaxWatches and MaxWatchesPerClient bound the
	// store watches open at once, in all and on one client connection.
	MaxConns            int      `json:"max_conns"`
	MaxConnsPerClient   int      `json:"max_conns_per_client"`
	FirstCallTimeout    Duration `json:"first_call_timeout"`
	MaxTxnBytes         int      `json:"max_txn_bytes"`
	MaxWatches          int      `json:"max_watches"`
	MaxWatchesPerClient int      `json:"max_watches_per_client"`
	// secacl: PluginWatchReserve of MaxWatches are kept for plugins' own
	// watches (-1, the default: an eighth of max_watches; 0: none);
	// MaxWatchesPerClient counts an API client by its ACL token, on all
	// its connections.
	PluginWatchReserve int `json:"plugin_watch_reserve"`

	// Bundles that travel (area: fetch). BundleKeep is how many installed
	// versions of each plugin stay on this node's disk, newest first,
	// besides those running, desired, pinned or assigned: older ones are
	// removed (their catalog records stay). BundleServeConcurrency is how
	// many bundle fetches from peers this node serves at once.
	BundleKeep             int `json:"bundle_keep"`
	BundleServeConcurrency int `json:"bundle_serve_concurrency"`

	// Connections (area: secnet; README "Connections and the store").
	// MaxPendingConns and MaxPendingConnsPerClient bound the API and HTTP
	// connections open at once that have not made their first call (or
	// request), in all and from one client IP address; they are part of
	// max_conns, and past them a new connection closes the oldest such
	// one (of the client). AcceptRate bounds the new connections a second
	// each of those listeners takes, in bursts of AcceptBurst (0:
	// unbounded); the rest wait in the kernel's queue. So a flood of idle
	// connections leaves established clients their share, and a new
	// client has at least max_pending_conns/accept_rate seconds to make
	// its first call.
	MaxPendingConns          int     `json:"max_pending_conns"`
	MaxPendingConnsPerClient int     `json:"max_pending_conns_per_client"`
	AcceptRate               float64 `json:"accept_rate"`
	AcceptBurst              int     `json:"accept_burst"`
	// RPCMaxHandshakes and RPCMaxHandshakesPerClient bound the cluster RPC
	// port's connections open at once that have not finished their TLS
	// handshake and first byte, in all and from one IP address, within
	// its 2,048 connections (256 per address); RPCHandshakeTimeout is how
	// long one may take.
	RPCMaxHandshakes          int      `json:"rpc_max_handshakes"`
	RPCMaxHandshakesPerClient int      `json:"rpc_max_handshakes_per_client"`
	RPCHandshakeTimeout       Duration `json:"rpc_handshake_timeout"`
	// HTTPTLS serves the -http port (health, metrics) with TLS and the
	// API's certificate, so the bearer token its requests carry does not
	// cross a network in clear.
	HTTPTLS bool `json:"http_tls"`
	// ConnIdleTimeout closes an API connection that has had no call open
	// for this long after its first call (GOAWAY; gRPC clients dial again
	// at their next call). 0: never.
	ConnIdleTimeout Duration `json:"conn_idle_timeout"`

	// Node identity (area: nodes; README "Node identity"). FaultDomain and
	// UpgradeDomain ("" = the node's name: a node of its own) and Tags are
	// gossiped to every member for placement; -fault-domain,
	// -upgrade-domain and -tag win over the file. FailureDetection tunes
	// how soon gossip declares a silent member failed.
	FaultDomain      string           `json:"fault_domain"`
	UpgradeDomain    string           `json:"upgrade_domain"`
	FailureDetection FailureDetection `json:"failure_detection"`

	// Singleton fencing (area: fence). SingletonLease is how long this
	// node may go without hearing from a raft leader before it stops its
	// singleton actives by itself (their writes are refused from then on);
	// it starts them again when the placement controller assigns the
	// singleton anew (a new epoch).
	// Keep it above a leader election (about 2 s) and below the time the
	// cluster takes to fail a singleton over.
	SingletonLease Duration `json:"singleton_lease"`

	// Rollout data safety (area: data; README "Rollouts of stateful
	// plugins"). Before the first domain of a rollout of a plugin whose
	// namespace holds data, the leader snapshots the namespace into _sys;
	// RolloutSnapshotKeep is how many snapshots of each plugin are kept,
	// newest first, and a namespace holding more than
	// RolloutSnapshotMaxBytes (keys and values) gets none.
	RolloutSnapshotKeep     int   `json:"rollout_snapshot_keep"`
	RolloutSnapshotMaxBytes int64 `json:"rollout_snapshot_max_bytes"`

	// Rollout records (area: rollout). RolloutKeep is how many rollouts of
	// each plugin the leader keeps: older finished ones are deleted, with
	// their snapshots.
	RolloutKeep int `json:"rollout_keep"`
}

// FailureDetection is cluster.FailureDetection in the config file; zero
// fields take cluster.DefaultFailureDetection's.
type FailureDetection struct {
	ProbeInterval           Duration `json:"probe_interval"`
	ProbeTimeout            Duration `json:"probe_timeout"`
	SuspicionMult           int      `json:"suspicion_mult"`
	SuspicionMaxTimeoutMult int      `json:"suspicion_max_timeout_mult"`
	GossipInterval          Duration `json:"gossip_interval"`
}

// cluster is f as the cluster package takes it.
func (f FailureDetection) cluster() cluster.FailureDetection {
	return cluster.FailureDetection{
		ProbeInterval: f.ProbeInterval.Duration, ProbeTimeout: f.ProbeTimeout.Duration,
		SuspicionMult: f.SuspicionMult, SuspicionMaxTimeoutMult: f.SuspicionMaxTimeoutMult,
		GossipInterval: f.GossipInterval.Duration,
	}
}

// Resources are per-instance limits in the agent config.
type Resources struct {
	MemoryMB int64   `json:"memory_mb"`
	CPU      float64 `json:"cpu"`
	Pids     int64   `json:"pids"`
}

// Quota limits a store namespace.
type Quota struct {
	MaxBytes int64 `json:"max_bytes"`
	MaxKeys  int64 `json:"max_keys"`
}

// Duration is a time.Duration written as "2s" in JSON.
type Duration struct{ time.Duration }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"2s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// DefaultMaxProcs is how many of the available CPUs (the process's, or its
// cgroup's CPU limit) the agent's own Go code runs on by default: half,
// and at least one. The agent shares its node with the plugins it runs,
// which do the work; and a Go process with more Ps than it keeps busy
// spends CPU waking idle threads that look for work. Measured on a 2-CPU
// VM with three agents, a leader used 681 µs of CPU per one-client put
// with two Ps and 382 µs with one, and its puts went from 860-940/s to
// 1,130/s; the relay's figures were the same either way.
func DefaultMaxProcs(available int) int { return max(1, available/2) }

// DefaultConfig is the embedded configuration of a single-node agent.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "node1"
	}
	return Config{
		Node:                host,
		DataDir:             "plughost-data",
		APIAddr:             DefaultAPIAddr,
		HTTPAddr:            DefaultHTTPAddr,
		RPCAddr:             DefaultRPCAddr,
		SerfAddr:            DefaultSerfAddr,
		LogLevel:            "info",
		StartTimeout:        Duration{10 * time.Second},
		DeadServerGrace:     Duration{cluster.DefaultDeadServerGrace},
		ServerStabilization: Duration{cluster.DefaultServerStabilization},
		CgroupParent:        "plughost",
		DefaultResources:    Resources{MemoryMB: 256, CPU: 1, Pids: 512},
		MaxValueBytes:       512 << 10,
		StoreBurst:          200,
		BackoffInitial:      Duration{time.Second},
		BackoffMax:          Duration{time.Minute},
		CrashLoopRestarts:   5,
		CrashLoopWindow:     Duration{10 * time.Minute},
		HoldTimeout:         Duration{10 * time.Second},

		// Limits (area: limits).
		DefaultQuota:        Quota{MaxBytes: store.DefaultQuotaBytes, MaxKeys: store.DefaultQuotaKeys},
		MaxConns:            DefaultMaxConns(),
		MaxConnsPerClient:   DefaultMaxConnsPerClient,
		FirstCallTimeout:    Duration{router.DefaultFirstCallTimeout},
		MaxTxnBytes:         store.DefaultMaxTxnBytes,
		MaxWatches:          store.DefaultMaxWatches,
		MaxWatchesPerClient: store.DefaultMaxWatchesPerClient,
		PluginWatchReserve:  store.DefaultPluginWatchReserve, // secacl

		// Bundles that travel (area: fetch).
		BundleKeep:             install.DefaultKeep,
		BundleServeConcurrency: install.DefaultServeConcurrency,

		// Singleton fencing (area: fence).
		SingletonLease: Duration{fence.DefaultLease},

		// Rollout data safety (area: data).
		RolloutSnapshotKeep:     rollout.DefaultSnapshotKeep,
		RolloutSnapshotMaxBytes: rollout.DefaultSnapshotMaxBytes,

		// Rollout records (area: rollout).
		RolloutKeep: rollout.DefaultKeep,

		// Connections (area: secnet).
		MaxPendingConns:           DefaultMaxPendingConns,
		MaxPendingConnsPerClient:  DefaultMaxPendingConnsPerClient,
		AcceptRate:                DefaultAcceptRate,
		AcceptBurst:               DefaultAcceptBurst,
		RPCMaxHandshakes:          clusterrpc.DefaultMaxHandshakes,
		RPCMaxHandshakesPerClient: clusterrpc.DefaultMaxHandshakesPerClient,
		RPCHandshakeTimeout:       Duration{clusterrpc.DefaultHandshakeTimeout},
		ConnIdleTimeout:           Duration{router.DefaultIdleTimeout},
	}
}

// Defaults of the pending-connection budget and the accept rate of the
// API and HTTP listeners (area: secnet). A gRPC client makes its first call
// within milliseconds of connecting, so few are pending at once; the rate
// is well above what clients reconnecting after a restart need.
const (
	DefaultMaxPendingConns          = 256
	DefaultMaxPendingConnsPerClient = 64
	DefaultAcceptRate               = 500
	DefaultAcceptBurst              = 256
)

// DefaultMaxConnsPerClient is max_conns_per_client's default: local
// clients all come from one loopback address, so it leaves room for many.
const DefaultMaxConnsPerClient = 256

// DefaultMaxConns is max_conns's default: 4096, or half the agent's
// open-file limit if that is less, so that connections alone never take
// the descriptors the store and the plugins need.
func DefaultMaxConns() int {
	n, ok := netlimit.FileLimit()
	if !ok || n/2 >= 4096 {
		return 4096
	}
	return max(int(n/2), 16)
}

// LoadFile overlays a strict JSON config file on c.
func (c *Config) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if dec.More() {
		return fmt.Errorf("config %s: trailing data after the JSON object", path)
	}
	return nil
}

var nodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Validate checks c and says what to fix.
func (c *Config) Validate() error {
	var errs []error
	if !nodeName.MatchString(c.Node) {
		errs = append(errs, fmt.Errorf("node name %q: use letters, digits, '.', '_' or '-' (-node NAME)", c.Node))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is empty (-data-dir DIR)"))
	}
	for flag, addr := range map[string]string{"-api": c.APIAddr, "-http": c.HTTPAddr, "-rpc": c.RPCAddr, "-serf": c.SerfAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q is not host:port: %v", flag, addr, err))
		}
	}
	if c.BootstrapExpect < 0 {
		errs = append(errs, fmt.Errorf("-bootstrap-expect %d must be 0 or more", c.BootstrapExpect))
	}
	if c.StartTimeout.Duration <= 0 {
		errs = append(errs, errors.New("start_timeout must be positive"))
	}
	if c.SingletonLease.Duration < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("singleton_lease %v must be at least 100ms (default %v)", c.SingletonLease.Duration, fence.DefaultLease))
	}
	if c.DeadServerGrace.Duration <= 0 {
		errs = append(errs, fmt.Errorf("-dead-server-grace %v must be positive", c.DeadServerGrace.Duration))
	}
	if c.MinQuorum < 0 {
		errs = append(errs, fmt.Errorf("-min-quorum %d must be 0 (the -bootstrap-expect count) or more", c.MinQuorum))
	}
	if c.ServerStabilization.Duration <= 0 {
		errs = append(errs, fmt.Errorf("-server-stabilization %v must be positive", c.ServerStabilization.Duration))
	}
	if c.RaftLog != "" && c.RaftLog != store.LogStoreWAL && c.RaftLog != store.LogStoreBoltDB {
		errs = append(errs, fmt.Errorf("-raft-log %q: use %s or %s", c.RaftLog, store.LogStoreWAL, store.LogStoreBoltDB))
	}
	if c.MaxProcs < 0 {
		errs = append(errs, fmt.Errorf("-max-procs %d must be 0 (half the CPUs) or more", c.MaxProcs))
	}
	if c.MaxValueBytes <= 0 {
		errs = append(errs, errors.New("max_value_bytes must be positive"))
	}
	if c.ACLInitialManagement != "" && c.ACLInitialManagementFile != "" {
		errs = append(errs, errors.New("acl_initial_management and acl_initial_management_file: give one, not both"))
	} else if c.ACLInitialManagement != "" {
		if err := acl.ValidInitialManagement(c.ACLInitialManagement); err != nil {
			errs = append(errs, fmt.Errorf("acl_initial_management: %w", err))
		}
	}
	if c.Encrypt != "" {
		if _, err := cluster.DecodeKey(c.Encrypt); err != nil {
			errs = append(errs, fmt.Errorf("-encrypt: %w", err))
		}
	}
	if c.PluginUIDRange != "" {
		if _, _, err := sandbox.ParseUIDRange(c.PluginUIDRange); err != nil {
			errs = append(errs, err)
		}
	}
	if c.MaxConns < 0 || c.MaxConnsPerClient < 0 {
		errs = append(errs, fmt.Errorf("max_conns %d and max_conns_per_client %d must be 0 (unlimited) or more", c.MaxConns, c.MaxConnsPerClient))
	}
	if c.MaxPendingConns < 0 || c.MaxPendingConnsPerClient < 0 || c.AcceptRate < 0 || c.AcceptBurst < 0 {
		errs = append(errs, fmt.Errorf("max_pending_conns %d, max_pending_conns_per_client %d, accept_rate %v and accept_burst %d must be 0 (unlimited) or more",
			c.MaxPendingConns, c.MaxPendingConnsPerClient, c.AcceptRate, c.AcceptBurst))
	}
	if c.RPCMaxHandshakes < 1 || c.RPCMaxHandshakesPerClient < 1 || c.RPCHandshakeTimeout.Duration <= 0 {
		errs = append(errs, fmt.Errorf("rpc_max_handshakes %d and rpc_max_handshakes_per_client %d must be 1 or more, rpc_handshake_timeout %v positive",
			c.RPCMaxHandshakes, c.RPCMaxHandshakesPerClient, c.RPCHandshakeTimeout.Duration))
	}
	if c.ConnIdleTimeout.Duration < 0 {
		errs = append(errs, fmt.Errorf("conn_idle_timeout %v must be 0 (never) or more", c.ConnIdleTimeout.Duration))
	}
	if c.HTTPTLS && (c.CertFile == "" || c.KeyFile == "") {
		errs = append(errs, errors.New("-http-tls needs -ca-file, -cert-file and -key-file"))
	}
	if c.FirstCallTimeout.Duration <= 0 {
		errs = append(errs, fmt.Errorf("first_call_timeout %v must be positive", c.FirstCallTimeout.Duration))
	}
	if c.MaxTxnBytes < c.MaxValueBytes || c.MaxTxnBytes > store.MaxMaxTxnBytes {
		errs = append(errs, fmt.Errorf("max_txn_bytes %d must be at least max_value_bytes (%d), so one largest value fits a transaction, and at most %d",
			c.MaxTxnBytes, c.MaxValueBytes, store.MaxMaxTxnBytes))
	}
	if c.MaxWatches < 0 || c.MaxWatchesPerClient < 0 {
		errs = append(errs, fmt.Errorf("max_watches %d and max_watches_per_client %d must be 0 (unlimited) or more", c.MaxWatches, c.MaxWatchesPerClient))
	}
	if c.PluginWatchReserve < -1 || (c.MaxWatches > 0 && c.PluginWatchReserve >= c.MaxWatches) {
		errs = append(errs, fmt.Errorf("plugin_watch_reserve %d must be -1 (an eighth of max_watches), 0 or more, and less than max_watches (%d)", c.PluginWatchReserve, c.MaxWatches))
	}
	if c.CrashLoopRestarts <= 0 {
		errs = append(errs, errors.New("crash_loop_restarts must be positive"))
	}
	if c.BundleKeep < 1 || c.BundleServeConcurrency < 1 {
		errs = append(errs, fmt.Errorf("bundle_keep %d and bundle_serve_concurrency %d must be 1 or more", c.BundleKeep, c.BundleServeConcurrency))
	}
	if c.RolloutSnapshotKeep < 1 || c.RolloutSnapshotMaxBytes < 1 {
		errs = append(errs, fmt.Errorf("rollout_snapshot_keep %d and rollout_snapshot_max_bytes %d must be 1 or more (defaults %d and %d)",
			c.RolloutSnapshotKeep, c.RolloutSnapshotMaxBytes, rollout.DefaultSnapshotKeep, rollout.DefaultSnapshotMaxBytes))
	}
	if c.RolloutKeep < max(1, c.RolloutSnapshotKeep) {
		errs = append(errs, fmt.Errorf("rollout_keep %d must be at least 1 and rollout_snapshot_keep (%d): a snapshot is deleted with its rollout (default %d)",
			c.RolloutKeep, c.RolloutSnapshotKeep, rollout.DefaultKeep))
	}
	errs = append(errs, c.validateTLS()...)
	errs = append(errs, c.validateIdentity()...)
	return errors.Join(errs...)
}

// validateIdentity checks the node's domains, tags and failure detection
// (area: nodes).
func (c *Config) validateIdentity() []error {
	var errs []error
	if c.FaultDomain != "" {
		errs = append(errs, cluster.ValidateDomain("-fault-domain", c.FaultDomain))
	}
	if c.UpgradeDomain != "" {
		errs = append(errs, cluster.ValidateDomain("-upgrade-domain", c.UpgradeDomain))
	}
	errs = append(errs, cluster.ValidateTags(c.Tags))
	errs = append(errs, c.FailureDetection.cluster().WithDefaults().Validate())
	return errs
}

// checkGossipKey refuses an agent outside -dev that has neither -encrypt
// nor a gossip keyring from an earlier start.
func (c *Config) checkGossipKey() error {
	if c.Dev || c.Encrypt != "" || cluster.HasKeyring(c.serfDir()) {
		return nil
	}
	return cluster.ErrNoGossipKey
}

// validateTLS checks the TLS settings (area: tls): outside -dev the agent
// needs its certificate, since anyone who reaches its RPC port could
// otherwise join raft.
func (c *Config) validateTLS() []error {
	var errs []error
	files := tlsutil.Files{CA: c.CAFile, Cert: c.CertFile, Key: c.KeyFile}
	var missing []string
	for _, m := range []struct{ flag, v string }{{"-ca-file", c.CAFile}, {"-cert-file", c.CertFile}, {"-key-file", c.KeyFile}} {
		if m.v == "" {
			missing = append(missing, m.flag)
		}
	}
	switch {
	case len(missing) == 0:
	case !c.Dev || files.Set():
		errs = append(errs, fmt.Errorf("TLS: %s not given: a cluster agent needs the cluster CA and its own server certificate "+
			"(make them with `plughost tls ca create` and `plughost tls cert create -server -node %s`); only -dev runs without",
			strings.Join(missing, ", "), c.Node))
	case c.APITLS:
		errs = append(errs, errors.New("-api-tls needs -ca-file, -cert-file and -key-file"))
	}
	if c.APIVerifyClient && !c.APITLS {
		errs = append(errs, errors.New("-api-verify-client needs -api-tls"))
	}
	return errs
}

// tlsFiles are the agent's TLS files, if given.
func (c *Config) tlsFiles() tlsutil.Files {
	return tlsutil.Files{CA: c.CAFile, Cert: c.CertFile, Key: c.KeyFile}
}

// Paths under the data dir.
func (c *Config) bundlesDir() string { return filepath.Join(c.DataDir, "bundles") }
func (c *Config) refusedDir() string { return filepath.Join(c.DataDir, "bundles", "refused") }
func (c *Config) pluginsDir() string { return filepath.Join(c.DataDir, "plugins") }
func (c *Config) stagingDir() string { return filepath.Join(c.DataDir, "staging") }
func (c *Config) storeDir() string   { return filepath.Join(c.DataDir, "store") }
func (c *Config) serfDir() string    { return filepath.Join(c.DataDir, "serf") }

// SnapshotConfig is the configuration of the rollout controller's
// namespace snapshots (area: data): chunks within the store's value and
// transaction limits.
func (c *Config) SnapshotConfig() rollout.SnapshotConfig {
	return rollout.SnapshotConfig{
		Keep:       c.RolloutSnapshotKeep,
		MaxBytes:   c.RolloutSnapshotMaxBytes,
		ChunkBytes: min(rollout.DefaultSnapshotChunkBytes, c.MaxValueBytes),
		TxnBytes:   c.MaxTxnBytes,
	}
}

// initialManagement is the configured initial management secret (area:
// secacl), read from ACLInitialManagementFile if that is set, or "".
func (c *Config) initialManagement() (string, error) {
	if c.ACLInitialManagementFile != "" {
		return acl.ReadInitialManagementFile(c.ACLInitialManagementFile)
	}
	return c.ACLInitialManagement, nil
}
