// Package netlimit bounds what a listener lets in: it keeps accepting when
// the process runs out of file descriptors (or the kernel of socket
// memory), backing off as net/http does instead of failing, and it refuses
// connections past a total and a per-client-address limit by closing them
// at once. Connections that have not yet made their first call (or
// finished their handshake: see Established) have a smaller budget of
// their own, and new connections are taken at a bounded rate, so that a
// flood of idle connections leaves established clients their share.
//
// Wrap any net.Listener before the server that uses it (the agent's API
// relay, its HTTP server, a cluster RPC listener), and wrap TLS around the
// result, so that a refused connection costs no handshake:
//
//	ln = netlimit.Wrap(ln, netlimit.Config{Name: "api", MaxConns: 4096, MaxConnsPerClient: 256, Logger: log})
//	ln = tls.NewListener(ln, tlsConfig)
package netlimit

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"
)

// Backoff bounds of Accept after a resource shortage: net/http's.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// warnEvery is the least time between two warnings of one kind, so that a
// flapping shortage or a client hammering at its limit logs rarely.
const warnEvery = time.Minute

// Config says what a Listener lets in. Zero limits are unlimited.
type Config struct {
	// Name names the listener in log lines and Stats ("api", "http").
	Name string
	// MaxConns bounds the connections open at once. A connection past it
	// is closed as soon as it is accepted.
	MaxConns int
	// MaxConnsPerClient bounds the connections open at once from one
	// client IP address (TCP only; other addresses are not counted).
	MaxConnsPerClient int
	// Limits name the configuration keys of MaxConns and
	// MaxConnsPerClient in warnings; empty: "max_conns" and
	// "max_conns_per_client".
	MaxConnsKey, MaxConnsPerClientKey string
	// MaxPending bounds the connections open at once that are not yet
	// Established (no first call, or a handshake not done), and
	// MaxPendingPerClient those from one client IP address. They are
	// counted in MaxConns and MaxConnsPerClient too: pending connections
	// hold at most MaxPending of MaxConns. A new connection past
	// MaxPending closes the oldest pending one (past MaxPendingPerClient,
	// the client's oldest), so a flood cannot keep a new client out: with
	// AcceptRate, each connection has at least MaxPending/AcceptRate
	// seconds to make its first call. 0: no bound of their own.
	MaxPending, MaxPendingPerClient int
	// MaxPendingKey and MaxPendingPerClientKey name their configuration
	// keys in warnings; empty: "max_pending_conns" and
	// "max_pending_conns_per_client".
	MaxPendingKey, MaxPendingPerClientKey string
	// AcceptRate bounds the connections a second Accept takes, with bursts
	// of AcceptBurst (at least 1). Connections past it wait in the
	// kernel's accept queue, costing the process nothing, and past that
	// queue the kernel refuses them. 0: unbounded.
	AcceptRate  float64
	AcceptBurst int
	// Logger receives one warning per resource shortage episode and at
	// most one a minute for refused connections. Default: none.
	Logger hclog.Logger
}

// Stats counts what a Listener did.
type Stats struct {
	// Open is the connections accepted and not yet closed, and Pending
	// those of them not yet Established.
	Open, Pending int
	// EvictedPending counts the pending connections closed to make room
	// for a newer one (MaxPending), and EvictedPendingPerClient those
	// closed for a newer one of their client (MaxPendingPerClient).
	EvictedPending, EvictedPendingPerClient uint64
	// RefusedMaxConns and RefusedPerClient count the connections closed at
	// once for MaxConns and for MaxConnsPerClient.
	RefusedMaxConns  uint64
	RefusedPerClient uint64
	// AcceptShortages counts the accepts that failed for want of file
	// descriptors or kernel memory, each followed by a backoff.
	AcceptShortages uint64
}

// Listener is a net.Listener with limits. Its methods are safe for
// concurrent use.
type Listener struct {
	net.Listener
	cfg Config
	log hclog.Logger

	mu               sync.Mutex
	open             int
	pending          list.List // of *conn not yet established, oldest first
	perClient        map[string]int
	pendingPerClient map[string]*list.List // of *conn by client, oldest first

	refusedMax, refusedClient, evicted, evictedClient, shortages atomic.Uint64

	limiter *rate.Limiter // nil: no AcceptRate
	stop    context.CancelFunc
	stopped context.Context

	warnMu   sync.Mutex
	lastWarn map[string]time.Time // by kind

	done      chan struct{}
	closeOnce sync.Once
}

