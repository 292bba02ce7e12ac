package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// cutListener remembers the connections it accepted so that a handler can
// cut them, as a leader that stops does.
type cutListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *cutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *cutListener) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}

// fakeLeader is a leader's StoreService that answers Put and Get as answer
// says, counting the requests that reached it.
type fakeLeader struct {
	storev1.UnimplementedStoreServiceServer
	ln     *cutListener
	answer func(ctx context.Context, l *fakeLeader) error
	calls  atomic.Int32
}

func (l *fakeLeader) Put(ctx context.Context, _ *storev1.PutRequest) (*storev1.PutResponse, error) {
	l.calls.Add(1)
	return nil, l.answer(ctx, l)
}

func (l *fakeLeader) Get(ctx context.Context, _ *storev1.GetRequest) (*storev1.GetResponse, error) {
	l.calls.Add(1)
	return nil, l.answer(ctx, l)
}

// listen is a loopback listener closed when the test ends.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveOn serves srv's StoreService on ln until the test ends.
func serveOn(t *testing.T, ln net.Listener, srv storev1.StoreServiceServer) {
	t.Helper()
	gs := grpc.NewServer()
	storev1.RegisterStoreServiceServer(gs, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		gs.Serve(ln)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})
}

// dial is a client connection to addr, closed when the test ends.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closingListener accepts connections and closes them before gRPC's
// HTTP/2 preface: a client sees "error reading server preface".
func closingListener(t *testing.T) net.Listener {
	ln := listen(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

// twoLeaders forwards to first, then, for any further attempt, to second
// (the next leader), and counts the attempts.
type twoLeaders struct {
	first, second *grpc.ClientConn
	attempts      atomic.Int32
}

func (l *twoLeaders) forwarding() forwarding {
	return forwarding{
		from: "follower",
		target: func(_ context.Context, avoid string) (bool, *grpc.ClientConn, string, error) {
			if l.attempts.Add(1) == 1 {
				return false, l.first, "first", nil
			}
			if avoid != "first" {
				return false, nil, "", fmt.Errorf("the next attempt avoids %q, not the leader that failed", avoid)
			}
			return false, l.second, "second", nil
		},
		whileLeader: func(ctx context.Context, _ string) (context.Context, func()) { return ctx, func() {} },
	}
}

func notHere[Req, Resp any](context.Context, Req) (Resp, error) {
	var zero Resp
	return zero, ErrNotLeader
}

func forwardPut(ctx context.Context, f forwarding, key string) (*storev1.PutResponse, error) {
	return toLeader(ctx, f, &storev1.PutRequest{Namespace: "app", Key: []byte(key), Value: []byte("v")}, notHere[*storev1.PutRequest, *storev1.PutResponse],
		func(c storev1Client, ctx context.Context, req *storev1.PutRequest, opts ...grpc.CallOption) (*storev1.PutResponse, error) {
			return c.Put(ctx, req, opts...)
		})
}

func forwardGet(ctx context.Context, f forwarding, key string) (*storev1.GetResponse, error) {
	return toLeader(ctx, f, &storev1.GetRequest{Namespace: "app", Key: []byte(key)}, notHere[*storev1.GetRequest, *storev1.GetResponse],
		func(c storev1Client, ctx context.Context, req *storev1.GetRequest, opts ...grpc.CallOption) (*storev1.GetResponse, error) {
			return c.Get(ctx, req, opts...)
		})
}

// wantOutcomeUnknown checks that err is an ambiguous write at the gRPC
// boundary: UNAVAILABLE with the reason and the human message.
func wantOutcomeUnknown(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("error = %v, want ErrOutcomeUnknown", err)
	}
	st := status.Convert(toStatus(err))
	if st.Code() != codes.Unavailable || storev1.ErrorReason(st.Err()) != storev1.ReasonOutcomeUnknown {
		t.Errorf("at the boundary: %v with reason %q, want UNAVAILABLE with %q", st.Code(), storev1.ErrorReason(st.Err()), storev1.ReasonOutcomeUnknown)
	}
	if !strings.Contains(st.Message(), "may or may not have been applied") {
		t.Errorf("message %q does not tell the operator the write may have been applied", st.Message())
	}
}

// TestForwardedCallFailures sends a write and a read to a leader that fails
// in each way a leader can, with a working next leader behind it: a
// request that never reached the leader, or that the leader says it did
// not apply, goes to the next one; a write that reached it and got no
// decision is ambiguous and goes nowhere else; a read always may.
func TestForwardedCallFailures(t *testing.T) {
	next := newMemStore(t)
	nextLn := listen(t)
	serveOn(t, nextLn, NewServer(next))
	nextConn := dial(t, nextLn.Addr().String())

	cutBeforeAnswering := func(ctx context.Context, l *fakeLeader) error {
		l.ln.cut()
		<-ctx.Done()
		return ctx.Err()
	}
	tests := []struct {
		name string
		// answer is the first leader's; nil: connections to it are
		// closed before the HTTP/2 preface.
		answer func(ctx context.Context, l *fakeLeader) error
		// writeAmbiguous: the write fails with ErrOutcomeUnknown and is
		// not sent to the next leader; otherwise it is, and succeeds.
		writeAmbiguous bool
		writeErr       error // the leader's refusal, passed on as is
	}{
		{name: "connection closed before the preface"},
		{name: "connection cut after the request arrived", answer: cutBeforeAnswering, writeAmbiguous: true},
		{name: "leader says not the leader", answer: func(context.Context, *fakeLeader) error {
			return toStatus(fmt.Errorf("%w: the leader is node2", ErrNotLeader))
		}},
		{name: "leader is closing", answer: func(context.Context, *fakeLeader) error { return toStatus(ErrClosed) }},
		{name: "leader lost its leadership mid-write", writeAmbiguous: true, answer: func(context.Context, *fakeLeader) error {
			return toStatus(outcomeUnknown(ErrNotLeader, "store: leadership was lost while the write was in flight"))
		}},
		{name: "unavailable from a relay, no reason", writeAmbiguous: true, answer: func(context.Context, *fakeLeader) error {
			return status.Error(codes.Unavailable, "the agent's own server is unavailable: the connection to it closed")
		}},
		{name: "leader's disk is full", writeErr: ErrNoSpace, answer: func(context.Context, *fakeLeader) error {
			return toStatus(fmt.Errorf("%w: the raft log in /data could not be written", ErrNoSpace))
		}},
		{name: "leader refuses", writeErr: ErrCASFailed, answer: func(context.Context, *fakeLeader) error {
			return toStatus(fmt.Errorf("%w: key k is at another revision", ErrCASFailed))
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var first *fakeLeader
			var firstAddr string
			if tt.answer == nil {
				firstAddr = closingListener(t).Addr().String()
			} else {
				first = &fakeLeader{ln: &cutListener{Listener: listen(t)}, answer: tt.answer}
				serveOn(t, first.ln, first)
				firstAddr = first.ln.Addr().String()
			}
			key := fmt.Sprint("w", i)

			leaders := &twoLeaders{first: dial(t, firstAddr), second: nextConn}
			_, err := forwardPut(testenv.Context(t, 20*time.Second), leaders.forwarding(), key)
			applied := get(t, next, "app", key) != nil
			switch {
			case tt.writeAmbiguous:
				wantOutcomeUnknown(t, err)
				if n := leaders.attempts.Load(); n != 1 || applied {
					t.Errorf("the ambiguous write was sent again: %d attempts, applied at the next leader: %v", n, applied)
				}
			case tt.writeErr != nil:
				wantErr(t, err, tt.writeErr)
				if leaders.attempts.Load() != 1 {
					t.Errorf("a write the leader refused was sent again")
				}
			default:
				if err != nil || !applied {
					t.Fatalf("write: %v, applied at the next leader: %v; want it sent there", err, applied)
				}
			}
			if first != nil && first.calls.Load() != 1 {
				t.Errorf("the first leader got the write %d times", first.calls.Load())
			}

			if tt.writeErr != nil {
				return
			}
			put(t, next, "app", key+"-read", "v")
			leaders = &twoLeaders{first: dial(t, firstAddr), second: nextConn}
			resp, err := forwardGet(testenv.Context(t, 20*time.Second), leaders.forwarding(), key+"-read")
			if err != nil || string(resp.GetKv().GetValue()) != "v" {
				t.Fatalf("read: %v, %v; want it sent to the next leader", resp, err)
			}
		})
	}
}

// TestClusterLeaderStopsUnderForwardedWrites stops the leader of a 3-node
// cluster, its API and then its store, while writes sent to the followers'
// APIs are forwarded to it. Every write that fails must either carry the
// outcome-unknown reason or not have been applied.
func TestClusterLeaderStopsUnderForwardedWrites(t *testing.T) {
	nodes := newCluster(t, 3, newFakeClock())
	addrs := map[string]string{}
	servers := map[string]*grpc.Server{}
	for _, s := range nodes {
		ln := listen(t)
		gs := grpc.NewServer()
		storev1.RegisterStoreServiceServer(gs, NewServer(s))
		done := make(chan struct{})
		go func() {
			defer close(done)
			gs.Serve(ln)
		}()
		t.Cleanup(func() {
			gs.Stop()
			<-done
		})
		addrs[s.cfg.NodeID], servers[s.cfg.NodeID] = ln.Addr().String(), gs
	}
	for _, s := range nodes {
		s.SetLeaderResolver(func(id string) (string, bool) {
			a, ok := addrs[id]
			return a, ok
		})
	}
	old := leaderOf(t, nodes)
	var followers []storev1.StoreServiceClient
	for _, s := range nodes {
		if s != old {
			followers = append(followers, storev1.NewStoreServiceClient(dial(t, addrs[s.cfg.NodeID])))
		}
	}

	const workers, writesEach = 8, 40
	type failure struct {
		key string
		err error
	}
	var (
		mu       sync.Mutex
		failures []failure
		acked    atomic.Int32
		stopped  = make(chan struct{})
		afterOK  atomic.Int32 // writes sent after the stop that succeeded
		wg       sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range writesEach {
				key := fmt.Sprintf("w%d-%d", w, i)
				afterStop := false
				select {
				case <-stopped:
					afterStop = true
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				_, err := followers[(w+i)%len(followers)].Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte(key), Value: []byte("v")})
				cancel()
				if err != nil {
					mu.Lock()
					failures = append(failures, failure{key, err})
					mu.Unlock()
					continue
				}
				acked.Add(1)
				if afterStop {
					afterOK.Add(1)
				}
			}
		}()
	}
	testenv.Eventually(t, 20*time.Second, "forwarded writes acknowledged", func() bool { return acked.Load() >= 2*workers })
	servers[old.cfg.NodeID].Stop()
	old.Close()
	close(stopped)
	wg.Wait()

	var rest []*Store
	for _, s := range nodes {
		if s != old {
			rest = append(rest, s)
		}
	}
	leader := leaderOf(t, rest)
	unknown := 0
	for _, f := range failures {
		if storev1.ErrorReason(f.err) == storev1.ReasonOutcomeUnknown {
			unknown++
			if !strings.Contains(status.Convert(f.err).Message(), "may or may not have been applied") {
				t.Errorf("put %s: %v: the outcome-unknown error does not say so to the operator", f.key, f.err)
			}
			continue
		}
		if kv := get(t, leader, "app", f.key); kv != nil {
			t.Errorf("put %s failed with %v (%v, reason %q), yet it was applied: the error must carry the reason %s",
				f.key, f.err, status.Code(f.err), storev1.ErrorReason(f.err), storev1.ReasonOutcomeUnknown)
		}
	}
	t.Logf("%d writes acknowledged, %d failed (%d with outcome unknown)", acked.Load(), len(failures), unknown)
	if afterOK.Load() == 0 {
		t.Errorf("no write sent after the leader stopped succeeded: they must go to the new leader")
	}
}
