package launch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/hashicorp/yamux"
	"google.golang.org/grpc/credentials"
)

// rawDialer lets the agent open connections of its own to a plugin's gRPC
// server, beside the grpc.ClientConn go-plugin makes: the router relays
// HTTP/2 frames over them, which no grpc.ClientConn can do.
//
// go-plugin keeps the plugin's address, its multiplexed session and the
// AutoMTLS configuration to itself. The rawDialer is handed to go-plugin as
// the transport credentials of its gRPC dial (options given in
// ClientConfig.GRPCDialOptions come after go-plugin's own, so they win): it
// does the same TLS handshake go-plugin's credentials would, with the
// configuration go-plugin generated, and remembers the raw connection. A
// new connection is then a new stream on the same yamux session (with
// GRPCBrokerMultiplex the plugin gives every stream opened without a broker
// knock to its main gRPC server), or a new socket to the same address.
type rawDialer struct {
	// tlsConfig returns go-plugin's client TLS configuration, complete
	// once the handshake line was read (before go-plugin dials).
	tlsConfig func() *tls.Config

	mu  sync.Mutex
	raw net.Conn // the last raw connection go-plugin dialed
}

var _ credentials.TransportCredentials = (*rawDialer)(nil)

func (d *rawDialer) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cfg := d.tlsConfig()
	if cfg == nil {
		return nil, nil, errors.New("launch: go-plugin made no TLS configuration (AutoMTLS is off)")
	}
	d.mu.Lock()
	d.raw = raw
	d.mu.Unlock()
	return credentials.NewTLS(cfg).ClientHandshake(ctx, authority, raw)
}

func (d *rawDialer) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("launch: the plugin transport credentials are client-side only")
}

// Info is what go-plugin's own credentials would say; gRPC takes the
// connection's authority, and so the certificate's server name, from it.
func (d *rawDialer) Info() credentials.ProtocolInfo {
	if cfg := d.tlsConfig(); cfg != nil {
		return credentials.NewTLS(cfg).Info()
	}
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2"}
}

// Clone returns d itself: the clone must see the connection d captures.
func (d *rawDialer) Clone() credentials.TransportCredentials { return d }

func (d *rawDialer) OverrideServerName(string) error { return nil }

// dial opens a new TLS connection to the plugin's gRPC server, speaking
// HTTP/2 (ALPN h2), authenticated as go-plugin's own connection is: to the
// unix socket at path, or if path is empty beside go-plugin's connection.
func (d *rawDialer) dial(ctx context.Context, path string) (net.Conn, error) {
	d.mu.Lock()
	raw := d.raw
	d.mu.Unlock()
	if raw == nil {
		return nil, errors.New("no connection to the plugin yet")
	}
	var nc net.Conn
	var err error
	if path != "" {
		var nd net.Dialer
		nc, err = nd.DialContext(ctx, "unix", path)
	} else if s, ok := raw.(*yamux.Stream); ok {
		nc, err = s.Session().OpenStream()
	} else {
		var nd net.Dialer
		nc, err = nd.DialContext(ctx, raw.RemoteAddr().Network(), raw.RemoteAddr().String())
	}
	if err != nil {
		return nil, fmt.Errorf("opening a connection to the plugin: %w", err)
	}
	cfg := d.tlsConfig().Clone()
	cfg.NextProtos = []string{"h2"}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("TLS handshake with the plugin: %w", err)
	}
	return tc, nil
}
