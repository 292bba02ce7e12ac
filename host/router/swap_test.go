package router

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// TestSwitchMidTraffic switches the backend while unary calls run in a loop
// and a stream is open on the old one: the stream finishes on the old
// backend, calls made after the switch reach the new one, none fails.
func TestSwitchMidTraffic(t *testing.T) {
	e := newEnv(t)
	v2 := startBackend(t, "2.0.0", reflectBoth)

	stream, err := e.echo.EchoStream(testCtx(t), &echov1.EchoStreamRequest{Message: msgGate, Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetVersion() != "1.0.0" {
		t.Fatalf("first response %v, %v", first, err)
	}

	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		failures atomic.Int64
		calls    atomic.Int64
		firstErr atomic.Pointer[error]
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "load"}); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
				calls.Add(1)
			}
		}()
	}
	testenv.Eventually(t, 10*time.Second, "traffic to flow", func() bool { return calls.Load() > 20 })

	newB := v2.backend(t, echoService)
	if old := e.r.SetBackend("echo", newB); old != e.b {
		t.Fatalf("SetBackend returned %v, want the v1 backend", old)
	}
	for range 20 {
		resp, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "after"})
		if err != nil || resp.GetVersion() != "2.0.0" {
			t.Fatalf("call after the switch: %v, %v", resp, err)
		}
	}
	atSwitch := calls.Load()
	testenv.Eventually(t, 10*time.Second, "traffic on the new backend", func() bool { return calls.Load() > atSwitch+20 })

	// The old stream still runs on v1 and finishes there.
	if e.b.InFlight() != 1 {
		t.Fatalf("v1 in flight = %d, want the stream alone", e.b.InFlight())
	}
	close(e.be.echo.gate)
	rest, err := collect(stream)
	if err != nil || len(rest) != 2 {
		t.Fatalf("rest of the stream: %d, %v", len(rest), err)
	}
	for _, m := range rest {
		if m.GetVersion() != "1.0.0" {
			t.Fatalf("stream moved to %s", m.GetVersion())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cut := e.b.Wait(ctx); cut != 0 {
		t.Fatalf("Wait cut %d calls, want the old backend drained", cut)
	}

	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d calls failed during the switch, first: %v", n, calls.Load(), *firstErr.Load())
	}
}

// TestWaitCountsCutStreams drains an old backend whose streams do not end:
// Wait gives up with the number of streams stopping it will cut.
func TestWaitCountsCutStreams(t *testing.T) {
	e := newEnv(t)
	v2 := startBackend(t, "2.0.0", reflectBoth)

	var streams []echov1.EchoService_EchoStreamClient
	for range 3 {
		s, err := e.echo.EchoStream(testCtx(t), &echov1.EchoStreamRequest{Message: msgBlock, Count: 2})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	old := e.r.SetBackend("echo", v2.backend(t, echoService))
	if old.InFlight() != 3 {
		t.Fatalf("in flight = %d, want 3", old.InFlight())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if cut := old.Wait(ctx); cut != 3 {
		t.Fatalf("Wait returned %d, want 3 streams cut", cut)
	}

	// Stopping the old instance cuts them; the count drains to zero.
	e.be.srv.Stop()
	for _, s := range streams {
		if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
			t.Fatalf("cut stream ended with %v, want Unavailable", err)
		}
	}
	if cut := old.Wait(testCtx(t)); cut != 0 {
		t.Fatalf("after the stop Wait returned %d", cut)
	}
}

// TestWaitWakesOnDrain checks Wait returns as soon as the last call ends.
func TestWaitWakesOnDrain(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	s, err := e.echo.EchoStream(ctx, &echov1.EchoStreamRequest{Message: msgBlock, Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	done := make(chan int64)
	go func() { done <- e.b.Wait(testCtx(t)) }()
	testenv.Eventually(t, 10*time.Second, "Wait to start waiting", func() bool { return e.b.waiters.Load() == 1 })
	cancel()
	if cut := <-done; cut != 0 {
		t.Fatalf("Wait returned %d", cut)
	}
}

func TestHolding(t *testing.T) {
	t.Run("served when a backend appears", func(t *testing.T) {
		e := newEnv(t)
		old := e.r.SetBackend("echo", nil)
		e.r.SetState("echo", "restarting")
		e.r.SetHolding("echo", true)

		type result struct {
			resp *echov1.EchoResponse
			err  error
		}
		res := make(chan result, 1)
		go func() {
			resp, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "held"})
			res <- result{resp, err}
		}()
		testenv.Eventually(t, 10*time.Second, "the call to be held", func() bool { return e.r.heldCalls("echo") == 1 })
		e.r.SetBackend("echo", old)
		e.r.SetHolding("echo", false)
		r := <-res
		if r.err != nil || r.resp.GetMessage() != "held" {
			t.Fatalf("held call: %v, %v", r.resp, r.err)
		}
	})

	t.Run("gives up after HoldTimeout", func(t *testing.T) {
		tr := startRouter(t, Config{HoldTimeout: 100 * time.Millisecond})
		if err := tr.r.Declare("echo", []string{echoService}); err != nil {
			t.Fatal(err)
		}
		tr.r.SetState("echo", "restarting")
		tr.r.SetHolding("echo", true)
		start := time.Now()
		_, err := echov1.NewEchoServiceClient(tr.conn).Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
		wantStatus(t, err, codes.Unavailable,
			`plugin "echo" has no serving instance (state: restarting): no instance came up within 100ms; retry in a moment`)
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Fatalf("gave up after %v", d)
		}
	})

	t.Run("own deadline first", func(t *testing.T) {
		e := newEnv(t)
		e.r.SetBackend("echo", nil)
		e.r.SetHolding("echo", true)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := e.echo.Echo(ctx, &echov1.EchoRequest{Message: "x"})
		wantStatus(t, err, codes.DeadlineExceeded, "")
	})

	t.Run("hold released without a backend", func(t *testing.T) {
		e := newEnv(t)
		e.r.SetBackend("echo", nil)
		e.r.SetState("echo", "failed: health check")
		e.r.SetHolding("echo", true)
		errc := make(chan error, 1)
		go func() {
			_, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
			errc <- err
		}()
		testenv.Eventually(t, 10*time.Second, "the call to be held", func() bool { return e.r.heldCalls("echo") == 1 })
		e.r.SetHolding("echo", false)
		err := <-errc
		wantStatus(t, err, codes.Unavailable, `plugin "echo" has no serving instance (state: failed: health check); see 'plughost plugin status echo', then 'plughost plugin restart echo' once it is fixed`)
	})

	t.Run("not held by default", func(t *testing.T) {
		e := newEnv(t)
		e.r.SetBackend("echo", nil)
		_, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
		if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "state: unknown") {
			t.Fatalf("status %v", st)
		}
	})
}
