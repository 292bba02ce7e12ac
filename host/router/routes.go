package router

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// The route table holds, per plugin, the instances a call may go to: the
// local one (SetBackend, from this node's supervisor) and the healthy
// instances on other nodes (SetRemote, from their observations). A call
// goes to the local instance when there is one, else to the remote one
// with the fewest calls in flight (ties taken in turn), through the
// node-to-node relay (peer.go): the peer's router relays it to its own
// local instance and never onward.

// Remote is an instance of a plugin on another node, as SetRemote gets it.
type Remote struct {
	// Node is the node's name; its cluster certificate must name it.
	Node string
	// RPCAddr is the node's cluster RPC address, where relayed calls go.
	RPCAddr string
	// Plugin and Version name the instance.
	Plugin  string
	Version string
	// Services are the services the instance serves (its manifest's).
	Services []string
	// Healthy says whether the instance passed its health gate and serves:
	// only healthy instances are routed to.
	Healthy bool
}

// remoteEntry is what the router keeps of a Remote: the Remote and, while
// it is healthy and reachable, its Backend.
type remoteEntry struct {
	Remote
	b *Backend // nil unless Healthy
}

// peerDownFor is how long a remote instance the relay could not connect
// to is passed over while others are up.
const peerDownFor = 2 * time.Second

// SetRemote records an instance of r.Plugin on node r.Node, replacing what
// was known of that plugin there. Healthy instances take calls that find
// no local instance; the others only name their node in Unavailable
// messages. The services are declared as Declare does, except that a
// service another plugin already declared stays that plugin's (logged).
func (r *Router) SetRemote(rem Remote) error {
	if rem.Plugin == "" || rem.Node == "" {
		return fmt.Errorf("router: set remote: plugin %q on node %q: %w", rem.Plugin, rem.Node, ErrInvalidName)
	}
	svcs := slices.Clone(rem.Services)
	slices.Sort(svcs)
	svcs = slices.Compact(svcs)
	for _, s := range svcs {
		if !protoreflect.FullName(s).IsValid() {
			return fmt.Errorf("router: set remote plugin %q on node %s: service %q is not a full protobuf name: %w", rem.Plugin, rem.Node, s, ErrInvalidName)
		}
	}
	rem.Services = svcs

	r.mu.Lock()
	p := r.pluginLocked(rem.Plugin)
	if p.remotes == nil {
		p.remotes = make(map[string]*remoteEntry)
	}
	old := p.remotes[rem.Node]
	e := &remoteEntry{Remote: rem}
	if rem.Healthy {
		if old != nil && old.b != nil && old.RPCAddr == rem.RPCAddr && old.Version == rem.Version {
			e.b = old.b // keep its connections
		} else {
			e.b = r.remoteBackend(rem)
		}
	}
	p.remotes[rem.Node] = e
	r.publishRemotesLocked(p)
	r.publishLocked()
	r.mu.Unlock()
	p.notify() // held calls may go to it now

	if old != nil && old.b != nil && old.b != e.b {
		go r.retire(old.b)
	}
	if e.b != nil && (old == nil || old.b != e.b) {
		r.log.Info("remote instance routable", "plugin", rem.Plugin, "node", rem.Node, "version", rem.Version)
		if rl := r.relay.Load(); rl != nil {
			go func() { _, _ = rl.backendConn(e.b) }()
		}
		if p.files.Load() == nil {
			go r.loadRemoteFiles(p, e.b, svcs)
		}
	} else if e.b == nil && old != nil && old.b != nil {
		r.log.Info("remote instance not routable", "plugin", rem.Plugin, "node", rem.Node, "healthy", rem.Healthy)
	}
	return nil
}

// RemoveRemote forgets node's instance of plugin, or every instance on
// node when plugin is "". Calls in flight on them run to their end.
func (r *Router) RemoveRemote(node, plugin string) {
	var gone []*Backend
	r.mu.Lock()
	for _, p := range r.plugins {
		if plugin != "" && p.name != plugin {
			continue
		}
		e, ok := p.remotes[node]
		if !ok {
			continue
		}
		delete(p.remotes, node)
		if e.b != nil {
			gone = append(gone, e.b)
		}
		r.publishRemotesLocked(p)
	}
	r.publishLocked()
	r.mu.Unlock()
	for _, b := range gone {
		r.log.Info("remote instance removed", "plugin", b.Plugin, "node", b.Node)
		go r.retire(b)
	}
}

