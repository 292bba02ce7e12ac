package acl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/tlsutil"
	"github.com/plughost/plughost/internal/testenv"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// serverPeer is the context of a call over a connection whose mutual TLS
// verified cert.
func serverPeer(ctx context.Context, cert *x509.Certificate) context.Context {
	return peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7401},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert}}}}})
}

// Another agent is known on the cluster RPC port by the server
// certificate its connection's mutual TLS verified, with no bearer
// secret: a call there without a token from a server certificate is
// management; without one (a client certificate, no TLS) it is refused,
// and on the API a server certificate counts for nothing. An earlier
// version's plain-text server token in _sys is no credential, and the
// leader deletes it.
func TestAgentsKnownByTheirCertificates(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := memStore(t)
	r := NewResolver(st, nil)
	if _, _, err := Bootstrap(ctx, st); err != nil {
		t.Fatal(err)
	}
	const legacy = "0b7e8a2c-3f41-4d6e-9c12-5a8b7d6e4f30"
	if _, err := st.Put(ctx, &storev1.PutRequest{Namespace: SystemNamespace, Key: []byte(keyServerToken), Value: []byte(`{"secret_id":"` + legacy + `"}`)}); err != nil {
		t.Fatal(err)
	}
	r.Reload(ctx)
	info := &grpc.UnaryServerInfo{FullMethod: storev1.StoreService_Get_FullMethodName}
	req := &storev1.GetRequest{Namespace: SystemNamespace, Key: []byte(keyBootstrap)}
	ok := func(context.Context, any) (any, error) { return &storev1.GetResponse{}, nil }
	server := serverPeer(ctx, &x509.Certificate{DNSNames: []string{tlsutil.ServerName("n2")}})
	client := serverPeer(ctx, &x509.Certificate{DNSNames: []string{tlsutil.ClientName}})

	if _, err := NewClusterEnforcer(r).Unary(server, req, info, ok); err != nil {
		t.Fatalf("cluster port refused an agent's own call: %v", err)
	}
	for what, in := range map[string]context.Context{"a client certificate": client, "no TLS": ctx} {
		if _, err := NewClusterEnforcer(r).Unary(in, req, info, ok); status.Code(err) != codes.Unauthenticated {
			t.Errorf("cluster port took a call without a token over %s: %v", what, err)
		}
	}
	if _, err := NewEnforcer(r).Unary(server, req, info, ok); status.Code(err) != codes.Unauthenticated {
		t.Errorf("API took a server certificate for a token: %v", err)
	}
	withLegacy := metadata.NewIncomingContext(server, metadata.Pairs(HeaderAuthorization, "Bearer "+legacy))
	if _, err := NewClusterEnforcer(r).Unary(withLegacy, req, info, ok); status.Code(err) != codes.Unauthenticated {
		t.Errorf("cluster port took the legacy server token: %v", err)
	}
	if _, err := r.Resolve(legacy); err != ErrTokenNotFound {
		t.Errorf("the legacy server token resolves: %v", err)
	}
	go r.Run(ctx)
	testenv.Eventually(t, 10*time.Second, "the leader to delete the legacy server token", func() bool {
		resp, err := st.Get(ctx, &storev1.GetRequest{Namespace: SystemNamespace, Key: []byte(keyServerToken)})
		return err == nil && resp.GetKv() == nil
	})
}

// A follower's store passes the caller's token on to the leader only with
// the caller's own store calls; the agent's own store calls made while it
// serves another call (catalog, history, ACL records) carry the server
// token.
func TestForwardCredentials(t *testing.T) {
	ctx := context.Background()
	st := memStore(t)
	r := NewResolver(st, nil)
	_, secret, err := Bootstrap(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	r.Reload(ctx)
	in := metadata.NewIncomingContext(ctx, metadata.Pairs(HeaderAuthorization, "Bearer "+secret))
	creds := r.ForwardCredentials()
	sent := func(method string) string {
		t.Helper()
		var got string
		handler := func(hctx context.Context, _ any) (any, error) {
			md, err := creds.GetRequestMetadata(hctx)
			if err != nil {
				t.Fatal(err)
			}
			got = md[HeaderAuthorization]
			return nil, nil
		}
		if _, err := NewEnforcer(r).Unary(in, &storev1.GetRequest{Namespace: "app"}, &grpc.UnaryServerInfo{FullMethod: method}, handler); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		return got
	}
	if got := sent(storev1.StoreService_Get_FullMethodName); got != "Bearer "+secret {
		t.Errorf("a client's store call forwards %q, not the client's token", got)
	}
	if got := sent(operatorv1.OperatorService_ListPlugins_FullMethodName); got != "" {
		t.Errorf("the agent's own store calls serving an operator call forward %q, not nothing (the leader knows the agent by its certificate)", got)
	}
}
