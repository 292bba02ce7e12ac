// Package clusterrpc is a node's cluster RPC port (-rpc): the one address
// other nodes reach it at. A connection is TLS first (mutual, with the
// cluster CA: see host/tlsutil) when TLS is configured, then its first
// byte says what it carries: a raft stream, the cluster gRPC server
// (store forwarding) or calls relayed from another node to a plugin
// instance on this one (HTTP/2, served by host/router). A dial names the node it
// expects, and the peer's certificate must name that node; each request
// on an incoming raft stream must come from the node its certificate names
// (raftid.go).
package clusterrpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/credentials"

	"github.com/plughost/plughost/host/tlsutil"
	"github.com/plughost/plughost/internal/netlimit"
)

// Kind is the first byte of a connection, after TLS: what it carries.
type Kind byte

// Connection kinds.
const (
	KindRaft   Kind = 1
	KindGRPC   Kind = 2
	KindVerify Kind = 3 // a handshake that only proves the peer's identity
	// KindRelay carries HTTP/2 calls another node relays to this node's
	// local plugin instances (host/router serves it).
	KindRelay Kind = 4
)

// Limits bound the port's connections that have not finished their TLS
// handshake and first byte: a flood of half-done handshakes holds at most
// MaxHandshakes of the port's connections (MaxHandshakesPerClient from one
// IP address), each for at most HandshakeTimeout; past them a new
// connection closes the oldest half-done one, so established nodes keep
// theirs and new ones get in. Zero fields take the defaults.
type Limits struct {
	MaxHandshakes          int
	MaxHandshakesPerClient int
	HandshakeTimeout       time.Duration
}

// Limits' defaults (agent config rpc_max_handshakes,
// rpc_max_handshakes_per_client and rpc_handshake_timeout). A node opens
// about eight connections to another when it starts (raft's pool, a
// pipeline, a snapshot, gRPC, the relay), several agents on one host
// share an address, and a TLS 1.3 handshake takes one round trip.
const (
	DefaultMaxHandshakes          = 256
	DefaultMaxHandshakesPerClient = 64
	DefaultHandshakeTimeout       = 5 * time.Second
)

func (l Limits) withDefaults() Limits {
	if l.MaxHandshakes <= 0 {
		l.MaxHandshakes = DefaultMaxHandshakes
	}
	if l.MaxHandshakesPerClient <= 0 {
		l.MaxHandshakesPerClient = DefaultMaxHandshakesPerClient
	}
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	return l
}

// Connections the port holds open at once, in all and from one IP address.
// A node holds a few to each other (raft's pool of 3, a pipeline, a
// snapshot, one gRPC connection); several agents on one host share an
// address. A flood of handshakes past these is closed at once.
const (
	maxConns          = 2048
	maxConnsPerClient = 256
)

// The rate the port takes new connections at, in bursts: with
// Limits.MaxHandshakes it gives each connection at least a quarter of a
// second to finish its handshake however fast a flood comes (see
// netlimit.Config.MaxPending), far more than a node needs.
const (
	acceptRate  = 1000
	acceptBurst = 256
)

// ErrClosed is returned by the listeners of a closed Mux.
var ErrClosed = errors.New("clusterrpc: closed")

// Mux is a running cluster RPC port.
type Mux struct {
	ln   net.Listener
	tls  *tlsutil.Config // nil: plaintext (a -dev agent on loopback)
	log  hclog.Logger
	raft *chanListener
	grpc *chanListener
	// relay takes KindRelay connections; they are closed at once when
	// the agent serves none (see Relay).
	relay *chanListener
	// handshakeTimeout bounds TLS and the first byte of an incoming
	// connection (Limits.HandshakeTimeout).
	handshakeTimeout time.Duration

	refused sync.Map // raft sender mismatches logged (see raftid.go)

	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// Listen opens the cluster RPC port on addr, which must be an address other
// nodes can dial (not 0.0.0.0): it is advertised to them. With tc nil the
// port is plaintext; every connection in and out is mutual TLS otherwise.
// lim bounds the connections still in their handshake.
func Listen(addr string, tc *tlsutil.Config, lim Limits, log hclog.Logger) (*Mux, error) {
	if tcp, err := net.ResolveTCPAddr("tcp", addr); err == nil && tcp.IP != nil && tcp.IP.IsUnspecified() {
		return nil, fmt.Errorf("clusterrpc: %s is not an address other nodes can dial; give this node's own IP", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	lim = lim.withDefaults()
	limited := netlimit.Wrap(ln, netlimit.Config{Name: "rpc", Logger: log,
		MaxConns: maxConns, MaxConnsPerClient: maxConnsPerClient,
		MaxPending: lim.MaxHandshakes, MaxPendingPerClient: lim.MaxHandshakesPerClient,
		MaxPendingKey: "rpc_max_handshakes", MaxPendingPerClientKey: "rpc_max_handshakes_per_client",
		AcceptRate: acceptRate, AcceptBurst: acceptBurst})
	return newMux(limited, tc, lim.HandshakeTimeout, log), nil
}

// newMux serves the cluster RPC port on ln.
func newMux(ln net.Listener, tc *tlsutil.Config, handshakeTimeout time.Duration, log hclog.Logger) *Mux {
	m := &Mux{ln: ln, tls: tc, log: log, handshakeTimeout: handshakeTimeout, done: make(chan struct{})}
	m.raft = newChanListener(ln.Addr(), m.done)
	m.grpc = newChanListener(ln.Addr(), m.done)
	m.relay = newChanListener(ln.Addr(), m.done)
	m.wg.Add(1)
	go m.serve()
	return m
}

// Addr is the address the port listens on.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// TLS reports whether connections are mutual TLS.
func (m *Mux) TLS() bool { return m.tls != nil }

// Raft is the listener of incoming raft streams.
func (m *Mux) Raft() net.Listener { return m.raft }

// GRPC is the listener of incoming cluster gRPC connections.
func (m *Mux) GRPC() net.Listener { return m.grpc }

// Relay is the listener of incoming relayed calls: HTTP/2 connections on
// which another node sends calls to this node's plugin instances.
func (m *Mux) Relay() net.Listener { return m.relay }

// Close stops accepting and closes the listeners; connections handed out
// are their owners' to close.
func (m *Mux) Close() error {
	var err error
	m.once.Do(func() {
		close(m.done)
		err = m.ln.Close()
		m.wg.Wait()
	})
	return err
}

// serve accepts connections until Close. The listener (internal/netlimit)
// waits out a shortage of file descriptors instead of failing.
func (m *Mux) serve() {
	defer m.wg.Done()
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
			default:
				m.log.Error("cluster RPC: accept failed; no more connections are taken", "error", err)
			}
			return
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.handle(conn)
		}()
	}
}

