package acl

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// The cluster's server token, which a management token can read in _sys,
// is unknown on the API (its enforcer, the router's calls, the HTTP
// endpoints' Resolve) and management on the cluster RPC port only.
func TestServerTokenOnlyOnTheClusterPort(t *testing.T) {
	ctx := context.Background()
	st := memStore(t)
	r := NewResolver(st, nil)
	if _, _, err := Bootstrap(ctx, st); err != nil {
		t.Fatal(err)
	}
	if err := ensureServerToken(ctx, st); err != nil {
		t.Fatal(err)
	}
	r.Reload(ctx)
	server := r.ServerSecret()
	if server == "" {
		t.Fatal("no server token after bootstrap")
	}
	in := metadata.NewIncomingContext(ctx, metadata.Pairs(HeaderAuthorization, "Bearer "+server))
	info := &grpc.UnaryServerInfo{FullMethod: storev1.StoreService_Get_FullMethodName}
	req := &storev1.GetRequest{Namespace: SystemNamespace, Key: []byte(keyServerToken)}
	ok := func(context.Context, any) (any, error) { return &storev1.GetResponse{}, nil }

	if _, err := NewEnforcer(r).Unary(in, req, info, ok); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("API enforcer took the server token: %v", err)
	}
	if _, err := NewEnforcer(r).AuthorizeCall(HeaderAuthorization, "Bearer "+server, "echo", "/echo.v1.EchoService/Echo", nil); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("router took the server token: %v", err)
	}
	if _, err := r.Resolve(server); err != ErrTokenNotFound {
		t.Fatalf("Resolve (the HTTP endpoints') took the server token: %v", err)
	}
	if _, err := NewClusterEnforcer(r).Unary(in, req, info, ok); err != nil {
		t.Fatalf("cluster enforcer refused the server token: %v", err)
	}
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
	if err := ensureServerToken(ctx, st); err != nil {
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
	if got := sent(operatorv1.OperatorService_ListPlugins_FullMethodName); got != "Bearer "+r.ServerSecret() {
		t.Errorf("the agent's own store calls serving an operator call forward %q, not the server token", got)
	}
}
