package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/internal/netlimit"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// The relay is how calls reach plugins at full speed. A gRPC proxy built
// on grpc.Server (UnknownServiceHandler, then a client stream to the
// plugin) runs every call through two full gRPC stacks in the agent: a
// server stream, a client stream, a handler goroutine and a writer
// goroutine on each connection between the caller and the plugin, and it
// more than halved throughput. The relay instead moves HTTP/2 frames:
// HEADERS are decoded to learn the method and encoded again for the
// other connection, DATA goes through as it is, each connection has one
// reader and one writer goroutine and no call has a goroutine of its own.
//
// Every connection to the agent's API address is accepted by the relay,
// which classifies it by its first call:
//   - a call to one of the agent's own API services (any service registered
//     on the agent's grpc.Server outside the grpc.* namespace: the operator
//     and store APIs) hands the whole connection to that server, replaying
//     the bytes read so far: operator and store clients talk to gRPC
//     directly. Should such a connection later call a plugin, the server's
//     unknown-service handler proxies the call (Router.handle);
//   - any other call (a plugin's service, or the agent's reflection) makes it a
//     relayed connection. Its calls to the agent's own services go to the
//     agent's server over an in-memory connection.
//
// Both ends of a connection handed over must agree on its settings: before
// classifying, the relay sends exactly the SETTINGS the agent's server
// sends (the flow-control windows of ServerOptions) and nothing else; the
// connection's window is raised only once it is relayed.
type relay struct {
	r      *Router
	local  *grpc.Server
	lis    net.Listener
	handed *handoffListener
	// ownServices are the services registered on local; native are those
	// of them whose callers are handed to it.
	ownServices map[string]bool
	native      map[string]bool

	// queued counts the DATA bytes held for peers that have no window for
	// them, on every connection; a stream whose data takes it past
	// maxQueued (Config.MaxUnreadBytes) is reset (see rstream.overrun).
	queued    atomic.Int64
	maxQueued int64
	quit      chan struct{} // closed by Stop: watchStalls returns

	mu       sync.Mutex
	accepted map[net.Conn]*h2conn // every open caller connection; nil until relayed
	localC   *h2conn              // the relay's connection to local
	stopping bool
}

// Serve accepts callers on ln for the agent's API: calls to plugins are
// relayed to them, calls to services registered on local (the agent's own
// gRPC server, built with ServerOptions) are served by it. It returns after
// Stop, or when ln fails.
func (r *Router) Serve(ln net.Listener, local *grpc.Server) error {
	rl := &relay{
		r: r, local: local, lis: ln,
		handed:      newHandoffListener(ln.Addr()),
		ownServices: make(map[string]bool),
		native:      make(map[string]bool),
		accepted:    make(map[net.Conn]*h2conn),
		quit:        make(chan struct{}),
		maxQueued:   int64(r.cfg.MaxUnreadBytes),
	}
	for name := range local.GetServiceInfo() {
		rl.ownServices[name] = true
		if !strings.HasPrefix(name, "grpc.") {
			rl.native[name] = true
		}
	}
	if !r.relay.CompareAndSwap(nil, rl) {
		return errors.New("router: Serve called twice")
	}
	go func() { _ = local.Serve(rl.handed) }()
	go rl.watchStalls(r.cfg.StalledReadTimeout)

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			rl.mu.Lock()
			stopping := rl.stopping
			rl.mu.Unlock()
			if stopping {
				return nil
			}
			// Out of file descriptors or socket memory: wait for
			// connections to close, as net/http does, rather than stop
			// serving. (A netlimit.Listener waits by itself and logs.)
			var ne net.Error
			if netlimit.Shortage(err) || errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if rl.track(nc, nil) {
			go rl.serveConn(nc)
		}
	}
}

