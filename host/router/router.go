// Package router routes gRPC calls made at the agent's API address to the
// plugin instance that serves the called service.
//
// Router.Serve accepts the API connections. A connection whose first call
// is to a plugin (or to the agent's reflection) is relayed frame by frame
// (see relay.go): the router decodes each call's headers to learn its
// method, looks the service up in an immutable route table (one atomic
// load), counts the call on the chosen Backend with atomics, and passes
// the call's frames to and from the relay's own HTTP/2 connection to that
// instance (Backend.Dial). A connection whose first call is to the agent's
// own API goes to the agent's grpc.Server, built with ServerOptions, whose
// unknown-service handler proxies any later plugin call message by message
// (proxy.go). The supervisor steers the table: Declare and Undeclare say
// which plugin serves which services, SetBackend switches where a plugin's
// calls go, SetState and SetHolding say what happens while none serves.
//
// The route table also holds other nodes' instances (SetRemote and
// RemoveRemote, fed from their observations; routes.go): a call that finds
// no local instance goes to a healthy remote one through the node-to-node
// relay on the cluster RPC port (peer.go), and reflection describes the
// plugins that run elsewhere only with descriptors loaded from a peer.
package router

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/plughost/plughost/sdk/wire"
)

// Config configures a Router. The zero value is usable: New applies the
// defaults.
type Config struct {
	// Logger receives routing changes, never per-call events; it is used
	// as given (name it "router" at the caller). Default: a null logger.
	Logger hclog.Logger
	// HoldTimeout bounds how long a call waits for a backend while the
	// plugin is holding (see SetHolding). Default 10s.
	HoldTimeout time.Duration
	// MaxMessageBytes is the largest message the router accepts from a
	// client or from a backend. Default wire.MaxMessageBytes, the limit
	// plugins themselves are started with.
	MaxMessageBytes int
	// StalledReadTimeout is how long a caller may read none of the data a
	// plugin sent it before the relay resets the call (RST_STREAM
	// ENHANCE_YOUR_CALM, which gRPC clients report as RESOURCE_EXHAUSTED)
	// and cancels it at the plugin. Default 20s.
	StalledReadTimeout time.Duration
	// MaxUnreadBytes bounds the data the relay holds, on all its
	// connections together, for callers and plugins that have no window
	// for it. Each stream holds at most its window (1 MiB), so only many
	// stalled streams reach it; past it, the calls whose callers waited
	// longest for window are reset, as stalled ones are, rather than
	// stopping everyone's data. Default 256 MiB.
	MaxUnreadBytes int
	// FirstCallTimeout bounds how long a caller's connection may stay open
	// without starting a call, counted from its opening or from its last
	// PING: a client keeping an idle connection alive pings it (gRPC at
	// most every 10 s), a stalled or abusive one is closed with GOAWAY.
	// Default 20s.
	FirstCallTimeout time.Duration
	// IdleTimeout closes a caller's connection that has had no call open
	// for this long after its first call (GOAWAY, then close): the relay
	// does it for relayed connections, gRPC's MaxConnectionIdle for the
	// agent's own server (ServerOptions). gRPC clients dial again at their
	// next call. 0: DefaultIdleTimeout; negative: never.
	IdleTimeout time.Duration
	// Authorize, if set, decides whether a call to plugin's method may go
	// ahead, relayed or proxied alike, once per call: header is the
	// credential header the call carries (CredentialHeaders) and
	// credential its value, both "" when it carries none. A non-nil error
	// (a gRPC status) ends the call with it. An authorized call is
	// watched over until the router calls release when it ends: should
	// the caller's authority end first (its token deleted), Authorize's
	// caller calls revoked with the status that ends the call, at once.
	Authorize func(header, credential, plugin, method string, revoked func(error)) (release func(), err error)
	// MayDescribe, if set, says whether the caller of a reflection stream
	// (its context, as the server's interceptors left it) may see plugin:
	// reflection lists and describes only the plugins it may. Nil: all.
	MayDescribe func(ctx context.Context, plugin string) bool

	// Node is this node's name, for messages.
	Node string
	// DialPeer, if set, opens a connection to the cluster RPC port at
	// rpcAddr, where node must answer, for relayed calls (mutual TLS, clusterrpc.KindRelay): how
	// calls reach the instances SetRemote records. Without it they fail
	// with Unavailable.
	DialPeer func(ctx context.Context, rpcAddr, node string) (net.Conn, error)
	// AwaitRoutes says the route table is not complete until RoutesKnown
	// is called (the agent's route feed calls it after its first pass
	// over the cluster's observations and catalog). Meanwhile a call to a
	// service no plugin declared waits for it, up to HoldTimeout or its
	// own deadline, rather than failing Unimplemented: on an agent's start
	// the services of plugins that run elsewhere are not known yet.
	AwaitRoutes bool
}

