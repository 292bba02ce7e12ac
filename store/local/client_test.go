package local

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

func TestClientOf(t *testing.T) {
	pipe, other := net.Pipe()
	defer pipe.Close()
	defer other.Close()
	tcp := &net.TCPAddr{IP: net.ParseIP("10.0.0.5"), Port: 4242}
	withPeer := func(a net.Addr, md ...string) context.Context {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: a})
		if len(md) > 0 {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(md...))
		}
		return ctx
	}
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		client string
		remote bool
	}{
		{"in process", context.Background(), "", false},
		{"a TCP connection", withPeer(tcp), "10.0.0.5:4242", true},
		// A client cannot pose as another on its own connection.
		{"a TCP connection claiming a caller", withPeer(tcp, storev1.CallerAddrHeader, "10.9.9.9:1"), "10.0.0.5:4242", true},
		{"the router's connection", withPeer(pipe.LocalAddr(), storev1.CallerAddrHeader, "10.0.0.6:5000"), "10.0.0.6:5000", true},
		{"the router's connection, no caller", withPeer(pipe.LocalAddr()), "router", true},
		{"a binding", WithClient(withPeer(tcp), "plugin kv"), "plugin kv", true},
	} {
		client, remote := ClientOf(tc.ctx)
		if client != tc.client || remote != tc.remote {
			t.Errorf("%s: ClientOf = %q, %v; want %q, %v", tc.name, client, remote, tc.client, tc.remote)
		}
	}
}

// watchSeen is a StoreServiceServer that records the client its watches
// come from.
type watchSeen struct {
	storev1.UnimplementedStoreServiceServer
	client string
}

func (w *watchSeen) Watch(_ *storev1.WatchRequest, stream grpc.ServerStreamingServer[storev1.WatchResponse]) error {
	w.client, _ = ClientOf(stream.Context())
	return nil
}

type fakeWatchStream struct {
	grpc.ServerStreamingServer[storev1.WatchResponse]
	ctx context.Context
}

func (s fakeWatchStream) Context() context.Context { return s.ctx }

func TestBindNamesThePluginAsTheWatchClient(t *testing.T) {
	inner := &watchSeen{}
	bound := Bind(inner, Binding{Namespace: "kv"})
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.UnixAddr{Name: "", Net: "unix"}})
	if err := bound.Watch(&storev1.WatchRequest{}, fakeWatchStream{ctx: ctx}); err != nil {
		t.Fatal(err)
	}
	if inner.client != "plugin kv" {
		t.Fatalf("a plugin's watch counts as client %q, want %q", inner.client, "plugin kv")
	}
}