// Stop stops accepting callers, tells every relayed connection to open no
// more calls (GOAWAY), waits until their calls end or ctx ends, then
// closes them. Stop the agent's grpc.Server after it.
func (r *Router) Stop(ctx context.Context) {
	rl := r.relay.Load()
	if rl == nil {
		return
	}
	rl.mu.Lock()
	if !rl.stopping {
		close(rl.quit)
	}
	rl.stopping = true
	conns := make(map[net.Conn]*h2conn, len(rl.accepted))
	for nc, c := range rl.accepted {
		conns[nc] = c
	}
	rl.mu.Unlock()
	_ = rl.lis.Close()

	for nc, c := range conns {
		if c == nil {
			_ = nc.Close() // not classified yet: no call started
			continue
		}
		c.mu.Lock()
		if !c.closed {
			c.goAway = true
			_ = c.wfr.WriteGoAway(c.lastID, http2.ErrCodeNo, nil)
			// Its answer says the caller read the GOAWAY: calls it opened
			// before have arrived, and are served or refused, not cut
			// off by the close (another node's relay then sends them
			// elsewhere).
			_ = c.wfr.WritePing(false, goAwayPing)
		}
		c.mu.Unlock()
		c.kick()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for busy := true; busy; {
		busy = false
		for _, c := range conns {
			if c != nil {
				c.mu.Lock()
				busy = busy || (!c.closed && (len(c.streams) > 0 || !c.goAwayAcked))
				c.mu.Unlock()
			}
		}
		if busy {
			select {
			case <-ctx.Done():
				busy = false
			case <-tick.C:
			}
		}
	}
	for _, c := range conns {
		if c != nil {
			c.close(nil)
		}
	}
	rl.mu.Lock()
	lc := rl.localC
	rl.mu.Unlock()
	if lc != nil {
		lc.close(nil)
	}
}

// serveConn reads a caller's connection up to its first call, then hands
// it to the agent's server or relays it. Until then it answers SETTINGS
// and PING itself, bounds what it reads (maxBeforeCallBytes) and how long
// the connection may wait (Config.FirstCallTimeout).
func (rl *relay) serveConn(nc net.Conn) {
	rec := &recorder{r: nc, on: true, max: maxBeforeCallBytes}
	c := newH2conn(rl, callerSide, nc, bufio.NewReaderSize(rec, readBufferBytes), "caller "+nc.RemoteAddr().String())
	forget := func() {
		rl.mu.Lock()
		delete(rl.accepted, nc)
		rl.mu.Unlock()
		_ = nc.Close()
	}
	timeout := rl.r.cfg.FirstCallTimeout
	_ = nc.SetDeadline(time.Now().Add(timeout))
	// send writes what the relay has for the caller; nothing else writes
	// to the connection before its first call.
	send := func() bool {
		c.mu.Lock()
		out := c.out
		c.out = nil
		c.mu.Unlock()
		if len(out) == 0 {
			return true
		}
		_, err := nc.Write(out)
		return err == nil
	}
	// goodbye closes the connection, telling the caller why.
	goodbye := func(code http2.ErrCode, why string) {
		c.mu.Lock()
		_ = c.wfr.WriteGoAway(0, code, []byte(why))
		c.mu.Unlock()
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
		send()
		forget()
	}
	// gRPC clients wait for the server's settings before their first call.
	// They are the agent's server's own (see ServerOptions), in its order.
	c.mu.Lock()
	_ = c.wfr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrameBytes},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: maxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: relayStreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListBytes})
	c.mu.Unlock()
	if !send() {
		forget()
		return
	}
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c.br, preface); err != nil || string(preface) != http2.ClientPreface {
		forget() // not an HTTP/2 client
		return
	}

	var acks, pings int
	for {
		f, err := c.hr.readFrame(c.fr)
		var ce http2.ConnectionError
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			goodbye(http2.ErrCodeNo, fmt.Sprintf("no call within %v", timeout))
			return
		case errors.Is(err, errTooMuchBeforeCall):
			goodbye(http2.ErrCodeEnhanceYourCalm, fmt.Sprintf("more than %d bytes before the first call", maxBeforeCallBytes))
			return
		case errors.As(err, &ce):
			goodbye(http2.ErrCode(ce), "")
			return
		default:
			forget()
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				break // answers queued before it may still wait to go out
			}
			if err := f.ForeachSetting(func(s http2.Setting) error { return s.Valid() }); err != nil {
				var ce http2.ConnectionError
				errors.As(err, &ce)
				goodbye(http2.ErrCode(ce), "")
				return
			}
			c.mu.Lock()
			c.applySettingsLocked(f)
			_ = c.wfr.WriteSettingsAck()
			c.mu.Unlock()
			acks++
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				c.sendWin += int64(f.Increment)
			}
		case *http2.PingFrame:
			if f.IsAck() {
				break
			}
			c.mu.Lock()
			_ = c.wfr.WritePing(true, f.Data)
			c.mu.Unlock()
			pings++
			// A client that pings keeps its idle connection alive.
			_ = nc.SetDeadline(time.Now().Add(timeout))
		case *http2.MetaHeadersFrame:
			_ = nc.SetDeadline(time.Time{})
			if !send() {
				forget()
				return
			}
			rl.classified(c, rec, f, acks, pings)
			return
		case *http2.GoAwayFrame:
			forget()
			return
		}
		// Answers go out once no whole frame waits to be read, so that a
		// burst of frames gets its answers in one write.
		if !frameBuffered(c.br) && !send() {
			forget()
			return
		}
	}
}