// CredentialHeaders are the headers that carry a caller's credentials,
// in the order Authorize looks at them. They never reach a plugin.
var CredentialHeaders = [...]string{"authorization", "x-plughost-token"}

// isCredential reports whether a header carries a caller's credentials.
func isCredential(name string) bool {
	return name == CredentialHeaders[0] || name == CredentialHeaders[1]
}

// DefaultStalledReadTimeout is Config.StalledReadTimeout's default.
const DefaultStalledReadTimeout = 20 * time.Second

// DefaultMaxUnreadBytes is Config.MaxUnreadBytes's default.
const DefaultMaxUnreadBytes = 256 << 20

// DefaultHoldTimeout is Config.HoldTimeout's default.
const DefaultHoldTimeout = 10 * time.Second

// DefaultIdleTimeout is Config.IdleTimeout's default.
const DefaultIdleTimeout = 5 * time.Minute

// DefaultFirstCallTimeout is Config.FirstCallTimeout's default: longer
// than the shortest keepalive interval gRPC clients use (10 s).
const DefaultFirstCallTimeout = 20 * time.Second

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}

	if c.HoldTimeout <= 0 {
		c.HoldTimeout = DefaultHoldTimeout
	}
	if c.MaxUnreadBytes <= 0 {
		c.MaxUnreadBytes = DefaultMaxUnreadBytes
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.StalledReadTimeout <= 0 {
		c.StalledReadTimeout = DefaultStalledReadTimeout
	}
	if c.FirstCallTimeout <= 0 {
		c.FirstCallTimeout = DefaultFirstCallTimeout
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = wire.MaxMessageBytes
	}
	return c
}

// Router routes calls by full method name to plugin backends. Its methods
// are safe for concurrent use.
type Router struct {
	cfg      Config
	log      hclog.Logger
	codec    codec
	callOpts []grpc.CallOption

	unaryCalls sync.Pool // of *unaryCall, built with callOpts

	// routes maps a full service name to the plugin that declared it. The
	// map is never modified once stored: changes store a new one.
	routes atomic.Pointer[map[string]*plugin]

	mu sync.Mutex // serializes changes to plugins and routes
	// plugins holds every plugin ever named. Entries are never removed, so
	// the counters in them only grow.
	plugins map[string]*plugin

	unknown atomic.Uint64 // calls to services no plugin declared

	relay atomic.Pointer[relay] // set by Serve

	// routesKnown is closed by RoutesKnown; nil without
	// Config.AwaitRoutes.
	routesKnown     chan struct{}
	routesKnownOnce sync.Once
	awaiting        atomic.Int64 // calls waiting for routesKnown now
}

// plugin is the router's entry for one plugin.
type plugin struct {
	name    string
	backend atomic.Pointer[Backend]
	holding atomic.Bool
	state   atomic.Pointer[string]
	// starting is set while the state says the local instance is starting
	// (SetState): one is coming, so calls wait for it.
	starting atomic.Bool
	// files are the descriptors of the last backend that had any: reflection
	// keeps resolving the plugin's services while no instance serves, so
	// that a call reaches the router and learns why.
	files atomic.Pointer[protoregistry.Files]
	held  atomic.Int64 // calls waiting for a backend now
	stats counters

	mu      sync.Mutex    // guards changed
	changed chan struct{} // closed when backend or holding changes; made by a waiter

	services []string // declared services, sorted; guarded by Router.mu

	// remotes are the plugin's instances on other nodes by node name
	// (see SetRemote); guarded by Router.mu. routable holds the Backends
	// of the healthy ones, sorted by node; turn rotates among equals.
	remotes  map[string]*remoteEntry
	routable atomic.Pointer[[]*Backend]
	turn     atomic.Uint32
	// registered are the services of the plugin's newest registered
	// version (SetRegistered); guarded by Router.mu.
	registered []string
	// failover, when set, says the plugin is a singleton between actives
	// (SetFailover): calls wait for the new one.
	failover atomic.Pointer[string]
	// loadMu serializes loading the plugin's descriptors from a peer.
	loadMu sync.Mutex
}

