package sdk

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// recordingClient answers writes with a fixed revision and records the
// reads it is sent; it checks what the client puts on the wire.
type recordingClient struct {
	storev1.StoreServiceClient // nil: other calls panic
	rev                        int64
	gets                       []*storev1.GetRequest
	lists                      []*storev1.ListRequest
}

func (c *recordingClient) Put(_ context.Context, _ *storev1.PutRequest, _ ...grpc.CallOption) (*storev1.PutResponse, error) {
	return &storev1.PutResponse{Revision: c.rev}, nil
}

func (c *recordingClient) Txn(_ context.Context, _ *storev1.TxnRequest, _ ...grpc.CallOption) (*storev1.TxnResponse, error) {
	return &storev1.TxnResponse{Revision: c.rev}, nil
}

func (c *recordingClient) Get(_ context.Context, req *storev1.GetRequest, _ ...grpc.CallOption) (*storev1.GetResponse, error) {
	c.gets = append(c.gets, req)
	return &storev1.GetResponse{Kv: &storev1.KeyValue{Key: req.GetKey(), ModRevision: 1}}, nil
}

func (c *recordingClient) List(_ context.Context, req *storev1.ListRequest, _ ...grpc.CallOption) (*storev1.ListResponse, error) {
	c.lists = append(c.lists, req)
	return &storev1.ListResponse{}, nil
}

// TestReadYourWrites checks that session reads wait for the highest revision
// the plugin wrote, in every view, and that other reads do not.
func TestReadYourWrites(t *testing.T) {
	ctx := context.Background()
	rpc := &recordingClient{}
	base := newStoreClient(nil, nil)
	base.rpc = rpc
	session := base.WithConsistency(Session)

	rpc.rev = 40
	if _, err := base.Put(ctx, "a", nil, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	rpc.rev = 42
	if _, err := session.Txn(ctx, Txn{}); err != nil {
		t.Fatal(err)
	}
	rpc.rev = 41 // an older revision must not lower the mark
	if _, err := base.Put(ctx, "b", nil, PutOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, st := range []Store{session, base.WithConsistency(Stale), base} {
		if _, err := st.Get(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if _, err := st.List(ctx, "", ListOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	want := []struct {
		c   storev1.Consistency
		min int64
	}{
		{storev1.Consistency_CONSISTENCY_SESSION, 42},
		{storev1.Consistency_CONSISTENCY_STALE, 0},
		{storev1.Consistency_CONSISTENCY_LINEARIZABLE, 0},
	}
	for i, w := range want {
		g, l := rpc.gets[i], rpc.lists[i]
		if g.GetConsistency() != w.c || g.GetMinRevision() != w.min || l.GetConsistency() != w.c || l.GetMinRevision() != w.min {
			t.Errorf("read %d: get %v/%d, list %v/%d; want %v/%d", i,
				g.GetConsistency(), g.GetMinRevision(), l.GetConsistency(), l.GetMinRevision(), w.c, w.min)
		}
	}
}

// agentStore is the agent's StoreService as a plugin reaches it: Put and
// Get answer as answer says, and count the requests that arrived.
type agentStore struct {
	storev1.UnimplementedStoreServiceServer
	answer func(ctx context.Context, a *agentStore) error
	calls  atomic.Int32

	mu    sync.Mutex
	conns []net.Conn // accepted, for cut
}

func (a *agentStore) Put(ctx context.Context, _ *storev1.PutRequest) (*storev1.PutResponse, error) {
	a.calls.Add(1)
	return nil, a.answer(ctx, a)
}

func (a *agentStore) Get(ctx context.Context, _ *storev1.GetRequest) (*storev1.GetResponse, error) {
	a.calls.Add(1)
	return nil, a.answer(ctx, a)
}

// cut closes the connections to the agent, as an agent that stops does.
func (a *agentStore) cut() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.conns {
		c.Close()
	}
}

type trackingListener struct {
	net.Listener
	a *agentStore
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.a.mu.Lock()
		l.a.conns = append(l.a.conns, c)
		l.a.mu.Unlock()
	}
	return c, err
}

// storeAt is the SDK's Store over a connection to addr.
func storeAt(t *testing.T, addr string) *storeClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return newStoreClient(conn, nil)
}

func storeStatus(code codes.Code, msg, reason string) error {
	st := status.New(code, msg)
	if reason != "" {
		st, _ = st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: storev1.ErrorDomain})
	}
	return st.Err()
}

// TestStoreClientUnknownOutcome checks that a write whose answer was lost
// after it reached the agent is ErrOutcomeUnknown, not the retryable
// ErrUnavailable, and is sent once; and that a request that was not applied
// stays ErrUnavailable.
func TestStoreClientUnknownOutcome(t *testing.T) {
	cutConnection := func(ctx context.Context, a *agentStore) error {
		a.cut()
		<-ctx.Done()
		return ctx.Err()
	}
	tests := []struct {
		name   string
		answer func(ctx context.Context, a *agentStore) error // nil: closed before the HTTP/2 preface
		write  bool
		want   error
	}{
		{"store says outcome unknown", func(context.Context, *agentStore) error {
			return storeStatus(codes.Unavailable, "store: leadership was lost while the write was in flight; it may or may not have been applied", storev1.ReasonOutcomeUnknown)
		}, true, ErrOutcomeUnknown},
		{"agent connection cut during a write", cutConnection, true, ErrOutcomeUnknown},
		{"agent connection cut during a read", cutConnection, false, ErrUnavailable},
		{"store says not the leader", func(context.Context, *agentStore) error {
			return storeStatus(codes.Unavailable, "store: not the leader: no leader is known", storev1.ReasonNotLeader)
		}, true, ErrUnavailable},
		{"agent closes before the preface", nil, true, ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			a := &agentStore{answer: tt.answer}
			if tt.answer == nil {
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						c.Close()
					}
				}()
				t.Cleanup(func() { ln.Close() })
			} else {
				srv := grpc.NewServer()
				storev1.RegisterStoreServiceServer(srv, a)
				done := make(chan struct{})
				go func() {
					defer close(done)
					srv.Serve(trackingListener{ln, a})
				}()
				t.Cleanup(func() {
					srv.Stop()
					<-done
				})
			}
			st := storeAt(t, ln.Addr().String())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tt.write {
				_, err = st.Put(ctx, "k", []byte("v"), PutOptions{})
			} else {
				_, err = st.Get(ctx, "k")
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			if tt.want == ErrOutcomeUnknown {
				if errors.Is(err, ErrUnavailable) {
					t.Errorf("%v is also ErrUnavailable, which a plugin may retry", err)
				}
				if code, reason := status.Code(err), storev1.ErrorReason(err); code != codes.Unavailable || reason != storev1.ReasonOutcomeUnknown {
					t.Errorf("a plugin passing the error on would answer %v with reason %q, want UNAVAILABLE with %q", code, reason, storev1.ReasonOutcomeUnknown)
				}
				if !strings.Contains(err.Error(), "may or may not have been applied") {
					t.Errorf("message %q does not say the write may have been applied", err)
				}
			} else if errors.Is(err, ErrOutcomeUnknown) {
				t.Errorf("%v is ErrOutcomeUnknown, yet nothing was applied", err)
			}
			if n := a.calls.Load(); tt.answer != nil && n != 1 {
				t.Errorf("the agent got the request %d times, want once", n)
			}
		})
	}
}
