// Package netlimit bounds what a listener lets in: it keeps accepting when
// the process runs out of file descriptors (or the kernel of socket
// memory), backing off as net/http does instead of failing, and it refuses
// connections past a total and a per-client-address limit by closing them
// at once.
//
// Wrap any net.Listener before the server that uses it (the agent's API
// relay, its HTTP server, a cluster RPC listener), and wrap TLS around the
// result, so that a refused connection costs no handshake:
//
//	ln = netlimit.Wrap(ln, netlimit.Config{Name: "api", MaxConns: 4096, MaxConnsPerClient: 256, Logger: log})
//	ln = tls.NewListener(ln, tlsConfig)
package netlimit

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
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
	// Logger receives one warning per resource shortage episode and at
	// most one a minute for refused connections. Default: none.
	Logger hclog.Logger
}

// Stats counts what a Listener did.
type Stats struct {
	// Open is the connections accepted and not yet closed.
	Open int
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

	mu        sync.Mutex
	open      int
	perClient map[string]int

	refusedMax, refusedClient, shortages atomic.Uint64

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
	return &Listener{
		Listener:  ln,
		cfg:       cfg,
		log:       cfg.Logger,
		perClient: make(map[string]int),
		lastWarn:  make(map[string]time.Time),
		done:      make(chan struct{}),
	}
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
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// Name is Config.Name.
func (l *Listener) Name() string { return l.cfg.Name }

// Stats returns what the listener did so far.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	open := l.open
	l.mu.Unlock()
	return Stats{
		Open:             open,
		RefusedMaxConns:  l.refusedMax.Load(),
		RefusedPerClient: l.refusedClient.Load(),
		AcceptShortages:  l.shortages.Load(),
	}
}

// admit counts c in, or closes it if it is past a limit.
func (l *Listener) admit(c net.Conn) (net.Conn, bool) {
	client := clientOf(c.RemoteAddr())
	l.mu.Lock()
	switch {
	case l.cfg.MaxConns > 0 && l.open >= l.cfg.MaxConns:
		l.mu.Unlock()
		l.refusedMax.Add(1)
		refuse(c)
		l.warn("max_conns", fmt.Sprintf("refusing connections: %d are open, the most %s allows (raise %s in the agent config if they are legitimate)",
			l.cfg.MaxConns, l.cfg.MaxConnsKey, l.cfg.MaxConnsKey), "listener", l.cfg.Name, "client", client)
		return nil, false
	case l.cfg.MaxConnsPerClient > 0 && client != "" && l.perClient[client] >= l.cfg.MaxConnsPerClient:
		l.mu.Unlock()
		l.refusedClient.Add(1)
		refuse(c)
		l.warn("per_client", fmt.Sprintf("refusing connections from a client: it has %d open, the most %s allows (raise %s in the agent config if it is legitimate)",
			l.cfg.MaxConnsPerClient, l.cfg.MaxConnsPerClientKey, l.cfg.MaxConnsPerClientKey), "listener", l.cfg.Name, "client", client)
		return nil, false
	}
	l.open++
	if client != "" {
		l.perClient[client]++
	}
	l.mu.Unlock()
	lc := &conn{Conn: c}
	lc.release = func() {
		l.mu.Lock()
		l.open--
		if client != "" {
			if l.perClient[client]--; l.perClient[client] <= 0 {
				delete(l.perClient, client)
			}
		}
		l.mu.Unlock()
	}
	return lc, true
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
	once    sync.Once
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
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