// handle runs TLS and reads the first byte, within the handshake timeout,
// then hands the connection to its listener: from then on it no longer
// counts as a handshake.
func (m *Mux) handle(conn net.Conn) {
	conn.SetDeadline(time.Now().Add(m.handshakeTimeout))
	if m.tls != nil {
		tc := tls.Server(conn, m.tls.Incoming())
		if err := tc.Handshake(); err != nil {
			m.log.Warn("cluster RPC: refused a connection: TLS handshake failed", "remote", conn.RemoteAddr(), "error", err)
			conn.Close()
			return
		}
		conn = tc
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		conn.Close()
		return
	}
	conn.SetDeadline(time.Time{})
	netlimit.Established(conn)
	switch Kind(b[0]) {
	case KindRaft:
		if tc, ok := conn.(*tls.Conn); ok {
			// The handshake checked that the certificate names a node.
			node, _ := tlsutil.NodeOf(tc.ConnectionState().PeerCertificates[0])
			conn = bindRaftID(conn, node, m.log, &m.refused)
		}
		m.raft.hand(conn)
	case KindGRPC:
		m.grpc.hand(conn)
	case KindRelay:
		m.relay.hand(conn)
	case KindVerify:
		conn.Close()
	default:
		m.log.Warn("cluster RPC: refused a connection of unknown kind", "remote", conn.RemoteAddr(), "kind", b[0])
		conn.Close()
	}
}

// Dial connects to the cluster RPC port at addr for kind, expecting node
// there: with TLS, the peer's certificate must name node.
func (m *Mux) Dial(ctx context.Context, addr, node string, kind Kind) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if m.tls != nil {
		if node == "" {
			conn.Close()
			return nil, fmt.Errorf("clusterrpc: no node is known at %s; a dial must name the node it expects", addr)
		}
		tc := tls.Client(conn, m.tls.Outgoing(node))
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("clusterrpc: %s at %s: %w", node, addr, err)
		}
		conn = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetWriteDeadline(dl)
	}
	if _, err := conn.Write([]byte{byte(kind)}); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetWriteDeadline(time.Time{})
	return conn, nil
}

// DialRaft is Dial for a raft stream.
func (m *Mux) DialRaft(ctx context.Context, addr, node string) (net.Conn, error) {
	return m.Dial(ctx, addr, node, KindRaft)
}

// DialGRPC is Dial for the cluster gRPC server.
func (m *Mux) DialGRPC(ctx context.Context, addr, node string) (net.Conn, error) {
	return m.Dial(ctx, addr, node, KindGRPC)
}

// DialRelay is Dial for calls relayed to node's plugin instances.
func (m *Mux) DialRelay(ctx context.Context, addr, node string) (net.Conn, error) {
	return m.Dial(ctx, addr, node, KindRelay)
}

// Verify proves that the node at addr holds a certificate from the CA
// naming node. Without TLS there is nothing to prove.
func (m *Mux) Verify(ctx context.Context, node, addr string) error {
	if m.tls == nil {
		return nil
	}
	conn, err := m.Dial(ctx, addr, node, KindVerify)
	if err != nil {
		return err
	}
	return conn.Close()
}

// chanListener is a net.Listener of the connections the Mux hands it.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	mux    <-chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr, mux <-chan struct{}) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{}), mux: mux}
}

func (l *chanListener) hand(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		c.Close()
	case <-l.mux:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, ErrClosed
	case <-l.mux:
		return nil, ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// ServerCredentials are the transport credentials of the cluster gRPC
// server (GRPC): its connections finished their TLS handshake in the mux,
// so they do no handshake of their own, but tell the server's calls what
// it verified (credentials.TLSInfo in their peer): the node whose server
// certificate the peer presented.
func ServerCredentials() credentials.TransportCredentials { return handshaken{} }

type handshaken struct{}

func (handshaken) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return conn, nil, nil // no TLS configured: the peer proved nothing
	}
	return conn, credentials.TLSInfo{State: tc.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (handshaken) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("clusterrpc: ServerCredentials are for the cluster gRPC server only")
}

func (handshaken) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.3"}
}

func (handshaken) Clone() credentials.TransportCredentials { return handshaken{} }

func (handshaken) OverrideServerName(string) error { return nil }
