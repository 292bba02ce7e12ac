package store

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/store/local"
)

// Defaults applied by DefaultConfig and, for zero fields, by Open.
const (
	DefaultMaxValueBytes = local.DefaultMaxValueBytes
	DefaultWatchHistory  = local.DefaultWatchHistory
	DefaultRaftAddr      = "127.0.0.1:7401"
	DefaultMaxTxnBytes   = local.DefaultMaxTxnBytes
	// DefaultMaxWatches and DefaultMaxWatchesPerClient bound the watches
	// open at once on a node, and from one client (an ACL token, a
	// plugin). DefaultPluginWatchReserve keeps an eighth of MaxWatches
	// for plugins (1024 of the default 8192).
	DefaultMaxWatches          = 8192
	DefaultMaxWatchesPerClient = 64
	DefaultPluginWatchReserve  = -1

	// MaxMaxTxnBytes is the largest MaxTxnBytes: the message limit of
	// plugins' gRPC connections (sdk/wire.MaxMessageBytes).
	MaxMaxTxnBytes = 64 << 20

	// DefaultQuotaBytes and DefaultQuotaKeys are the agent's default
	// namespace quota: a service holds up to about 200 MB (DESIGN.md).
	// The store itself applies no quota unless configured.
	DefaultQuotaBytes = 256 << 20
	DefaultQuotaKeys  = 1_000_000

	// maxMaxValueBytes keeps a value well inside a gRPC message.
	maxMaxValueBytes = 16 << 20
)

// Config configures a Store.
type Config struct {
	NodeID string // raft server ID
	Dir    string // data dir: the raft log, snapshots/; unused when InMemory
	// LogStore is the raft log for a new data dir: LogStoreWAL or
	// LogStoreBoltDB; empty means DefaultLogStore. A dir that holds a log
	// keeps its kind, and asking for the other one is an error.
	LogStore string
	InMemory bool
	RaftAddr string // TCP bind+advertise address for raft; unused when InMemory or with Transport
	// Transport, when set, carries raft and forwarding over the node's
	// cluster RPC port instead: raft listens on it and dials the node a
	// server ID names, and a request that needs the leader is forwarded to
	// the leader's cluster RPC port, not its API (see ClusterTransport).
	Transport     ClusterTransport
	Bootstrap     bool // bootstrap a single-voter cluster if no state exists
	MaxValueBytes int  // default 512 KiB
	// MaxTxnBytes bounds a transaction's encoded size; default 4 MiB.
	MaxTxnBytes int
	// MaxWatches and MaxWatchesPerClient bound the watches open at once,
	// on the node and from one client (local.ClientOf: the ACL token a
	// call was made with, on all its connections; a plugin); zero means
	// unlimited. PluginWatchReserve of MaxWatches are kept for plugins'
	// own watches: other clients together open at most MaxWatches less
	// it, so that they cannot starve plugins; -1 keeps an eighth of
	// MaxWatches, 0 none. DefaultConfig sets
	// DefaultMaxWatches, DefaultMaxWatchesPerClient and
	// DefaultPluginWatchReserve.
	MaxWatches          int
	MaxWatchesPerClient int
	PluginWatchReserve  int
	DefaultQuota        Quota
	Quotas              map[string]Quota // per namespace
	WatchHistory        int              // revisions kept for watch resumption
	Logger              hclog.Logger

	// SnapshotThreshold and TrailingLogs tune raft's snapshots: a snapshot
	// is taken after SnapshotThreshold new entries, and TrailingLogs entries
	// are kept behind it for followers that lag. Zero means the default.
	SnapshotThreshold uint64
	TrailingLogs      uint64

	// timing overrides the default timeouts; tests shorten them.
	timing *timing
	// clock is the wall clock TTLs are decided by; tests fake it.
	clock func() time.Time
}

// Quota bounds one namespace. Zero fields are unlimited. Bytes count the
// keys and values the namespace holds.
type Quota struct {
	MaxBytes int64
	MaxKeys  int64
}

// timing is the set of timeouts the store tunes: raft's, and how often the
// leader looks for expired keys.
type timing struct {
	Heartbeat   time.Duration
	Election    time.Duration
	LeaderLease time.Duration
	Commit      time.Duration
	ExpiryScan  time.Duration
}

// DefaultConfig returns a configuration with every default filled in. The
// caller still names the node, the data directory and Bootstrap.
func DefaultConfig() Config {
	return Config{
		RaftAddr:            DefaultRaftAddr,
		MaxValueBytes:       DefaultMaxValueBytes,
		MaxTxnBytes:         DefaultMaxTxnBytes,
		MaxWatches:          DefaultMaxWatches,
		MaxWatchesPerClient: DefaultMaxWatchesPerClient,
		PluginWatchReserve:  DefaultPluginWatchReserve,
		WatchHistory:        DefaultWatchHistory,
		Logger:              hclog.NewNullLogger(),
	}
}

// Validate checks the configuration. Zero numeric fields mean their default.
func (c *Config) Validate() error {
	var errs []error
	if !c.InMemory {
		if c.NodeID == "" {
			errs = append(errs, errors.New("NodeID is required"))
		}
		if c.Dir == "" {
			errs = append(errs, errors.New("Dir is required unless InMemory"))
		}
		if c.RaftAddr == "" {
			errs = append(errs, errors.New("RaftAddr is required unless InMemory"))
		}
		if err := validLogStore(c.LogStore); err != nil {
			errs = append(errs, err)
		}
	}
	if c.MaxValueBytes < 0 || c.MaxValueBytes > maxMaxValueBytes {
		errs = append(errs, fmt.Errorf("MaxValueBytes %d is outside 0 (default %d) to %d", c.MaxValueBytes, DefaultMaxValueBytes, maxMaxValueBytes))
	}
	if c.MaxTxnBytes < 0 || c.MaxTxnBytes > MaxMaxTxnBytes {
		errs = append(errs, fmt.Errorf("MaxTxnBytes %d is outside 0 (default %d) to %d", c.MaxTxnBytes, DefaultMaxTxnBytes, MaxMaxTxnBytes))
	}
	if c.MaxWatches < 0 || c.MaxWatchesPerClient < 0 {
		errs = append(errs, fmt.Errorf("MaxWatches %d and MaxWatchesPerClient %d must be 0 (unlimited) or more", c.MaxWatches, c.MaxWatchesPerClient))
	}
	if c.PluginWatchReserve < -1 || (c.MaxWatches > 0 && c.PluginWatchReserve >= c.MaxWatches) {
		errs = append(errs, fmt.Errorf("PluginWatchReserve %d must be -1 (an eighth of MaxWatches), 0 or more, and less than MaxWatches %d", c.PluginWatchReserve, c.MaxWatches))
	}
	if c.WatchHistory < 0 {
		errs = append(errs, fmt.Errorf("WatchHistory %d is negative", c.WatchHistory))
	}
	if err := c.DefaultQuota.validate(); err != nil {
		errs = append(errs, fmt.Errorf("DefaultQuota: %w", err))
	}
	names := make([]string, 0, len(c.Quotas))
	for ns := range c.Quotas {
		names = append(names, ns)
	}
	sort.Strings(names)
	for _, ns := range names {
		if err := local.ValidNamespace(ns); err != nil {
			errs = append(errs, fmt.Errorf("Quotas: %w", err))
		}
		q := c.Quotas[ns]
		if err := q.validate(); err != nil {
			errs = append(errs, fmt.Errorf("Quotas[%q]: %w", ns, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store: config: %w", err)
	}
	return nil
}

func (q Quota) validate() error {
	if q.MaxBytes < 0 || q.MaxKeys < 0 {
		return fmt.Errorf("negative limit (MaxBytes %d, MaxKeys %d); 0 means unlimited", q.MaxBytes, q.MaxKeys)
	}
	return nil
}

// withDefaults fills the zero fields of a validated configuration.
func (c Config) withDefaults() Config {
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = DefaultMaxValueBytes
	}
	if c.MaxTxnBytes == 0 {
		c.MaxTxnBytes = max(DefaultMaxTxnBytes, c.MaxValueBytes)
	}
	if c.WatchHistory == 0 {
		c.WatchHistory = DefaultWatchHistory
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.InMemory && c.NodeID == "" {
		c.NodeID = "memory"
	}
	if c.clock == nil {
		c.clock = time.Now
	}
	quotas := make(map[string]Quota, len(c.Quotas)) // the caller keeps its map
	for ns, q := range c.Quotas {
		quotas[ns] = q
	}
	c.Quotas = quotas
	if c.timing == nil {
		if c.InMemory {
			c.timing = &fastTiming
		} else {
			c.timing = &defaultTiming
		}
	}
	return c
}

// MaxRequestBytes is the largest request message the store's API needs to
// take with cfg: a transaction of MaxTxnBytes, a put of the largest value
// and key, or a 1 MiB restore chunk, with room for the envelope. Size a
// gRPC server's MaxRecvMsgSize by it.
func (c Config) MaxRequestBytes() int {
	c = c.withDefaults()
	return max(c.MaxTxnBytes, c.MaxValueBytes+MaxKeyBytes, backupChunkBytes) + requestEnvelopeBytes
}

// requestEnvelopeBytes is the room MaxRequestBytes leaves besides keys and
// values: namespace, options and field tags.
const requestEnvelopeBytes = 64 << 10

// quotaFor is the quota of namespace ns.
func (c *Config) quotaFor(ns string) Quota {
	if q, ok := c.Quotas[ns]; ok {
		return q
	}
	return c.DefaultQuota
}

var (
	// defaultTiming suits a LAN cluster: a dead leader is replaced within
	// about two seconds.
	defaultTiming = timing{
		Heartbeat:   500 * time.Millisecond,
		Election:    500 * time.Millisecond,
		LeaderLease: 250 * time.Millisecond,
		Commit:      50 * time.Millisecond,
		ExpiryScan:  100 * time.Millisecond,
	}
	// fastTiming suits in-memory stores and tests, where there is no
	// network to wait for.
	fastTiming = timing{
		Heartbeat:   50 * time.Millisecond,
		Election:    50 * time.Millisecond,
		LeaderLease: 50 * time.Millisecond,
		Commit:      5 * time.Millisecond,
		ExpiryScan:  20 * time.Millisecond,
	}
)