// frameBuffered reports whether br holds a whole frame, which reading
// takes without waiting for the peer.
func frameBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	if len(b) < 9 {
		return false
	}
	return len(b) >= 9+(int(b[0])<<16|int(b[1])<<8|int(b[2]))
}

// watchStalls resets the calls whose caller has read none of the data the
// relay holds for it for timeout, until Stop: such a caller holds its
// plugin's stream, and memory in the agent, for nothing.
func (rl *relay) watchStalls(timeout time.Duration) {
	tick := time.NewTicker(min(max(timeout/4, 10*time.Millisecond), time.Second))
	defer tick.Stop()
	var stalled []*rstream
	for {
		select {
		case <-rl.quit:
			return
		case <-tick.C:
		}
		rl.mu.Lock()
		conns := make([]*h2conn, 0, len(rl.accepted))
		for _, c := range rl.accepted {
			if c != nil {
				conns = append(conns, c)
			}
		}
		rl.mu.Unlock()
		now := time.Now()
		for _, c := range conns {
			c.mu.Lock()
			for _, h := range c.blocked {
				if !h.closed && now.Sub(h.since) >= timeout {
					stalled = append(stalled, h.st)
				}
			}
			c.mu.Unlock()
			rl.closeIdle(c, now)
		}
		var t touched
		for i, st := range stalled {
			st.overrun(&t, &st.caller, "")
			stalled[i] = nil
		}
		stalled = stalled[:0]
		t.flush()
	}
}

// idleGoAwayWait is how long a caller connection closed for its idle
// timeout may take to read the relay's GOAWAY before it is closed anyway.
const idleGoAwayWait = 10 * time.Second

// closeIdle ends a caller connection that has had no call open for
// Config.IdleTimeout: it sends GOAWAY (NO_ERROR, "idle") and a PING, and
// once the caller answered it (so no call of its is on the way) and no call
// is open, or idleGoAwayWait passed, closes it. A gRPC client dials again
// at its next call. Called from watchStalls' loop, at most once a second.
func (rl *relay) closeIdle(c *h2conn, now time.Time) {
	idle := rl.r.cfg.IdleTimeout
	if idle <= 0 {
		return
	}
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return
	case !c.idleGoAway.IsZero():
		done := (c.goAwayAcked && len(c.streams) == 0) || now.Sub(c.idleGoAway) >= idleGoAwayWait
		c.mu.Unlock()
		if done {
			c.close(nil)
		}
		return
	case c.goAway:
		c.mu.Unlock() // stopping: Stop closes it
		return
	case len(c.streams) > 0 || c.lastID != c.idleLastID || c.idleSince.IsZero():
		c.idleSince, c.idleLastID = now, c.lastID
		c.mu.Unlock()
		return
	case now.Sub(c.idleSince) < idle:
		c.mu.Unlock()
		return
	}
	c.goAway = true
	c.idleGoAway = now
	_ = c.wfr.WriteGoAway(c.lastID, http2.ErrCodeNo, []byte(fmt.Sprintf("idle for %v (conn_idle_timeout)", idle)))
	_ = c.wfr.WritePing(false, goAwayPing)
	c.mu.Unlock()
	c.kick()
}