// Wrap returns ln with the limits of cfg.
func Wrap(ln net.Listener, cfg Config) *Listener {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.MaxConnsKey == "" {
		cfg.MaxConnsKey = "max_conns"
	}
	if cfg.MaxConnsPerClientKey == "" {
		cfg.MaxConnsPerClientKey = "max_conns_per_client"
	}
	if cfg.MaxPendingKey == "" {
		cfg.MaxPendingKey = "max_pending_conns"
	}
	if cfg.MaxPendingPerClientKey == "" {
		cfg.MaxPendingPerClientKey = "max_pending_conns_per_client"
	}
	l := &Listener{
		Listener:         ln,
		cfg:              cfg,
		log:              cfg.Logger,
		perClient:        make(map[string]int),
		pendingPerClient: make(map[string]*list.List),
		lastWarn:         make(map[string]time.Time),
		done:             make(chan struct{}),
	}
	l.stopped, l.stop = context.WithCancel(context.Background())
	if cfg.AcceptRate > 0 {
		l.limiter = rate.NewLimiter(rate.Limit(cfg.AcceptRate), max(cfg.AcceptBurst, 1))
	}
	return l
}

// Accept returns the next connection within the limits. It waits out a
// shortage of file descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM)
// with a backoff from 5 ms doubling to 1 s, and closes connections past
// the limits itself; it returns an error only when the listener fails
// otherwise or is closed.
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	var since time.Time // start of the current shortage
	for {
		if l.limiter != nil {
			if err := l.limiter.Wait(l.stopped); err != nil {
				return nil, net.ErrClosed
			}
		}
		c, err := l.Listener.Accept()
		if err != nil {
			if !Shortage(err) {
				return nil, err
			}
			l.shortages.Add(1)
			if since.IsZero() {
				since = time.Now()
				l.warn("shortage", "cannot accept connections: "+describeShortage(err)+"; retrying with backoff until connections close",
					"listener", l.cfg.Name, "open", l.Stats().Open, "error", err)
			}
			delay = min(max(2*delay, minBackoff), maxBackoff)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				return nil, net.ErrClosed
			}
			continue
		}
		if !since.IsZero() {
			l.log.Info("accepting connections again", "listener", l.cfg.Name, "after", time.Since(since).Round(time.Millisecond))
			since, delay = time.Time{}, 0
		}
		if lc, ok := l.admit(c); ok {
			return lc, nil
		}
	}
}

// Close closes the listener; an Accept waiting out a shortage returns.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.stop()
	})
	return l.Listener.Close()
}

// Name is Config.Name.
func (l *Listener) Name() string { return l.cfg.Name }

// Stats returns what the listener did so far.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	open, pending := l.open, l.pending.Len()
	l.mu.Unlock()
	return Stats{
		Open:                    open,
		Pending:                 pending,
		RefusedMaxConns:         l.refusedMax.Load(),
		RefusedPerClient:        l.refusedClient.Load(),
		EvictedPending:          l.evicted.Load(),
		EvictedPendingPerClient: l.evictedClient.Load(),
		AcceptShortages:         l.shortages.Load(),
	}
}

// admit counts c in, as pending, or closes it if it is past a limit; past
// MaxPending it closes the oldest pending connection instead.
func (l *Listener) admit(c net.Conn) (net.Conn, bool) {
	client := clientOf(c.RemoteAddr())
	l.mu.Lock()
	var kind, msg string
	var refused *atomic.Uint64
	switch {
	case l.cfg.MaxConns > 0 && l.open >= l.cfg.MaxConns:
		kind, refused = "max_conns", &l.refusedMax
		msg = fmt.Sprintf("refusing connections: %d are open, the most %s allows (raise %s in the agent config if they are legitimate)",
			l.cfg.MaxConns, l.cfg.MaxConnsKey, l.cfg.MaxConnsKey)
	case l.cfg.MaxConnsPerClient > 0 && client != "" && l.perClient[client] >= l.cfg.MaxConnsPerClient:
		kind, refused = "per_client", &l.refusedClient
		msg = fmt.Sprintf("refusing connections from a client: it has %d open, the most %s allows (raise %s in the agent config if it is legitimate)",
			l.cfg.MaxConnsPerClient, l.cfg.MaxConnsPerClientKey, l.cfg.MaxConnsPerClientKey)
	}
	if refused != nil {
		l.mu.Unlock()
		refused.Add(1)
		refuse(c)
		l.warn(kind, msg, "listener", l.cfg.Name, "client", client)
		return nil, false
	}
	// Past a pending budget, the oldest pending connection (of the
	// client) makes room. Its owner sees it fail and closes it, which
	// frees its place in MaxConns.
	var oldest *conn
	kind, msg, evicted := "", "", &l.evicted
	mine := l.pendingPerClient[client]
	switch {
	case l.cfg.MaxPendingPerClient > 0 && client != "" && mine != nil && mine.Len() >= l.cfg.MaxPendingPerClient:
		oldest, kind, evicted = mine.Front().Value.(*conn), "pending_per_client", &l.evictedClient
		msg = fmt.Sprintf("closing a client's oldest connections without a first call to take its new ones: it has %d open, the most %s allows (raise %s in the agent config if it is legitimate)",
			l.cfg.MaxPendingPerClient, l.cfg.MaxPendingPerClientKey, l.cfg.MaxPendingPerClientKey)
	case l.cfg.MaxPending > 0 && l.pending.Len() >= l.cfg.MaxPending:
		oldest, kind = l.pending.Front().Value.(*conn), "max_pending"
		msg = fmt.Sprintf("closing the oldest connections without a first call to take new ones: %d are open, the most %s allows (raise %s in the agent config if they are legitimate)",
			l.cfg.MaxPending, l.cfg.MaxPendingKey, l.cfg.MaxPendingKey)
	}
	if oldest != nil {
		l.unpendLocked(oldest)
	}
	l.open++
	lc := &conn{Conn: c, l: l, client: client}
	lc.elem = l.pending.PushBack(lc)
	if client != "" {
		l.perClient[client]++
		if l.pendingPerClient[client] == nil {
			l.pendingPerClient[client] = list.New()
		}
		lc.celem = l.pendingPerClient[client].PushBack(lc)
	}
	l.mu.Unlock()
	if oldest != nil {
		evicted.Add(1)
		refuse(oldest.Conn)
		l.warn(kind, msg, "listener", l.cfg.Name, "client", oldest.client)
	}
	return lc, true
}

