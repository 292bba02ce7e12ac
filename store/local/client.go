package local

import (
	"context"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// clientKey is the context key of a client set by WithClient.
type clientKey struct{}

// pluginKey marks the context of a plugin's own store call (WithPlugin).
type pluginKey struct{}

// WithClient returns ctx naming the client of the call: what per-client
// limits count it under.
func WithClient(ctx context.Context, client string) context.Context {
	return context.WithValue(ctx, clientKey{}, client)
}

// WithPlugin returns ctx naming the client of the call as the plugin whose
// store namespace is ns: per-client limits count the plugin as one client,
// and plugins may use what the store keeps for them (see IsPlugin).
func WithPlugin(ctx context.Context, ns string) context.Context {
	return context.WithValue(WithClient(ctx, "plugin "+ns), pluginKey{}, true)
}

// IsPlugin reports whether ctx is of a plugin's own store call (WithPlugin).
func IsPlugin(ctx context.Context) bool {
	v, _ := ctx.Value(pluginKey{}).(bool)
	return v
}

// ClientOf names the client a call comes from, for per-client limits: the
// one WithClient set (a plugin's store binding, the token a call on the
// agent's API was authorized with), else the gRPC connection
// (its peer address; for a call the router passed on in memory, the
// connection it came in on, or "router" if it did not say). remote is
// false for a call made in process, which no limit counts.
func ClientOf(ctx context.Context) (client string, remote bool) {
	if c, ok := ctx.Value(clientKey{}).(string); ok {
		return c, true
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "", false
	}
	if p.Addr.Network() == "pipe" { // the router's in-memory connection
		if v := metadata.ValueFromIncomingContext(ctx, storev1.CallerAddrHeader); len(v) == 1 && v[0] != "" {
			return v[0], true
		}
		return "router", true
	}
	if a := p.Addr.String(); a != "" && a != "@" {
		return a, true
	}
	return p.Addr.Network() + " peer", true // an unnamed unix socket
}
