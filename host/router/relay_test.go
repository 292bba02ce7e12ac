package router

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// relayedConns counts the caller connections the relay moves frames for.
func (r *Router) relayedConns() int {
	rl := r.relay.Load()
	rl.mu.Lock()
	defer rl.mu.Unlock()
	n := 0
	for _, c := range rl.accepted {
		if c != nil {
			n++
		}
	}
	return n
}

// paths returns a client connection of each kind: one relayed (its first
// call is to a plugin) and one handed to the agent's gRPC server (its first
// call is to the agent's own API), which proxies plugin calls itself.
func paths(t *testing.T, e *env) map[string]*grpc.ClientConn {
	t.Helper()
	relayed := dialClient(t, e.addr)
	if _, err := echov1.NewEchoServiceClient(relayed).Echo(testCtx(t), &echov1.EchoRequest{Message: "first"}); err != nil {
		t.Fatal(err)
	}
	handed := dialClient(t, e.addr)
	if got, err := agentInfo(testCtx(t), handed, "first"); err != nil || got != "agent:first" {
		t.Fatalf("agent's own service: %q, %v", got, err)
	}
	return map[string]*grpc.ClientConn{"relayed": relayed, "handed-off": handed}
}

func TestConnectionsClassifiedByFirstCall(t *testing.T) {
	e := newEnv(t) // e.conn made no call yet
	before := e.r.relayedConns()
	conns := paths(t, e)
	if got := e.r.relayedConns(); got != before+1 {
		t.Fatalf("%d relayed connections, want %d: only the one that called a plugin first", got, before+1)
	}
	for name, conn := range conns {
		t.Run(name, func(t *testing.T) {
			// Both kinds reach both the plugin and the agent's own services.
			resp, err := echov1.NewEchoServiceClient(conn).Echo(testCtx(t), &echov1.EchoRequest{Message: name})
			if err != nil || resp.GetMessage() != name {
				t.Fatalf("echo: %v, %v", resp, err)
			}
			if got, err := agentInfo(testCtx(t), conn, name); err != nil || got != "agent:"+name {
				t.Fatalf("agent's own service: %q, %v", got, err)
			}
			stream, err := echov1.NewEchoServiceClient(conn).EchoStream(testCtx(t), &echov1.EchoStreamRequest{Message: "s", Count: 5})
			if err != nil {
				t.Fatal(err)
			}
			if got, err := collect(stream); err != nil || len(got) != 5 {
				t.Fatalf("stream: %d responses, %v", len(got), err)
			}
		})
	}
	var calls uint64
	for _, p := range e.r.Stats().Plugins {
		if p.Plugin == "echo" {
			calls = p.Calls
		}
	}
	// first, then echo and stream on each path
	if calls != 5 {
		t.Fatalf("router counted %d calls to echo, want 5", calls)
	}
}

