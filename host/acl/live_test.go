package acl

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// watchStream is a Watch server stream whose first message is req.
type watchStream struct {
	grpc.ServerStream
	ctx context.Context
	req *storev1.WatchRequest
}

func (s *watchStream) Context() context.Context { return s.ctx }
func (s *watchStream) RecvMsg(m any) error {
	proto.Merge(m.(*storev1.WatchRequest), s.req)
	return nil
}

// An open stream ends Unauthenticated when its token is deleted, and
// PermissionDenied when the token's policy stops granting it; a relayed
// call's revoked is called likewise, and not after release.
func TestRevokedTokenEndsOpenCalls(t *testing.T) {
	ctx := context.Background()
	st := memStore(t)
	r := NewResolver(st, nil)
	if _, _, err := Bootstrap(ctx, st); err != nil {
		t.Fatal(err)
	}
	if err := createPolicy(ctx, st, &Policy{Name: "app-reader", Rules: `namespace "app" { policy = "read" }
plugin "echo" { policy = "write" }`}); err != nil {
		t.Fatal(err)
	}
	tokA, secretA, err := createToken(ctx, st, "a", []string{"app-reader"})
	if err != nil {
		t.Fatal(err)
	}
	_, secretB, err := createToken(ctx, st, "b", []string{"app-reader"})
	if err != nil {
		t.Fatal(err)
	}
	r.Reload(ctx)
	e := NewEnforcer(r)

	// watch opens a Watch of namespace app with secret; its handler runs
	// until the stream's context ends.
	watch := func(secret string) chan error {
		in := metadata.NewIncomingContext(ctx, metadata.Pairs(HeaderAuthorization, "Bearer "+secret))
		ss := &watchStream{ctx: in, req: &storev1.WatchRequest{Namespace: "app"}}
		started := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- e.Stream(nil, ss, &grpc.StreamServerInfo{FullMethod: storev1.StoreService_Watch_FullMethodName, IsServerStream: true},
				func(_ any, s grpc.ServerStream) error {
					var req storev1.WatchRequest
					if err := s.RecvMsg(&req); err != nil {
						return err
					}
					close(started)
					<-s.Context().Done()
					return status.FromContextError(s.Context().Err()).Err()
				})
		}()
		select {
		case <-started:
		case err := <-done:
			t.Fatalf("watch refused: %v", err)
		}
		return done
	}
	wantEnd := func(done chan error, code codes.Code, what string) {
		t.Helper()
		select {
		case err := <-done:
			if status.Code(err) != code {
				t.Fatalf("%s: the stream ended with %v, want %v", what, err, code)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the stream did not end", what)
		}
	}

	wA, wB := watch(secretA), watch(secretB)
	var relayed error
	gotRelayed := make(chan struct{})
	if _, err := e.AuthorizeCall(HeaderAuthorization, "Bearer "+secretA, "echo", "/echo.v1.EchoService/Chat", func(err error) {
		relayed = err
		close(gotRelayed)
	}); err != nil {
		t.Fatal(err)
	}
	released, err := e.AuthorizeCall(HeaderAuthorization, "Bearer "+secretA, "echo", "/echo.v1.EchoService/Chat", func(err error) {
		t.Errorf("a released call was revoked: %v", err)
	})
	if err != nil {
		t.Fatal(err)
	}
	released()

	if err := deleteToken(ctx, st, tokA); err != nil {
		t.Fatal(err)
	}
	r.Reload(ctx)
	wantEnd(wA, codes.Unauthenticated, "token deleted")
	<-gotRelayed
	if status.Code(relayed) != codes.Unauthenticated {
		t.Fatalf("relayed call revoked with %v", relayed)
	}
	select {
	case err := <-wB:
		t.Fatalf("another token's stream ended: %v", err)
	default:
	}

	// The policy no longer grants namespace app (written straight into
	// _sys, as a management token can).
	if _, err := txn(ctx, st, nil, put(prefixPolicy+"app-reader", Policy{Name: "app-reader", Rules: `namespace "other" { policy = "read" }`})); err != nil {
		t.Fatal(err)
	}
	r.Reload(ctx)
	wantEnd(wB, codes.PermissionDenied, "policy changed")
	if n := r.liveCount(); n != 0 {
		t.Fatalf("%d calls still watched over after all ended", n)
	}
}