// waits reports whether a call to p that finds no instance waits for one:
// while the supervisor holds it (SetHolding), its local instance is
// starting (SetState), as on an agent's start before it or the other
// nodes' instances serve, or a singleton fails over (SetFailover). A call
// another node relayed (localOnly) waits only for the local instance's
// swap: the node that relayed it may route it elsewhere.
func (p *plugin) waits(localOnly bool) bool {
	return p.holding.Load() || !localOnly && (p.starting.Load() || p.failover.Load() != nil)
}

// New returns a Router with no plugins.
func New(cfg Config) *Router {
	cfg = cfg.withDefaults()
	r := &Router{
		cfg:     cfg,
		log:     cfg.Logger,
		codec:   newCodec(),
		plugins: make(map[string]*plugin),
	}
	r.callOpts = []grpc.CallOption{
		grpc.ForceCodecV2(r.codec),
		grpc.MaxCallRecvMsgSize(cfg.MaxMessageBytes),
		grpc.MaxCallSendMsgSize(cfg.MaxMessageBytes),
	}
	empty := map[string]*plugin{}
	r.routes.Store(&empty)
	if cfg.AwaitRoutes {
		r.routesKnown = make(chan struct{})
	}
	return r
}

// RoutesKnown says the route table is complete (see Config.AwaitRoutes):
// calls waiting for it go on, and calls to unknown services fail at once
// from now on.
func (r *Router) RoutesKnown() {
	if r.routesKnown == nil {
		return
	}
	r.routesKnownOnce.Do(func() {
		close(r.routesKnown)
		r.log.Debug("route table complete")
	})
}

// awaitRoutes waits, for a call to service that no plugin serves, until
// the route table is complete (see Config.AwaitRoutes), at most
// HoldTimeout, then looks again; held is how long it waited.
func (r *Router) awaitRoutes(ctx context.Context, service string) (p *plugin, held time.Duration) {
	if r.routesKnown == nil {
		return nil, 0
	}
	select {
	case <-r.routesKnown:
		return nil, 0
	default:
	}
	start := time.Now()
	r.awaiting.Add(1)
	defer r.awaiting.Add(-1)
	timer := time.NewTimer(r.cfg.HoldTimeout)
	defer timer.Stop()
	select {
	case <-r.routesKnown:
	case <-timer.C:
	case <-ctx.Done():
	}
	return (*r.routes.Load())[service], time.Since(start)
}

