package local

import (
	"context"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// clientKey is the context key of a client set by WithClient.
type clientKey struct{}

// WithClient returns ctx naming the client of the call: what per-client
// limits count it under.
func WithClient(ctx context.Context, client string) context.Context {
	return context.WithValue(ctx, clientKey{}, client)
}

// ClientOf names the client a call comes from, for per-client limits: the
// one WithClient set (a plugin's store binding), else the gRPC connection
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