// shed resets calls until the relay holds no more than maxQueued: first
// those whose callers have waited longest for window, then h, whose data
// took it past, if no caller's data is waiting longer. A caller that reads
// only loses its call if the relay is full of its own data.
func (rl *relay) shed(t *touched, h *half) {
	for range 64 {
		if rl.queued.Load() <= rl.maxQueued {
			return
		}
		oldest := rl.stalest()
		if oldest == nil || oldest == h {
			break
		}
		oldest.st.overrun(t, oldest, "")
	}
	h.st.overrun(t, h, fmt.Sprintf("the agent already holds its limit of %d MiB of data that callers or plugins have not read", rl.maxQueued>>20))
}

// stalest returns the caller half whose data has waited longest for
// window, or nil.
func (rl *relay) stalest() *half {
	rl.mu.Lock()
	conns := make([]*h2conn, 0, len(rl.accepted))
	for _, c := range rl.accepted {
		if c != nil {
			conns = append(conns, c)
		}
	}
	rl.mu.Unlock()
	var oldest *half
	var since time.Time
	for _, c := range conns {
		c.mu.Lock()
		for _, h := range c.blocked {
			if !h.closed && (oldest == nil || h.since.Before(since)) {
				oldest, since = h, h.since
			}
		}
		c.mu.Unlock()
	}
	return oldest
}

// track records an accepted connection (c once it is classified) so that
// Stop can reach it. While the relay stops it closes nc instead and says
// false.
func (rl *relay) track(nc net.Conn, c *h2conn) bool {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.stopping {
		_ = nc.Close()
		return false
	}
	rl.accepted[nc] = c
	return true
}

// classified takes a caller's connection on from its first call, f. The
// relay answered the acks SETTINGS frames and pings PINGs read before it.
func (rl *relay) classified(c *h2conn, rec *recorder, f *http2.MetaHeadersFrame, acks, pings int) {
	nc := c.nc
	// Past its first call, the connection leaves the listener's budget of
	// connections without one (internal/netlimit).
	netlimit.Established(nc)
	if rl.native[serviceOf(f.PseudoValue("path"))] {
		rl.mu.Lock()
		delete(rl.accepted, nc) // the agent's server owns it now
		rl.mu.Unlock()
		// The server reads the connection from its start, without the
		// PINGs already answered, and its acknowledgements of the
		// SETTINGS already acknowledged are dropped: each is answered once.
		read := withoutPings(rec.stop(), pings)
		_ = rl.handed.push(&replayConn{Conn: nc, r: io.MultiReader(bytes.NewReader(read), nc), skipAcks: acks})
		return
	}
	rec.stop()
	c.mu.Lock()
	_ = c.wfr.WriteWindowUpdate(0, relayConnWindow-initialWindow)
	c.recvWin = relayConnWindow
	c.mu.Unlock()

	if !rl.track(nc, c) {
		return
	}
	go c.writeLoop()
	var t touched
	t.add(c) // the window update
	c.handle(&t, f)
	t.flush()
	c.readLoop()
}

// forget drops a closed connection from the relay's books.
func (rl *relay) forget(c *h2conn) {
	if c.side == callerSide {
		rl.mu.Lock()
		delete(rl.accepted, c.nc)
		rl.mu.Unlock()
		return
	}
	rl.forgetBackendConn(c)
}

// forgetBackendConn makes the next call to c's backend open a new
// connection.
func (rl *relay) forgetBackendConn(c *h2conn) {
	if b := c.backend; b != nil {
		b.rcMu.Lock()
		if b.rc == c {
			b.rc = nil
		}
		b.rcMu.Unlock()
		return
	}
	rl.mu.Lock()
	if rl.localC == c {
		rl.localC = nil
	}
	rl.mu.Unlock()
}

// newStream starts a call a caller opened with header block f.
func (rl *relay) newStream(t *touched, c *h2conn, f *http2.MetaHeadersFrame) {
	id := f.StreamID
	c.mu.Lock()
	if id%2 == 0 || id <= c.lastID {
		c.mu.Unlock()
		c.fail(http2.ConnectionError(http2.ErrCodeProtocol))
		return
	}
	c.lastID = id
	if c.goAway || c.closed || len(c.streams) >= maxConcurrentStreams {
		_ = c.wfr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		c.mu.Unlock()
		t.add(c)
		return
	}
	st := newRstream(c, id, f.StreamEnded())
	// The plugin is set before the stream is visible: finish reads it.
	var refuse error
	switch service := serviceOf(f.PseudoValue("path")); {
	case c.fromPeer:
		st.p, refuse = rl.peerTarget(service, f.Fields)
	case !rl.ownServices[service]:
		st.p = (*rl.r.routes.Load())[service]
	}
	c.streams[id] = st
	c.mu.Unlock()
	if refuse != nil {
		st.fail(t, refuse)
		return
	}
	rl.route(t, st, f.Fields, f.StreamEnded())
}