// Declare records the services plugin serves, from its manifest, replacing
// what it declared before. Calls to a declared service with no backend fail
// with Unavailable (or are held, see SetHolding) instead of Unimplemented.
// It fails, changing nothing, if a name is malformed or another plugin
// already declared one of the services.
func (r *Router) Declare(pluginName string, services []string) error {
	if pluginName == "" {
		return fmt.Errorf("router: declare: empty plugin name: %w", ErrInvalidName)
	}
	svcs := slices.Clone(services)
	slices.Sort(svcs)
	svcs = slices.Compact(svcs)
	for _, s := range svcs {
		if !protoreflect.FullName(s).IsValid() {
			return fmt.Errorf("router: declare plugin %q: service %q is not a full protobuf name such as pkg.v1.Service: %w", pluginName, s, ErrInvalidName)
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	routes := *r.routes.Load()
	for _, s := range svcs {
		if owner, ok := routes[s]; ok && owner.name != pluginName {
			return fmt.Errorf("router: declare plugin %q: service %s: %w %q (remove that plugin first)", pluginName, s, ErrServiceTaken, owner.name)
		}
	}
	p := r.pluginLocked(pluginName)
	p.services = svcs
	r.publishLocked()
	r.log.Debug("services declared", "plugin", pluginName, "services", svcs)
	return nil
}

// Undeclare forgets plugin's services: calls to them become unknown
// (Unimplemented). The plugin's backend, state and holding stay as they
// are, for SetBackend and the others to change. To change a plugin's
// services, call Declare alone: it replaces them in one step, where
// Undeclare then Declare leaves a moment in which they are unknown.
func (r *Router) Undeclare(pluginName string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.plugins[pluginName]
	if !ok || len(p.services) == 0 {
		return
	}
	p.services = nil
	r.publishLocked()
	r.log.Debug("services undeclared", "plugin", pluginName)
}

// SetBackend switches where plugin's calls go, atomically, and returns the
// previous backend. b nil means no instance serves. Calls that started on
// the old backend keep running on it: drain it with Backend.Wait.
func (r *Router) SetBackend(pluginName string, b *Backend) (old *Backend) {
	if b != nil {
		b.prepare()
	}
	r.mu.Lock()
	p := r.pluginLocked(pluginName)
	old = p.backend.Swap(b)
	if b != nil && b.Files != nil {
		p.files.Store(b.Files)
	}
	r.mu.Unlock()
	p.notify()
	if rl := r.relay.Load(); rl != nil && b != nil && b.Dial != nil {
		// Connect now rather than on the first call. A failure is the
		// first call's to report.
		go func() { _, _ = rl.backendConn(b) }()
	}
	r.log.Info("routing switched", "plugin", pluginName, "from", describe(old), "to", describe(b))
	return old
}

func describe(b *Backend) string {
	if b == nil {
		return "none"
	}
	return b.Version + "/" + b.InstanceID
}

// Backend returns the backend plugin's calls go to, or nil.
func (r *Router) Backend(pluginName string) *Backend {
	r.mu.Lock()
	p := r.plugins[pluginName]
	r.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.backend.Load()
}

// SetState records plugin's state as the Unavailable message shows it while
// no backend serves, for example "starting" or "failed: exited with status 3".
// While it begins with "starting" an instance is on its way: calls that
// find none wait for one, local or remote, as while holding (see
// SetHolding); when it turns to anything else (failed, backing off after a
// crash) they fail at once, as nothing is coming.
func (r *Router) SetState(pluginName, state string) {
	r.mu.Lock()
	p := r.pluginLocked(pluginName)
	r.mu.Unlock()
	p.state.Store(&state)
	starting := strings.HasPrefix(state, "starting")
	if p.starting.Swap(starting) != starting {
		p.notify()
	}
}

// SetHolding says whether new calls to plugin wait for a backend while none
// is set, up to Config.HoldTimeout or their own deadline, instead of failing
// at once. The supervisor holds during a restart-style version swap.
func (r *Router) SetHolding(pluginName string, hold bool) {
	r.mu.Lock()
	p := r.pluginLocked(pluginName)
	r.mu.Unlock()
	p.holding.Store(hold)
	p.notify()
}

// pluginLocked returns plugin's entry, making it if needed. r.mu is held.
func (r *Router) pluginLocked(name string) *plugin {
	p, ok := r.plugins[name]
	if !ok {
		p = &plugin{name: name}
		r.plugins[name] = p
	}
	return p
}

// publishLocked stores a new route table built from every plugin's
// declared services. r.mu is held.
func (r *Router) publishLocked() {
	routes := make(map[string]*plugin)
	for _, p := range r.plugins {
		for _, s := range p.services {
			routes[s] = p
		}
	}
	// Services only other nodes' instances serve: a service declared here
	// stays its plugin's.
	for _, p := range r.plugins {
		for _, e := range p.remotes {
			for _, s := range e.Services {
				if owner, ok := routes[s]; ok && owner != p {
					r.log.Warn("a remote instance's service is served by another plugin here; calls to it stay there", "service", s, "remote_plugin", p.name, "node", e.Node, "plugin", owner.name)
					continue
				}
				routes[s] = p
			}
		}
	}
	// Services of registered plugins no instance declares or serves: a
	// call to them is answered with why nothing serves.
	for _, p := range r.plugins {
		for _, s := range p.registered {
			if _, ok := routes[s]; !ok {
				routes[s] = p
			}
		}
	}
	r.routes.Store(&routes)
}

// stateText returns the plugin's state as messages show it.
func (p *plugin) stateText() string {
	if s := p.state.Load(); s != nil && *s != "" {
		return *s
	}
	return "unknown"
}

// notify wakes the calls waiting for p's backend or holding to change.
func (p *plugin) notify() {
	p.mu.Lock()
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
	p.mu.Unlock()
}

// changes returns a channel closed at p's next notify.
func (p *plugin) changes() <-chan struct{} {
	p.mu.Lock()
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	ch := p.changed
	p.mu.Unlock()
	return ch
}

// handle is the API server's unknown-service handler: every call to a
// service the server itself does not register comes here.
func (r *Router) handle(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "router: the stream carries no method name")
	}
	service := serviceOf(method)
	p := (*r.routes.Load())[service]
	var held time.Duration
	if p == nil {
		p, held = r.awaitRoutes(ss.Context(), service)
	}
	if p == nil {
		if held > 0 {
			ss.SetTrailer(metadata.Pairs(HeldTrailer, strconv.FormatInt(held.Milliseconds(), 10)))
		}
		r.unknown.Add(1)
		if err := ss.Context().Err(); err != nil {
			return errFromContext(ss.Context())
		}
		return errUnknownService(service)
	}
	if held > 0 {
		p.stats.recordHeld(held)
	}
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	var revoked atomic.Pointer[error]
	release, err := r.authorizeMD(ctx, p, method, func(err error) {
		revoked.Store(&err)
		cancel()
	})
	if err != nil {
		return err
	}
	err = r.route(ctxStream{ServerStream: ss, ctx: ctx}, p, method, held)
	release()
	if rv := revoked.Load(); rv != nil {
		err = *rv // the caller's token was revoked mid-call
	}
	p.stats.record(err)
	return err
}