// unpendLocked takes c out of the pending budget, if it is in it. l.mu
// is held.
func (l *Listener) unpendLocked(c *conn) {
	if c.elem == nil {
		return
	}
	l.pending.Remove(c.elem)
	c.elem = nil
	if c.celem != nil {
		mine := l.pendingPerClient[c.client]
		mine.Remove(c.celem)
		c.celem = nil
		if mine.Len() == 0 {
			delete(l.pendingPerClient, c.client)
		}
	}
}

// release frees a closed connection's place.
func (l *Listener) release(c *conn) {
	l.mu.Lock()
	l.unpendLocked(c)
	l.open--
	if c.client != "" {
		if l.perClient[c.client]--; l.perClient[c.client] <= 0 {
			delete(l.perClient, c.client)
		}
	}
	l.mu.Unlock()
}

// Established marks c, a connection a Listener accepted (or one wrapping
// it that unwraps with NetConn, as *tls.Conn does), as past its first call
// or handshake: it leaves the pending budget. It does nothing to other
// connections, or when called again.
func Established(c net.Conn) {
	for c != nil {
		if lc, ok := c.(*conn); ok {
			lc.l.mu.Lock()
			lc.l.unpendLocked(lc)
			lc.l.mu.Unlock()
			return
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return
		}
		c = u.NetConn()
	}
}

// warn logs msg unless a warning of kind was logged in the last minute.
func (l *Listener) warn(kind, msg string, args ...any) {
	l.warnMu.Lock()
	now := time.Now()
	if last, ok := l.lastWarn[kind]; ok && now.Sub(last) < warnEvery {
		l.warnMu.Unlock()
		return
	}
	l.lastWarn[kind] = now
	l.warnMu.Unlock()
	l.log.Warn(msg, args...)
}

// refuse closes c at once, with a reset rather than a FIN where it can, so
// the socket holds no descriptor or TIME_WAIT state on this side.
func refuse(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// clientOf is the key a connection's client is counted under: its IP
// address, or "" for addresses that are not TCP.
func clientOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return ""
}

// Shortage reports whether err is an accept failing for want of file
// descriptors or kernel memory, which passes once connections close.
func Shortage(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// describeShortage says which limit err hit, and what raises it.
func describeShortage(err error) string {
	switch {
	case errors.Is(err, syscall.EMFILE):
		if n, ok := FileLimit(); ok {
			return fmt.Sprintf("the agent has used all %d file descriptors it may open (ulimit -n; LimitNOFILE= in a systemd unit)", n)
		}
		return "the agent has used all the file descriptors it may open (ulimit -n; LimitNOFILE= in a systemd unit)"
	case errors.Is(err, syscall.ENFILE):
		return "the system has no file descriptors left (sysctl fs.file-max)"
	}
	return "the kernel is out of memory for sockets"
}

// conn is an admitted connection: closing it frees its place.
type conn struct {
	net.Conn
	l      *Listener
	client string
	elem   *list.Element // in l.pending while not established; l.mu
	celem  *list.Element // in l.pendingPerClient[client], likewise
	once   sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
}

// NetConn returns the connection Wrap's listener accepted.
func (c *conn) NetConn() net.Conn { return c.Conn }

// SyscallConn gives the socket's raw connection, as *net.TCPConn's does,
// for servers that write to it without blocking.
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("netlimit: the connection has no raw socket")
}