// route sends a new call to an instance of the plugin that serves its
// service (st.p), or to the agent's own server: for the agent's services
// and for unknown ones, which its unknown-service handler answers.
func (rl *relay) route(t *touched, st *rstream, fields []hpack.HeaderField, end bool) {
	if p := st.p; p != nil {
		// Calls to the agent's own services are authorized by its server;
		// a call another node relayed was authorized there.
		peer := st.caller.c.fromPeer
		if !peer {
			release, err := rl.r.authorizeFields(fields, p, pathOf(fields), func(err error) {
				// The caller's token was revoked: end the call, off the
				// resolver's goroutine.
				go func() {
					var t touched
					defer t.flush()
					st.fail(&t, err)
				}()
			})
			if err != nil {
				st.fail(t, err)
				return
			}
			st.setRelease(release)
		}
		bf := st.caller.c.hr.cache.backendFieldsOf(fields)
		var b *Backend
		if peer {
			b = p.pickLocal()
		} else {
			b = p.pick(nil)
		}
		switch {
		case b != nil && (b.Node == "" || b.connReady()):
			rl.attach(t, st, p, b, bf, end)
		case b != nil:
			// Connecting to another node takes a round trip or more: not
			// on the reader of the caller's connection.
			go func() {
				var t touched
				defer t.flush()
				rl.attach(&t, st, p, b, bf, end)
			}()
		case !p.waits(peer):
			st.fail(t, rl.r.errNoRoute(p, peer))
		default:
			go rl.hold(st, p, bf, end, nil)
		}
		return
	}
	c, err := rl.localConn()
	if err != nil {
		st.fail(t, status.Errorf(codes.Unavailable, "the agent's own server is unavailable: %v", err))
		return
	}
	if err := rl.open(t, st, c, nil, withCaller(fields, st.caller.c.nc.RemoteAddr()), end); err != nil {
		st.fail(t, err)
	}
}

// withCaller returns fields with storev1.CallerAddrHeader set to addr, the
// caller's address, replacing any the caller sent: the agent's server
// counts per-client limits by it on the relay's in-memory connection.
func withCaller(fields []hpack.HeaderField, addr net.Addr) []hpack.HeaderField {
	out := make([]hpack.HeaderField, 0, len(fields)+1)
	for _, f := range fields {
		if f.Name != storev1.CallerAddrHeader {
			out = append(out, f)
		}
	}
	return append(out, hpack.HeaderField{Name: storev1.CallerAddrHeader, Value: addr.String()})
}

// hold waits, on its own goroutine, for p to get a backend (see
// SetHolding and SetFailover) or, when gone is set, for an instance other
// than gone, which could not be reached (see attach), then opens the call
// on it; the caller's deadline and a reset end the wait.
func (rl *relay) hold(st *rstream, p *plugin, fields []hpack.HeaderField, end bool, gone *Backend) {
	ctx, cancel := context.WithCancel(context.Background())
	for _, f := range fields {
		if f.Name == "grpc-timeout" {
			if d, ok := parseTimeout(f.Value); ok {
				cancel()
				ctx, cancel = context.WithTimeout(context.Background(), d)
			}
		}
	}
	defer cancel()
	st.mu.Lock()
	if st.finished {
		st.mu.Unlock()
		return
	}
	st.cancel = cancel
	st.mu.Unlock()

	var (
		b    *Backend
		held time.Duration
		err  error
	)
	if gone == nil {
		b, held, err = rl.r.acquire(ctx, p, st.caller.c.fromPeer)
	} else {
		b, held, err = rl.r.reroute(ctx, p, gone, st.rerouteBy)
	}
	if held > 0 {
		p.stats.recordHeld(held)
		st.held += held
	}
	var t touched
	defer t.flush()
	if err != nil {
		st.fail(&t, err)
		return
	}
	if dl, ok := ctx.Deadline(); ok {
		// The backend gets what is left of the caller's deadline.
		fields = withField(fields, "grpc-timeout", formatTimeout(time.Until(dl)))
	}
	rl.attach(&t, st, p, b, fields, end)
}