// TestConcurrentLargeStreams moves more data than every window involved
// (the caller's, the relay's, the backend's) on many streams at once, in
// both directions, on both kinds of connection.
func TestConcurrentLargeStreams(t *testing.T) {
	e := newEnv(t)
	for name, conn := range paths(t, e) {
		t.Run(name, func(t *testing.T) {
			const streams, msgs, size = 24, 12, 300 << 10
			var wg sync.WaitGroup
			errs := make(chan error, streams)
			for i := range streams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- chatBig(testCtx(t), conn, i, msgs, size)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// chatBig sends msgs messages of size bytes on a Chat stream, all before
// reading any answer, so windows fill up, then checks every answer.
func chatBig(ctx context.Context, conn *grpc.ClientConn, id, msgs, size int) error {
	cs, err := conn.NewStream(ctx, &chatServiceDesc.Streams[0], "/test.v1.ChatService/Chat")
	if err != nil {
		return err
	}
	payload := func(j int) string {
		return strings.Repeat(fmt.Sprintf("%03d-%03d|", id, j), size/8)
	}
	sendErr := make(chan error, 1)
	go func() {
		for j := range msgs {
			if err := cs.SendMsg(wrapperspb.String(payload(j))); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- cs.CloseSend()
	}()
	for j := range msgs {
		in := new(wrapperspb.StringValue)
		if err := cs.RecvMsg(in); err != nil {
			return fmt.Errorf("stream %d message %d: %w", id, j, err)
		}
		if in.GetValue() != "echo:"+payload(j) {
			return fmt.Errorf("stream %d message %d: got %d bytes, not the echo of what was sent", id, j, len(in.GetValue()))
		}
	}
	done := new(wrapperspb.StringValue)
	if err := cs.RecvMsg(done); err != nil || done.GetValue() != "done" {
		return fmt.Errorf("stream %d end: %q, %v", id, done.GetValue(), err)
	}
	return <-sendErr
}

func TestBackendStopsMidCall(t *testing.T) {
	e := newEnv(t)
	conns := paths(t, e)
	errs := make(chan error, len(conns))
	for _, conn := range conns {
		go func() {
			_, err := echov1.NewEchoServiceClient(conn).Echo(testCtx(t), &echov1.EchoRequest{Message: msgBlock})
			errs <- err
		}()
	}
	testenv.Eventually(t, 10*time.Second, "both calls in flight", func() bool { return e.b.InFlight() == 2 })
	e.be.srv.Stop()
	for range conns {
		err := <-errs
		if st := status.Convert(err); st.Code() != codes.Unavailable {
			t.Fatalf("call cut by the backend's end: %v", err)
		}
	}
	testenv.Eventually(t, 10*time.Second, "no call in flight", func() bool { return e.b.InFlight() == 0 })
}

func TestRelayNamesTheLostBackend(t *testing.T) {
	e := newEnv(t)
	errc := make(chan error, 1)
	go func() {
		_, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: msgBlock})
		errc <- err
	}()
	testenv.Eventually(t, 10*time.Second, "the call in flight", func() bool { return e.b.InFlight() == 1 })
	// The backend's process dies: its connections close without GOAWAY.
	e.b.rcMu.Lock()
	rc := e.b.rc
	e.b.rcMu.Unlock()
	_ = rc.nc.Close()
	err := <-errc
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.HasPrefix(st.Message(), `plugin "echo" version 1.0.0: the connection to it `) {
		t.Fatalf("status %v %q", st.Code(), st.Message())
	}
	// The next call opens a new connection.
	if _, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "again"}); err != nil {
		t.Fatal(err)
	}
}

func TestStopWaitsForCalls(t *testing.T) {
	e := newEnv(t)
	stream, err := e.echo.EchoStream(testCtx(t), &echov1.EchoStreamRequest{Message: msgGate, Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.r.Stop(ctx)
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Fatal("Stop returned with a call in flight")
	case <-time.After(200 * time.Millisecond):
	}
	close(e.be.echo.gate)
	got, err := collect(stream)
	if err != nil || len(got) != 2 {
		t.Fatalf("the rest of the stream: %d responses, %v", len(got), err)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return after the last call ended")
	}
}

func TestHeldCallCancelledByCaller(t *testing.T) {
	e := newEnv(t)
	e.r.SetBackend("echo", nil)
	e.r.SetHolding("echo", true)
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() {
		_, err := e.echo.Echo(ctx, &echov1.EchoRequest{Message: "x"})
		errc <- err
	}()
	testenv.Eventually(t, 10*time.Second, "the call to be held", func() bool { return e.r.heldCalls("echo") == 1 })
	cancel()
	wantStatus(t, <-errc, codes.Canceled, "")
	testenv.Eventually(t, 10*time.Second, "the hold to end", func() bool { return e.r.heldCalls("echo") == 0 })
}

func TestHeldCallCarriesHeldTrailer(t *testing.T) {
	e := newEnv(t)
	old := e.r.SetBackend("echo", nil)
	e.r.SetHolding("echo", true)
	var trl metadata.MD
	errc := make(chan error, 1)
	big := bytes.Repeat([]byte("h"), 200<<10) // data arrives while held
	go func() {
		_, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: string(big)}, grpc.Trailer(&trl))
		errc <- err
	}()
	testenv.Eventually(t, 10*time.Second, "the call to be held", func() bool { return e.r.heldCalls("echo") == 1 })
	time.Sleep(50 * time.Millisecond)
	e.r.SetBackend("echo", old)
	e.r.SetHolding("echo", false)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	v := trl.Get(HeldTrailer)
	if len(v) != 1 {
		t.Fatalf("trailers %v carry no %s", trl, HeldTrailer)
	}
	if ms, err := strconv.Atoi(v[0]); err != nil || ms < 50 {
		t.Fatalf("%s = %q, want at least 50", HeldTrailer, v[0])
	}
}

func TestGRPCTimeoutFormat(t *testing.T) {
	for _, d := range []time.Duration{1, 999, time.Microsecond, 1500 * time.Millisecond, 3 * time.Hour, 100 * 365 * 24 * time.Hour} {
		s := formatTimeout(d)
		got, ok := parseTimeout(s)
		if !ok || got < d || len(s) > 9 {
			t.Errorf("formatTimeout(%v) = %q, parsed back as %v, %v", d, s, got, ok)
		}
	}
	for _, bad := range []string{"", "5", "123456789S", "5x", "-1S"} {
		if _, ok := parseTimeout(bad); ok {
			t.Errorf("parseTimeout(%q) accepted", bad)
		}
	}
}