// ctxStream is a server stream with a context of its own.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }

// authorizeMD authorizes a proxied call by its metadata (see
// Config.Authorize).
func (r *Router) authorizeMD(ctx context.Context, p *plugin, method string, revoked func(error)) (release func(), err error) {
	if r.cfg.Authorize == nil {
		return func() {}, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, h := range CredentialHeaders {
		if v := md.Get(h); len(v) > 0 {
			return r.cfg.Authorize(h, v[0], p.name, method, revoked)
		}
	}
	return r.cfg.Authorize("", "", p.name, method, revoked)
}

// authorizeFields authorizes a relayed call by its header fields (see
// Config.Authorize).
func (r *Router) authorizeFields(fields []hpack.HeaderField, p *plugin, method string, revoked func(error)) (release func(), err error) {
	if r.cfg.Authorize == nil {
		return func() {}, nil
	}
	for _, h := range CredentialHeaders {
		for _, f := range fields {
			if f.Name == h {
				return r.cfg.Authorize(h, f.Value, p.name, method, revoked)
			}
		}
	}
	return r.cfg.Authorize("", "", p.name, method, revoked)
}

// route proxies one call to p's backend.
// awaited is how long it waited for the route table already (see
// awaitRoutes), counted in its held trailer.
func (r *Router) route(ss grpc.ServerStream, p *plugin, method string, awaited time.Duration) error {
	b, held, err := r.acquire(ss.Context(), p, false)
	held += awaited
	if held > 0 {
		p.stats.recordHeld(held)
	}
	defer func() {
		if held > 0 {
			ss.SetTrailer(metadata.Pairs(HeldTrailer, strconv.FormatInt(held.Milliseconds(), 10)))
		}
	}()
	if err != nil {
		return err
	}
	var by time.Time
	again := func(gone *Backend) (*Backend, error) {
		if gone.Node == "" {
			return nil, nil // this node's own instance: nothing else to try
		}
		// Its node went away: nothing of the call reached it, so it waits
		// for the cluster to route the plugin elsewhere (see reroute).
		gone.downUntil.Store(time.Now().Add(peerDownFor).UnixNano())
		if by.IsZero() {
			by = time.Now().Add(r.cfg.HoldTimeout)
		}
		next, waited, err := r.reroute(ss.Context(), p, gone, by)
		if waited > 0 {
			p.stats.recordHeld(waited)
			held += waited
		}
		gone.release()
		b = next
		return next, err
	}
	err = r.proxy(ss, b, method, again)
	if b == nil {
		return err // released by again, which found no other instance
	}
	// A call cut off by the instance's stop ends Unavailable or Canceled;
	// any other end is the plugin's answer.
	c := status.Code(err)
	b.releaseAs(c != codes.Unavailable && c != codes.Canceled)
	return err
}

// HeldTrailer is the trailer the router adds to a call it held while the
// plugin had no serving instance: how long it waited, in milliseconds.
const HeldTrailer = "plughost-held-ms"

// acquire returns the instance a call to p goes to (see pick), counted in
// flight, holding the call while p holds and has none; held is how long it
// waited. With localOnly, only this node's own instance will do: a call
// another node relayed here goes no further.
func (r *Router) acquire(ctx context.Context, p *plugin, localOnly bool) (b *Backend, held time.Duration, err error) {
	var start time.Time
	for {
		if localOnly {
			b = p.pickLocal()
		} else {
			b = p.pick(nil)
		}
		if b != nil {
			if !start.IsZero() {
				held = time.Since(start)
			}
			return b, held, nil
		}
		if start.IsZero() {
			start = time.Now()
		}
		if err = r.hold(ctx, p, localOnly); err != nil {
			return nil, time.Since(start), err
		}
	}
}

// hold waits while p holds until it may have an instance to pick.
func (r *Router) hold(ctx context.Context, p *plugin, localOnly bool) error {
	if !p.waits(localOnly) {
		return r.errNoRoute(p, localOnly)
	}
	p.held.Add(1)
	defer p.held.Add(-1)
	timer := time.NewTimer(r.cfg.HoldTimeout)
	defer timer.Stop()
	for {
		changed := p.changes()
		if p.backend.Load() != nil || !localOnly && p.hasRemotes() {
			return nil
		}
		if !p.waits(localOnly) {
			return r.errNoRoute(p, localOnly)
		}
		select {
		case <-changed:
		case <-timer.C:
			if note := p.failover.Load(); note != nil && !localOnly {
				return errFailingOver(p.name, *note, r.cfg.HoldTimeout)
			}
			return errHeldTooLong(p.name, p.stateText(), r.cfg.HoldTimeout)
		case <-ctx.Done():
			return errFromContext(ctx)
		}
	}
}

// reroute waits, for a call whose instance on another node (gone) could
// not be reached and that found no other, until another may take it: the
// route table changed (the cluster saw the node fail and another instance
// serve), or gone's time passed over ended and it may be tried again. by
// bounds the wait. Nothing of the call reached gone, so it may go
// anywhere.
func (r *Router) reroute(ctx context.Context, p *plugin, gone *Backend, by time.Time) (*Backend, time.Duration, error) {
	start := time.Now()
	node := gone.Node
	p.held.Add(1)
	defer p.held.Add(-1)
	for {
		changed := p.changes()
		if b := p.pick(gone); b != nil {
			return b, time.Since(start), nil
		}
		left := time.Until(by)
		if left <= 0 {
			return nil, time.Since(start), errNoTakeover(p, node, r.cfg.HoldTimeout)
		}
		wait := left
		if gone != nil {
			wait = min(wait, time.Until(time.Unix(0, gone.downUntil.Load())))
		}
		timer := time.NewTimer(max(wait, time.Millisecond))
		select {
		case <-changed:
		case <-timer.C:
			if gone != nil && time.Now().UnixNano() >= gone.downUntil.Load() {
				gone = nil // its time passed over is up: it may be tried again
			}
		case <-ctx.Done():
			timer.Stop()
			return nil, time.Since(start), errFromContext(ctx)
		}
		timer.Stop()
	}
}

// serviceOf returns the service of a full method name "/pkg.Svc/Method".
func serviceOf(method string) string {
	method = strings.TrimPrefix(method, "/")
	if i := strings.LastIndexByte(method, '/'); i >= 0 {
		return method[:i]
	}
	return method
}