// backendFields are the header fields of a call as a plugin gets them:
// those that describe the caller's connection to the agent (its authority
// and user agent, and grpc- headers gRPC's wire format does not define)
// stay behind, as they do when the agent's gRPC server proxies a call.
func backendFields(fields []hpack.HeaderField) []hpack.HeaderField {
	out := make([]hpack.HeaderField, 0, len(fields))
	for _, f := range fields {
		switch {
		case f.Name == ":authority":
			f.Value = backendAuthority
		case f.Name == "user-agent":
			f.Value = relayUserAgent
		case strings.HasPrefix(f.Name, "grpc-") && !wireHeaders[f.Name]:
			continue
		case isCredential(f.Name):
			continue // the caller's token is the agent's to check, not the plugin's to see
		}
		out = append(out, f)
	}
	return out
}

// pathOf is a call's :path.
func pathOf(fields []hpack.HeaderField) string {
	for _, f := range fields {
		if f.Name == ":path" {
			return f.Value
		}
	}
	return ""
}

// backendAuthority is the :authority of relayed calls: the name go-plugin's
// TLS certificates are made for.
const backendAuthority = "localhost"

// relayUserAgent is the user-agent of relayed calls.
const relayUserAgent = "plughost-router"

// wireHeaders are the grpc- headers of gRPC's wire format that describe the
// call itself and must reach the plugin with the frames they describe.
var wireHeaders = map[string]bool{
	"grpc-timeout":         true,
	"grpc-encoding":        true,
	"grpc-accept-encoding": true,
}

// withField returns fields with name set to value, replacing it in a copy.
func withField(fields []hpack.HeaderField, name, value string) []hpack.HeaderField {
	out := make([]hpack.HeaderField, len(fields))
	copy(out, fields)
	for i := range out {
		if out[i].Name == name {
			out[i].Value = value
		}
	}
	return out
}

// attach opens the call on backend b, an instance of p, which has it
// counted in flight. When b cannot be reached nothing of the call reached
// it, so it goes to another instance (pick), up to maxAttempts in all.
func (rl *relay) attach(t *touched, st *rstream, p *plugin, b *Backend, fields []hpack.HeaderField, end bool) {
	for attempt := 1; ; attempt++ {
		c, err := rl.backendConn(b)
		if err == nil {
			if err = rl.open(t, st, c, b, fields, end); err == nil {
				return
			}
			if b.Node == "" {
				b.release()
				st.fail(t, err)
				return
			}
			// The peer's connection went away or is full: nothing of the
			// call went out on it, and the next dials anew.
			rl.forgetBackendConn(c)
		}
		b.release()
		var next *Backend
		if b.Node != "" {
			b.downUntil.Store(time.Now().Add(peerDownFor).UnixNano())
			if attempt < maxAttempts && p != nil && !st.caller.c.fromPeer {
				next = p.pick(b)
			}
		}
		if next == nil || next == b {
			if next != nil {
				next.release()
			}
			if b.Node != "" && p != nil && !st.caller.c.fromPeer && st.mayReroute(rl.r.cfg.HoldTimeout) {
				// Its only instance is on a node that went away (killed,
				// and gossip has not declared it failed yet): nothing of
				// the call reached it, so it waits, as a held call does,
				// for the cluster to route the plugin elsewhere, not on
				// the caller's reader.
				go rl.hold(st, p, fields, end, b)
				return
			}
			st.fail(t, errBackendConn(b, err))
			return
		}
		rl.r.log.Debug("instance unreachable; the call goes to another", "plugin", b.Plugin, "node", b.Node, "to", next.Node, "error", err)
		b = next
	}
}

// maxAttempts bounds the instances a call tries to reach.
const maxAttempts = 3