// SetRegistered records every plugin registered in the cluster with the
// services its newest version declares (from the catalog), replacing what
// was recorded before. A registered plugin no node runs keeps its services
// routed here, so that a call to one fails Unavailable naming the plugin
// rather than Unimplemented. A service another plugin declared or serves
// stays that plugin's.
func (r *Router) SetRegistered(plugins map[string][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.plugins {
		if _, ok := plugins[p.name]; !ok {
			p.registered = nil
		}
	}
	for name, svcs := range plugins {
		valid := make([]string, 0, len(svcs))
		for _, s := range svcs {
			if protoreflect.FullName(s).IsValid() {
				valid = append(valid, s)
			}
		}
		slices.Sort(valid)
		r.pluginLocked(name).registered = slices.Compact(valid)
	}
	r.publishLocked()
}

// SetFailover says that singleton plugin is between actives, in words an
// operator reads ("singleton counter is failing over from n2 to n3"), or
// with note "" that it is not. Meanwhile a call that finds no instance
// waits for one, as while the supervisor holds (up to Config.HoldTimeout
// or its deadline), then fails Unavailable with reason FAILING_OVER and
// the note.
func (r *Router) SetFailover(plugin, note string) {
	r.mu.Lock()
	p := r.pluginLocked(plugin)
	r.mu.Unlock()
	if note == "" {
		p.failover.Store(nil)
	} else {
		p.failover.Store(&note)
	}
	p.notify()
}

// Remotes returns what the router knows of plugin's instances on other
// nodes, sorted by node.
func (r *Router) Remotes(plugin string) []Remote {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.plugins[plugin]
	if p == nil {
		return nil
	}
	out := make([]Remote, 0, len(p.remotes))
	for _, e := range p.remotes {
		out = append(out, e.Remote)
	}
	slices.SortFunc(out, func(a, b Remote) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// publishRemotesLocked stores p's routable remote backends, sorted by
// node. r.mu is held.
func (r *Router) publishRemotesLocked(p *plugin) {
	var bs []*Backend
	for _, e := range p.remotes {
		if e.b != nil {
			bs = append(bs, e.b)
		}
	}
	slices.SortFunc(bs, func(a, b *Backend) int { return strings.Compare(a.Node, b.Node) })
	p.routable.Store(&bs)
}

// remoteBackend builds the Backend of a healthy remote instance: the
// relay reaches it with Config.DialPeer, proxied calls through a gRPC
// connection over the same kind of connection.
func (r *Router) remoteBackend(rem Remote) *Backend {
	b := &Backend{Plugin: rem.Plugin, Version: rem.Version, InstanceID: rem.Node, Node: rem.Node}
	dial := r.cfg.DialPeer
	if dial == nil {
		return b // Dial nil: calls fail naming the missing transport
	}
	node, addr := rem.Node, rem.RPCAddr
	b.Dial = func(ctx context.Context) (net.Conn, error) { return dial(ctx, addr, node) }
	// The connection under it is the cluster's mutual TLS: gRPC itself
	// adds none.
	conn, err := grpc.NewClient("passthrough:///"+node, append(BackendDialOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return dial(ctx, addr, node) }))...)
	if err == nil {
		b.Conn = conn
	}
	b.prepare()
	return b
}

// retire closes a remote backend no longer routed to once its calls end
// (at most drainRemoteFor).
func (r *Router) retire(b *Backend) {
	ctx, cancel := context.WithTimeout(context.Background(), drainRemoteFor)
	defer cancel()
	b.Wait(ctx)
	b.rcMu.Lock()
	c := b.rc
	b.rc = nil
	b.rcMu.Unlock()
	if c != nil {
		c.close(nil)
	}
	if b.Conn != nil {
		_ = b.Conn.Close()
	}
}

// drainRemoteFor bounds how long calls in flight on a remote instance that
// is no longer routed to keep its connection open.
const drainRemoteFor = time.Minute

// loadRemoteFiles fetches the descriptors of p's services from the remote
// instance b, through its node's relay, so that reflection here answers
// for a plugin that runs elsewhere only. The peer's answer is validated as
// a plugin's is (LoadDescriptors): it must link and define the services.
// One load runs at a time per plugin; a plugin that has descriptors by
// then is left as it is.
func (r *Router) loadRemoteFiles(p *plugin, b *Backend, services []string) *protoregistry.Files {
	if b.Conn == nil || len(services) == 0 {
		return nil
	}
	p.loadMu.Lock()
	defer p.loadMu.Unlock()
	if files := p.files.Load(); files != nil {
		return files
	}
	ctx, cancel := context.WithTimeout(context.Background(), loadFilesTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, PluginHeader, p.name)
	files, err := LoadDescriptors(ctx, b.Conn, services)
	if err != nil {
		r.log.Warn("could not load a remote plugin's descriptors; reflection here does not describe its services until it can", "plugin", p.name, "node", b.Node, "error", err)
		return nil
	}
	// Proxied calls to b stay bidi streams (its Files are fixed once
	// routed to); relayed calls need no descriptors.
	p.files.CompareAndSwap(nil, files)
	return p.files.Load()
}

// remoteFiles returns the descriptors of plugin, loading them from one of
// its remote instances if this node has none yet; nil if it cannot.
func (r *Router) remoteFiles(plugin string) *protoregistry.Files {
	r.mu.Lock()
	p := r.plugins[plugin]
	var services []string
	var b *Backend
	if p != nil {
		if bs := p.routable.Load(); bs != nil && len(*bs) > 0 {
			b = (*bs)[0]
			if e := p.remotes[b.Node]; e != nil {
				services = e.Services
			}
		}
	}
	r.mu.Unlock()
	if p == nil {
		return nil
	}
	if files := p.files.Load(); files != nil || b == nil {
		return files
	}
	return r.loadRemoteFiles(p, b, services)
}

// loadFilesTimeout bounds loading a remote plugin's descriptors.
const loadFilesTimeout = 10 * time.Second

// PluginHeader names, on a relayed call from another node, the plugin
// whose own reflection service the call is for: reflection is not one of
// a plugin's declared services, so its path alone does not say which.
const PluginHeader = "plughost-plugin"

// pick returns the instance a new call to p goes to, counted in flight,
// or nil: the local one, else the remote one with the fewest calls in
// flight, passing over skip and, while others are up, those recently
// unreachable.
func (p *plugin) pick(skip *Backend) *Backend {
	// A local backend switched away before the count went up may be
	// drained already: pickLocal checks it still serves.
	if b := p.pickLocal(); b != nil {
		return b
	}
	b := p.pickRemote(skip)
	if b != nil {
		b.acquire()
	}
	return b
}

// pickLocal returns p's local instance, counted in flight, or nil.
func (p *plugin) pickLocal() *Backend {
	for {
		b := p.backend.Load()
		if b == nil {
			return nil
		}
		b.acquire()
		if p.backend.Load() == b {
			return b
		}
		b.release()
	}
}

// pickRemote is pick among p's remote instances, not counted.
func (p *plugin) pickRemote(skip *Backend) *Backend {
	bs := p.routable.Load()
	if bs == nil || len(*bs) == 0 {
		return nil
	}
	all := *bs
	start := int(p.turn.Add(1))
	now := time.Now().UnixNano()
	var best, fallback *Backend
	for i := range all {
		b := all[(start+i)%len(all)]
		if b == skip {
			continue
		}
		if b.downUntil.Load() > now {
			if fallback == nil {
				fallback = b
			}
			continue
		}
		if best == nil || b.InFlight() < best.InFlight() {
			best = b
		}
	}
	if best == nil {
		return fallback
	}
	return best
}

// upBesides reports whether p has a local instance, or a remote one other
// than b that was not unreachable recently.
func (p *plugin) upBesides(b *Backend) bool {
	if p.backend.Load() != nil {
		return true
	}
	bs := p.routable.Load()
	if bs == nil {
		return false
	}
	now := time.Now().UnixNano()
	for _, o := range *bs {
		if o != b && o.downUntil.Load() <= now {
			return true
		}
	}
	return false
}

// hasRemotes reports whether p has routable instances on other nodes.
func (p *plugin) hasRemotes() bool {
	bs := p.routable.Load()
	return bs != nil && len(*bs) > 0
}
