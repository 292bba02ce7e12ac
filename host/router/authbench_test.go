package router

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/plughost/plughost/host/acl"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	aclv1 "github.com/plughost/plughost/proto/plughost/acl/v1"
	"github.com/plughost/plughost/store"
)

// BenchmarkRoutedUnaryAuthorized is BenchmarkRoutedUnary with every call
// authorized as the agent does it (acl.Enforcer.AuthorizeCall on a token
// with plugin "echo" { policy = "call" }), to compare what authorization
// costs a relayed call:
//
//	go test -run xxx -bench 'RoutedUnary' -benchtime 3s ./host/router/
func BenchmarkRoutedUnaryAuthorized(b *testing.B) {
	st, err := store.OpenMemory()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ctx := context.Background()
	res := acl.NewResolver(st, nil)
	if _, _, err := acl.Bootstrap(ctx, st); err != nil {
		b.Fatal(err)
	}
	svc := acl.NewService(st, res)
	if _, err := svc.CreatePolicy(ctx, policyRequest(`plugin "echo" { policy = "call" }`)); err != nil {
		b.Fatal(err)
	}
	tok, err := svc.CreateToken(ctx, tokenRequest("bench", "echo-call"))
	if err != nil {
		b.Fatal(err)
	}
	e := newEnvConfig(b, Config{Authorize: acl.NewEnforcer(res).AuthorizeCall})
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer{"authorization": "Bearer " + tok.GetToken().GetSecretId()}))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	benchUnary(b, echov1.NewEchoServiceClient(conn))
}

type bearer map[string]string

func (t bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return t, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

func policyRequest(rules string) *aclv1.CreatePolicyRequest {
	return &aclv1.CreatePolicyRequest{Name: "echo-call", Rules: rules}
}

func tokenRequest(description string, policies ...string) *aclv1.CreateTokenRequest {
	return &aclv1.CreateTokenRequest{Description: description, Policies: policies}
}