// open opens st's backend half on connection c, passes on the data held
// for it, and marks it attached. b, if not nil, is released when the call
// ends. It returns an Unavailable error, having sent nothing and released
// nothing, when c takes no new call; a call that ended meanwhile is let be.
func (rl *relay) open(t *touched, st *rstream, c *h2conn, b *Backend, fields []hpack.HeaderField, end bool) error {
	st.mu.Lock()
	if st.finished {
		st.mu.Unlock()
		if b != nil {
			b.release()
		}
		return nil
	}
	c.mu.Lock()
	var refuse error
	switch {
	case c.closed || c.goAway:
		refuse = fmt.Errorf("%s is going away", c.what)
	case uint32(len(c.streams)) >= c.peerMaxStreams:
		refuse = fmt.Errorf("%s takes at most %d calls at once", c.what, c.peerMaxStreams)
	}
	if refuse != nil {
		c.mu.Unlock()
		st.mu.Unlock()
		return status.Error(codes.Unavailable, refuse.Error())
	}
	id := uint32(1)
	if c.lastID > 0 {
		id = c.lastID + 2
	}
	c.lastID = id
	h := &st.backend
	h.c, h.id, h.sendWin = c, id, c.peerInitWin
	c.streams[id] = st
	c.writeHeadersLocked(id, fields, end)
	if end {
		h.sentEnd = true
	}
	c.mu.Unlock()
	t.add(c)
	st.b = b
	// Held data goes out before the caller's reader may pass on more: it
	// sees attached only after this, under st.mu.
	ended := end
	for _, hc := range st.heldData {
		// Held data is within the caller's stream window: too little to
		// count against maxQueued.
		e, _ := st.passData(t, &st.caller, hc.data, hc.end, hc.flow)
		ended = e || ended
	}
	st.heldData = nil
	st.attached.Store(true)
	st.mu.Unlock()
	if ended {
		st.sentEnd(t, h)
	}
	return nil
}

// dialTimeout bounds opening a relay connection to a plugin instance.
const dialTimeout = 5 * time.Second

// backendConn returns the relay's connection to b, opening it if needed.
func (rl *relay) backendConn(b *Backend) (*h2conn, error) {
	b.rcMu.Lock()
	defer b.rcMu.Unlock()
	// A connection to another node that has as many calls as the peer
	// takes at once retires: the next opens beside it.
	if c := b.rc; c != nil && c.usable() && (b.Node == "" || !c.retireIfFull()) {
		return c, nil
	}
	if b.Dial == nil {
		return nil, errors.New("the router has no way to connect to it (Backend.Dial is nil)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	nc, err := b.Dial(ctx)
	if err != nil {
		return nil, err
	}
	what := "plugin " + b.Plugin + " " + b.Version
	if b.Node == "" {
		b.rc = rl.newBackendConn(nc, b, what)
		return b.rc, nil
	}
	// Another node's relay: no call goes out before the peer has shown it
	// serves the connection (its SETTINGS), so that a peer that closes it
	// at once, stopping, has processed nothing and the call can go to
	// another instance.
	c := rl.newBackendConn(nc, b, what+" on node "+b.Node)
	select {
	case <-c.settled:
	case <-c.done:
		return nil, fmt.Errorf("node %s closed the connection before serving it", b.Node)
	case <-ctx.Done():
		c.close(nil)
		return nil, fmt.Errorf("node %s did not serve the connection within %v", b.Node, dialTimeout)
	}
	b.rc = c
	return b.rc, nil
}

// connReady reports whether the relay has a connection to b that takes a
// new call now, so that attaching to it does not wait for a dial.
func (b *Backend) connReady() bool {
	b.rcMu.Lock()
	c := b.rc
	b.rcMu.Unlock()
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && !c.goAway && uint32(len(c.streams)) < c.peerMaxStreams
}

// localConn returns the relay's in-memory connection to the agent's own
// server, opening it if needed.
func (rl *relay) localConn() (*h2conn, error) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if c := rl.localC; c != nil && c.usable() && !c.retireIfFull() {
		return c, nil
	}
	a, b := net.Pipe()
	if err := rl.handed.push(b); err != nil {
		return nil, err
	}
	rl.localC = rl.newBackendConn(a, nil, "the agent's own server")
	return rl.localC, nil
}

// newBackendConn starts HTTP/2 as the client on nc.
func (rl *relay) newBackendConn(nc net.Conn, b *Backend, what string) *h2conn {
	c := newH2conn(rl, backendSide, nc, bufio.NewReaderSize(nc, readBufferBytes), what)
	c.backend = b
	c.mu.Lock()
	c.out = append(c.out, http2.ClientPreface...)
	_ = c.wfr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: relayStreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListBytes})
	_ = c.wfr.WriteWindowUpdate(0, relayConnWindow-initialWindow)
	c.recvWin = relayConnWindow
	c.mu.Unlock()
	c.start()
	return c
}

