// Package cluster is plughost's membership: serf gossip among the agents,
// the one-time bootstrap of the raft cluster (-bootstrap-expect), and on
// the leader the raft configuration kept in step with the members
// (reconcile.go) and with their health (autopilot.go).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	autopilot "github.com/hashicorp/raft-autopilot"
	"github.com/hashicorp/serf/serf"

	"github.com/plughost/plughost/store"
)

// Serf tags plughost sets; operator tags may not use these keys.
const (
	TagRole      = "role"       // "server"
	TagAPI       = "api"        // the agent's gRPC API address
	TagRPC       = "rpc"        // the raft address
	TagRaftState = "raft_state" // "1" once the node has raft state
	RoleServer   = "server"
)

// Raft roles of a member.
const (
	RaftLeader   = "leader"
	RaftVoter    = "voter"
	RaftNonvoter = "nonvoter"
	RaftNone     = "none"
)

// Defaults applied to zero Config fields.
const (
	DefaultMaxVoters           = 5
	DefaultServerStabilization = 2 * time.Second
	DefaultDeadServerGrace     = 10 * time.Second
	DefaultReconcileInterval   = 500 * time.Millisecond
)

// Config configures a node's membership.
type Config struct {
	NodeName        string
	BindAddr        string            // serf host:port
	APIAddr         string            // advertised in the "api" tag
	Tags            map[string]string // operator tags (ValidateTags)
	Join            []string          // serf addresses, retried until one answers
	BootstrapExpect int               // servers to wait for before bootstrapping; <= 1: none
	DataDir         string            // serf snapshot for rejoining after a restart; "" none
	Store           *store.Store
	Logger          hclog.Logger

	MaxVoters           int           // at most this many voters; the rest are non-voters
	ServerStabilization time.Duration // a new server is healthy this long before it votes
	DeadServerGrace     time.Duration // a server failed this long, to gossip and to raft, is removed
	// MinQuorum is the fewest voters the removal of dead servers leaves
	// (0: BootstrapExpect). A dead server that would leave fewer stays a
	// voter, so the servers that come back can still make a quorum.
	MinQuorum         int
	ReconcileInterval time.Duration

	// Gossip encryption (gossip area). EncryptKey (base64, -encrypt) seeds
	// the keyring file in DataDir on the first start; after that the file
	// wins. RequireEncryption refuses to start without a key or keyring.
	EncryptKey        string
	RequireEncryption bool
	// VerifyServer, when set, proves that node answers at rpcAddr, its
	// advertised cluster RPC address, with a certificate from the cluster
	// CA naming it (host/clusterrpc Mux.Verify). The leader adds a server
	// to raft, and a bootstrap counts it, only once it has: no server
	// votes on gossip alone. Nil (a -dev agent, tests without TLS) checks
	// nothing.
	VerifyServer func(ctx context.Context, node, rpcAddr string) error

	// Node identity (area: nodes), gossiped in the fault_domain and
	// upgrade_domain tags; empty is the node's own name, so a node given
	// none is a domain of its own.
	FaultDomain   string
	UpgradeDomain string
	// FailureDetection tunes how fast gossip declares a silent member
	// failed; zero fields take DefaultFailureDetection's.
	FailureDetection FailureDetection
}

// Member is one node as membership knows it.
type Member struct {
	Name     string            `json:"name"`
	Addr     string            `json:"address"`
	Status   string            `json:"status"` // serf: alive, leaving, left, failed
	RaftRole string            `json:"raft_role"`
	APIAddr  string            `json:"api_address"`
	RPCAddr  string            `json:"rpc_address"`
	Tags     map[string]string `json:"tags"`
}

// Cluster is a running membership.
type Cluster struct {
	cfg    Config
	log    hclog.Logger
	serf   *serf.Serf
	events chan serf.Event
	kick   chan struct{}
	// changes tells MemberChanges's subscribers of member events.
	changes memberChanges

	contact *raftContact
	ap      *autopilot.Autopilot

	mu          sync.Mutex
	failedSince map[string]time.Time
	removing    map[string]bool // servers being removed from raft
	recorded    []string        // the peers last written to peersFile
	stateTag    bool
	tolerance   int  // autopilot's failure tolerance, last logged
	healthy     bool // autopilot's overall health, last logged

	apCancel context.CancelFunc // autopilot's while it runs; run's own

	encrypted bool // gossip is encrypted: the keyring operations work
	verified  verifyCache

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// Validate checks cfg.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("cluster: NodeName is required"))
	}
	if _, _, err := net.SplitHostPort(c.BindAddr); err != nil {
		errs = append(errs, fmt.Errorf("cluster: serf address %q: %w", c.BindAddr, err))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("cluster: Store is required"))
	}
	if c.MinQuorum < 0 {
		errs = append(errs, fmt.Errorf("cluster: MinQuorum %d must be 0 (BootstrapExpect) or more", c.MinQuorum))
	}
	for _, d := range []struct{ what, v string }{{"fault domain", c.FaultDomain}, {"upgrade domain", c.UpgradeDomain}} {
		if d.v != "" {
			if err := ValidateDomain(d.what, d.v); err != nil {
				errs = append(errs, fmt.Errorf("cluster: %w", err))
			}
		}
	}
	if err := ValidateTags(c.Tags); err != nil {
		errs = append(errs, fmt.Errorf("cluster: %w", err))
	}
	if err := c.FailureDetection.WithDefaults().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("cluster: %w", err))
	}
	return errors.Join(errs...)
}

// Start joins the gossip and starts the background work: joining, the
// bootstrap, and, on the leader, reconciliation.
func Start(cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.MaxVoters <= 0 {
		cfg.MaxVoters = DefaultMaxVoters
	}
	if cfg.ServerStabilization <= 0 {
		cfg.ServerStabilization = DefaultServerStabilization
	}
	if cfg.DeadServerGrace <= 0 {
		cfg.DeadServerGrace = DefaultDeadServerGrace
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = DefaultReconcileInterval
	}
	if cfg.FaultDomain == "" {
		cfg.FaultDomain = cfg.NodeName
	}
	if cfg.UpgradeDomain == "" {
		cfg.UpgradeDomain = cfg.NodeName
	}
	cfg.FailureDetection = cfg.FailureDetection.WithDefaults()
	if cfg.MinQuorum == 0 && cfg.BootstrapExpect > 1 {
		cfg.MinQuorum = cfg.BootstrapExpect
	}
	c := &Cluster{
		cfg: cfg, log: cfg.Logger,
		events:      make(chan serf.Event, 256),
		kick:        make(chan struct{}, 1),
		failedSince: map[string]time.Time{},
		removing:    map[string]bool{},
	}
	host, portStr, _ := net.SplitHostPort(cfg.BindAddr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("cluster: serf port %q: %w", portStr, err)
	}

	sc := serf.DefaultConfig()
	sc.Init()
	sc.NodeName = cfg.NodeName
	sc.Tags = c.tags()
	sc.EventCh = c.events
	sc.RejoinAfterLeave = true
	sc.LeavePropagateDelay = 500 * time.Millisecond
	sc.BroadcastTimeout = 2 * time.Second
	sc.ReapInterval = 5 * time.Second
	// Members try to reach a failed member again every ReconnectInterval
	// (serf's default is 30 s). A restarted server whose -join names no one
	// else, such as the one the others joined, is found again this way
	// when its own rejoin from the snapshot found no one.
	sc.ReconnectInterval = 2 * time.Second
	stdlog := cfg.Logger.Named("serf").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	sc.Logger = stdlog
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		sc.SnapshotPath = filepath.Join(cfg.DataDir, "local.snapshot")
	}
	// Tight gossip: plughost clusters are LAN or loopback.
	ml := memberlist.DefaultLANConfig()
	ml.Name = cfg.NodeName
	ml.BindAddr, ml.BindPort = host, port
	ml.AdvertiseAddr, ml.AdvertisePort = host, port
	cfg.FailureDetection.apply(ml)
	ml.PushPullInterval = 10 * time.Second
	ml.TCPTimeout = 2 * time.Second
	ml.Logger = stdlog
	ml.LogOutput = nil
	if c.encrypted, err = setupKeyring(cfg, sc, ml, cfg.Logger); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if !c.encrypted {
		c.log.Info("gossip is not encrypted (only -dev runs without -encrypt)")
	}
	sc.MemberlistConfig = ml
	sc.LogOutput = io.Discard
	sc.Logger = stdlog

	if c.serf, err = serf.Create(sc); err != nil {
		return nil, fmt.Errorf("cluster: serf on %s: %w", cfg.BindAddr, err)
	}
	// serf makes its snapshot 0644 (less the umask): it names the members.
	if sc.SnapshotPath != "" {
		if err := os.Chmod(sc.SnapshotPath, 0o600); err != nil {
			c.serf.Shutdown()
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	cfg.Store.SetLeaderResolver(c.APIAddrOf)
	cfg.Store.SetRaftAddrResolver(c.RPCAddrOf)

	c.contact = newRaftContact(cfg.Store.Raft())
	c.ap = autopilot.New(cfg.Store.Raft(), apDelegate{c},
		autopilot.WithLogger(cfg.Logger),
		autopilot.WithPromoter(&apPromoter{c: c}),
		autopilot.WithUpdateInterval(cfg.ReconcileInterval),
		autopilot.WithReconcileInterval(cfg.ReconcileInterval))

	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(3)
	go c.run(ctx)
	go c.joinLoop(ctx)
	go func() {
		defer c.wg.Done()
		c.contact.run(ctx)
	}()
	return c, nil
}

// tags are this node's serf tags.
func (c *Cluster) tags() map[string]string {
	t := make(map[string]string, len(c.cfg.Tags)+6)
	for k, v := range c.cfg.Tags {
		t[k] = v
	}
	t[TagFaultDomain] = c.cfg.FaultDomain
	t[TagUpgradeDomain] = c.cfg.UpgradeDomain
	t[TagRole] = RoleServer
	t[TagAPI] = c.cfg.APIAddr
	t[TagRPC] = c.cfg.Store.RaftAddr()
	c.stateTag = c.hasState()
	if c.stateTag {
		t[TagRaftState] = "1"
	}
	return t
}

func (c *Cluster) hasState() bool {
	return c.cfg.Store.HasState() || c.cfg.Store.Revision() > 0
}

// joinLoop joins the configured addresses, retrying with backoff until one
// answers or the cluster stops.
func (c *Cluster) joinLoop(ctx context.Context) {
	defer c.wg.Done()
	// Joining itself would count as a contact: leave this node's own
	// address out (a server given -join of its own, as the first one often
	// is, has no one else to join). The members seen alive before a restart
	// are tried too.
	var join []string
	add := func(addrs []string) {
		for _, addr := range addrs {
			if addr != c.cfg.BindAddr && addr != c.Addr() && !slices.Contains(join, addr) {
				join = append(join, addr)
			}
		}
	}
	add(c.cfg.Join)
	explicit := len(join) > 0
	add(readPeers(c.cfg.DataDir))
	if len(join) == 0 {
		return
	}
	backoff := 100 * time.Millisecond
	for {
		if !explicit && c.serf.NumNodes() > 1 {
			return // without -join of its own, a peer that found it will do
		}
		n, err := c.serf.Join(join, true)
		if n > 0 {
			c.log.Info("joined the cluster", "contacted", n, "addresses", join)
			return
		}
		c.log.Warn("join failed, retrying", "addresses", join, "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// run handles serf events and reconciles on a timer.
func (c *Cluster) run(ctx context.Context) {
	defer c.wg.Done()
	tick := time.NewTicker(c.cfg.ReconcileInterval)
	defer tick.Stop()
	defer c.stopAutopilot()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-c.events:
			if me, ok := e.(serf.MemberEvent); ok {
				c.log.Debug("member event", "type", me.EventType().String(), "members", len(me.Members))
				c.changes.notify()
			}
		case <-c.kick:
		case <-tick.C:
		}
		c.step(ctx)
	}
}

// step is one round: track failed members, bootstrap if due, update the
// state tag; on the leader, reconcile and run autopilot.
func (c *Cluster) step(ctx context.Context) {
	now := time.Now()
	members := c.serf.Members()
	c.mu.Lock()
	failed := map[string]bool{}
	for _, m := range members {
		if m.Status == serf.StatusFailed {
			failed[m.Name] = true
			if _, ok := c.failedSince[m.Name]; !ok {
				c.failedSince[m.Name] = now
			}
		}
	}
	for n := range c.failedSince {
		if !failed[n] {
			delete(c.failedSince, n)
		}
	}
	c.mu.Unlock()

	c.recordPeers(members)
	if !c.hasState() {
		c.maybeBootstrap(ctx, members)
	}
	if has := c.hasState(); has != c.stateTag {
		if err := c.serf.SetTags(c.tags()); err != nil {
			c.log.Warn("could not update serf tags", "error", err)
		}
	}
	if c.cfg.Store.IsLeader() {
		c.reconcile(ctx, members)
		c.startAutopilot(ctx)
	} else {
		c.stopAutopilot()
	}
}

// startAutopilot starts autopilot on this node, the leader, unless it runs.
func (c *Cluster) startAutopilot(ctx context.Context) {
	if c.apCancel != nil {
		return
	}
	actx, cancel := context.WithCancel(ctx)
	c.apCancel = cancel
	c.ap.Start(actx)
}

// stopAutopilot stops autopilot, when this node stops leading, and waits
// for it.
func (c *Cluster) stopAutopilot() {
	if c.apCancel == nil {
		return
	}
	c.apCancel()
	c.apCancel = nil
	<-c.ap.Stop()
}

// maybeBootstrap forms the raft cluster once BootstrapExpect servers are
// alive and none of them has raft state, as Consul does. Every node computes
// the same configuration. The others count once they proved their identity
// at their RPC addresses (Config.VerifyServer).
func (c *Cluster) maybeBootstrap(ctx context.Context, members []serf.Member) {
	if c.cfg.BootstrapExpect <= 1 {
		return
	}
	var servers []store.RaftServer
	for _, m := range members {
		if m.Status != serf.StatusAlive || m.Tags[TagRole] != RoleServer {
			continue
		}
		if m.Tags[TagRaftState] == "1" {
			return // a cluster exists; the leader will add this node
		}
		servers = append(servers, store.RaftServer{ID: m.Name, Address: m.Tags[TagRPC], Suffrage: store.Voter})
	}
	// A server that has not proved its identity is left out, as if it
	// were not there.
	servers = slices.DeleteFunc(servers, func(s store.RaftServer) bool {
		return s.ID != c.cfg.NodeName && !c.verifiedAt(ctx, s.ID, s.Address)
	})
	if len(servers) < c.cfg.BootstrapExpect {
		return
	}
	sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
	c.log.Info("bootstrapping the raft cluster", "expect", c.cfg.BootstrapExpect, "servers", servers)
	if err := c.cfg.Store.BootstrapCluster(servers); err != nil && !errors.Is(err, store.ErrHasState) {
		c.log.Error("bootstrap failed", "error", err)
	}
}

// Members lists every member, sorted by name, with its raft role.
func (c *Cluster) Members() []Member {
	roles := map[string]string{}
	if conf, err := c.cfg.Store.Configuration(); err == nil {
		for _, s := range conf {
			roles[s.ID] = RaftVoter
			if s.Suffrage == store.Nonvoter {
				roles[s.ID] = RaftNonvoter
			}
		}
	}
	if id, _ := c.cfg.Store.Leader(); id != "" {
		roles[id] = RaftLeader
	}
	var out []Member
	for _, m := range c.serf.Members() {
		role := roles[m.Name]
		if role == "" {
			role = RaftNone
		}
		out = append(out, memberOf(m, role))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// memberOf is a serf member as Members lists it. Its tags are the peer's
// word: they are listed as they are, but its API and cluster RPC
// addresses, which other nodes dial (relayed calls, bundle fetches), are
// kept only when they are host:port, like Nodes' (nodeOf).
func memberOf(m serf.Member, role string) Member {
	tags := make(map[string]string, len(m.Tags))
	for k, v := range m.Tags {
		tags[k] = v
	}
	out := Member{
		Name: m.Name, Addr: net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))),
		Status: m.Status.String(), RaftRole: role, Tags: tags,
	}
	if a := m.Tags[TagAPI]; validAddr(a) {
		out.APIAddr = a
	}
	if a := m.Tags[TagRPC]; validAddr(a) {
		out.RPCAddr = a
	}
	return out
}

// Addr is the serf address this node gossips on.
// It reads serf's copy of the local member: memberlist's LocalNode is a
// pointer to state memberlist updates in place (a tag change does).
func (c *Cluster) Addr() string {
	m := c.serf.LocalMember()
	return net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
}

// APIAddrOf is the API address of the member whose raft ID (node name) is id.
func (c *Cluster) APIAddrOf(id string) (string, bool) {
	for _, m := range c.serf.Members() {
		if m.Name == id && m.Tags[TagAPI] != "" {
			return m.Tags[TagAPI], true
		}
	}
	return "", false
}

// RPCAddrOf is the raft (RPC) address of the server whose raft ID (node
// name) is id, as gossip knows it now: a server that restarted on another
// address is found there. A member that left has no address.
func (c *Cluster) RPCAddrOf(id string) (string, bool) {
	for _, m := range c.serf.Members() {
		if m.Name == id && m.Status != serf.StatusLeft && m.Tags[TagRPC] != "" {
			return m.Tags[TagRPC], true
		}
	}
	return "", false
}

// Leave leaves the gossip gracefully, so the leader removes this node from
// raft at once, then stops. Shutdown without Leave looks like a failure.
func (c *Cluster) Leave() error {
	err := c.serf.Leave()
	return errors.Join(err, c.Shutdown())
}

// Shutdown stops membership without leaving.
func (c *Cluster) Shutdown() error {
	var err error
	c.once.Do(func() {
		c.cancel()
		c.wg.Wait()
		c.verified.wg.Wait() // identity checks end with the context
		err = c.serf.Shutdown()
	})
	return err
}