// retireIfFull reports whether backend connection c has as many calls as
// its peer takes at once (the agent's server takes maxConcurrentStreams);
// if so, c takes no new calls and closes once its calls end.
func (c *h2conn) retireIfFull() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if uint32(len(c.streams)) < c.peerMaxStreams {
		return false
	}
	c.goAway = true
	return true
}

// usable reports whether new calls may open on c.
func (c *h2conn) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && !c.goAway
}

// recorder keeps a copy of what is read through it while on, so a
// connection read up to its first call can be replayed to another server.
// It keeps at most max bytes: past them reads fail with
// errTooMuchBeforeCall.
type recorder struct {
	r   io.Reader
	max int
	mu  sync.Mutex
	on  bool
	buf []byte
}

// errTooMuchBeforeCall is a recorder's error once it would keep more than
// its max.
var errTooMuchBeforeCall = errors.New("too many bytes before the first call")

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.on {
		if len(r.buf)+n > r.max {
			return 0, errTooMuchBeforeCall
		}
		r.buf = append(r.buf, p[:n]...)
	}
	return n, err
}

// stop ends recording and returns what was read.
func (r *recorder) stop() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = false
	b := r.buf
	r.buf = nil
	return b
}

// withoutPings returns b, what a client sent from its preface on, without
// its first n PING frames that are not acknowledgements.
func withoutPings(b []byte, n int) []byte {
	if n == 0 || len(b) < len(http2.ClientPreface) {
		return b
	}
	out := make([]byte, 0, len(b))
	out = append(out, b[:len(http2.ClientPreface)]...)
	rest := b[len(http2.ClientPreface):]
	for n > 0 && len(rest) >= 9 {
		size := 9 + (int(rest[0])<<16 | int(rest[1])<<8 | int(rest[2]))
		if len(rest) < size {
			break
		}
		if http2.FrameType(rest[3]) == http2.FramePing && http2.Flags(rest[4])&http2.FlagPingAck == 0 {
			n--
		} else {
			out = append(out, rest[:size]...)
		}
		rest = rest[size:]
	}
	return append(out, rest...)
}

// replayConn is a connection whose first bytes were already read: reads
// return them again, then go on from the connection. Its first skipAcks
// SETTINGS acknowledgements written are dropped: the relay sent them.
type replayConn struct {
	net.Conn
	r io.Reader

	mu       sync.Mutex // guards the fields below
	skipAcks int
	hdr      [9]byte // the header of the frame being written, as far as written
	nhdr     int
	left     int // bytes of the frame being written still to come
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *replayConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.skipAcks == 0 {
		return c.Conn.Write(p)
	}
	out := make([]byte, 0, len(p))
	rest := p
	for len(rest) > 0 && c.skipAcks > 0 {
		if c.left > 0 {
			k := min(len(rest), c.left)
			out = append(out, rest[:k]...)
			rest, c.left = rest[k:], c.left-k
			continue
		}
		k := copy(c.hdr[c.nhdr:], rest)
		rest, c.nhdr = rest[k:], c.nhdr+k
		if c.nhdr < len(c.hdr) {
			break
		}
		c.nhdr = 0
		h := c.hdr
		size := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
		if http2.FrameType(h[3]) == http2.FrameSettings && http2.Flags(h[4])&http2.FlagSettingsAck != 0 && size == 0 {
			c.skipAcks--
			continue
		}
		out = append(out, h[:]...)
		c.left = size
	}
	out = append(out, rest...)
	if len(out) > 0 {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// handoffListener hands connections to the agent's grpc.Server.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) push(c net.Conn) error {
	select {
	case l.ch <- c:
		return nil
	case <-l.done:
		_ = c.Close()
		return errors.New("the agent is shutting down")
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }
