package router

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

func TestUnaryWithMetadata(t *testing.T) {
	for _, withFiles := range []bool{true, false} {
		name := map[bool]string{true: "descriptors", false: "no-descriptors"}[withFiles]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			if !withFiles {
				// Without descriptors a unary call takes the bidi path.
				e.r.SetBackend("echo", e.be.backend(t))
			}
			ctx := metadata.AppendToOutgoingContext(testCtx(t),
				"x-client", "hello", "x-token-bin", string([]byte{0, 1, 2}), "grpc-custom", "hop")
			var hdr, trl metadata.MD
			resp, err := e.echo.Echo(ctx, &echov1.EchoRequest{Message: "hi"}, grpc.Header(&hdr), grpc.Trailer(&trl))
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetMessage() != "hi" || resp.GetVersion() != "1.0.0" {
				t.Fatalf("response %v", resp)
			}
			if got := hdr.Get("x-backend-version"); len(got) != 1 || got[0] != "1.0.0" {
				t.Errorf("header x-backend-version = %q", got)
			}
			if got := trl.Get("x-trailer"); len(got) != 1 || got[0] != "t-1.0.0" {
				t.Errorf("trailer x-trailer = %q", got)
			}

			seen := e.be.echo.last.Load().md
			if got := seen.Get("x-client"); len(got) != 1 || got[0] != "hello" {
				t.Errorf("backend saw x-client = %q", got)
			}
			if got := seen.Get("x-token-bin"); len(got) != 1 || got[0] != string([]byte{0, 1, 2}) {
				t.Errorf("backend saw x-token-bin = %q", got)
			}
			if got := seen.Get("grpc-custom"); len(got) != 0 {
				t.Errorf("hop-by-hop grpc-custom reached the backend: %q", got)
			}
			for _, ua := range seen.Get("user-agent") {
				if strings.Contains(ua, "test-client") {
					t.Errorf("the client's user-agent reached the backend: %q", ua)
				}
			}
			if got := seen.Get(":authority"); len(got) != 1 || got[0] == e.addr {
				t.Errorf("backend saw :authority %q, want its own address", got)
			}
		})
	}
}

func TestServerStream(t *testing.T) {
	e := newEnv(t)
	var hdr metadata.MD
	stream, err := e.echo.EchoStream(testCtx(t), &echov1.EchoStreamRequest{Message: "s", Count: 5}, grpc.Header(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	got, err := collect(stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("got %d responses, want 5", len(got))
	}
	for i, m := range got {
		if m.GetSequence() != int32(i) || m.GetMessage() != "s" || m.GetVersion() != "1.0.0" {
			t.Errorf("response %d: %v", i, m)
		}
	}
	if v := hdr.Get("x-backend-version"); len(v) != 1 {
		t.Errorf("header = %v", hdr)
	}
	if v := stream.Trailer().Get("x-trailer"); len(v) != 1 || v[0] != "t-1.0.0" {
		t.Errorf("trailer = %v", stream.Trailer())
	}
}

// TestStreamHeadersBeforeMessages checks the backend's headers reach the
// client before its first message does.
func TestStreamHeadersBeforeMessages(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	stream, err := e.echo.EchoStream(ctx, &echov1.EchoStreamRequest{Message: "slow", Count: 2, IntervalMs: 60_000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the first message comes at once
		t.Fatal(err)
	}
	hdr, err := stream.Header()
	if err != nil || len(hdr.Get("x-backend-version")) != 1 {
		t.Fatalf("header %v, %v", hdr, err)
	}
}

func TestBidiAndClientStreams(t *testing.T) {
	e := newEnv(t)
	bidi := &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}

	t.Run("bidi", func(t *testing.T) {
		cs, err := e.conn.NewStream(testCtx(t), bidi, "/test.v1.ChatService/Chat")
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{"a", "b", "c"} {
			if err := cs.SendMsg(wrapperspb.String(w)); err != nil {
				t.Fatal(err)
			}
			got := new(wrapperspb.StringValue)
			if err := cs.RecvMsg(got); err != nil {
				t.Fatal(err)
			}
			if got.GetValue() != "echo:"+w {
				t.Fatalf("got %q", got.GetValue())
			}
		}
		// The half-close must reach the backend, which then says "done".
		if err := cs.CloseSend(); err != nil {
			t.Fatal(err)
		}
		got := new(wrapperspb.StringValue)
		if err := cs.RecvMsg(got); err != nil || got.GetValue() != "done" {
			t.Fatalf("after half-close: %q, %v", got.GetValue(), err)
		}
		if err := cs.RecvMsg(got); err != io.EOF {
			t.Fatalf("end of stream: %v", err)
		}
		if v := cs.Trailer().Get("x-chat"); len(v) != 1 || v[0] != "bye" {
			t.Errorf("trailer %v", cs.Trailer())
		}
	})

	t.Run("client-stream", func(t *testing.T) {
		cs, err := e.conn.NewStream(testCtx(t), &grpc.StreamDesc{ClientStreams: true}, "/test.v1.ChatService/Sum")
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{"x", "y", "z"} {
			if err := cs.SendMsg(wrapperspb.String(w)); err != nil {
				t.Fatal(err)
			}
		}
		if err := cs.CloseSend(); err != nil {
			t.Fatal(err)
		}
		got := new(wrapperspb.StringValue)
		if err := cs.RecvMsg(got); err != nil || got.GetValue() != "xyz" {
			t.Fatalf("got %q, %v", got.GetValue(), err)
		}
	})

	t.Run("dynamic-unary", func(t *testing.T) {
		// A method only the plugin's reflection describes.
		in := dynamicpb.NewMessage(dynFile.Messages().ByName("PingRequest"))
		in.Set(in.Descriptor().Fields().ByName("text"), protoreflect.ValueOfString("p"))
		out := new(wrapperspb.StringValue)
		if err := e.conn.Invoke(testCtx(t), "/dyn.v1.DynService/Ping", in, out); err != nil {
			t.Fatal(err)
		}
		if out.GetValue() != "pong:p" {
			t.Fatalf("got %q", out.GetValue())
		}
	})
}

func TestDeadline(t *testing.T) {
	e := newEnv(t)

	t.Run("propagated", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		want, _ := ctx.Deadline()
		if _, err := e.echo.Echo(ctx, &echov1.EchoRequest{Message: "dl"}); err != nil {
			t.Fatal(err)
		}
		seen := e.be.echo.last.Load()
		if !seen.hasDL {
			t.Fatal("the backend saw no deadline")
		}
		// The backend's deadline is the caller's, less the time the hops
		// took (grpc-timeout rounds up to its unit: allow a little after).
		if d := want.Sub(seen.deadline); d > time.Second || d < -10*time.Millisecond {
			t.Fatalf("backend deadline %v, caller's %v", seen.deadline, want)
		}
	})

	t.Run("exceeded", func(t *testing.T) {
		before := e.be.echo.cancelled.Load()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := e.echo.Echo(ctx, &echov1.EchoRequest{Message: msgBlock})
		wantStatus(t, err, codes.DeadlineExceeded, "")
		testenv.Eventually(t, 10*time.Second, "the backend call to end", func() bool { return e.be.echo.cancelled.Load() == before+1 })
		testenv.Eventually(t, 10*time.Second, "no call in flight", func() bool { return e.b.InFlight() == 0 })
	})
}

func TestCancellationReachesBackend(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	stream, err := e.echo.EchoStream(ctx, &echov1.EchoStreamRequest{Message: msgBlock, Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if e.b.InFlight() != 1 {
		t.Fatalf("in flight = %d, want 1", e.b.InFlight())
	}
	cancel()
	testenv.Eventually(t, 10*time.Second, "the backend to see the cancellation", func() bool { return e.be.echo.cancelled.Load() == 1 })
	_, err = stream.Recv()
	wantStatus(t, err, codes.Canceled, "")
	testenv.Eventually(t, 10*time.Second, "no call in flight", func() bool { return e.b.InFlight() == 0 })
}

func TestBackendStatusPassedUnchanged(t *testing.T) {
	e := newEnv(t)
	var trl metadata.MD
	_, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: msgFail}, grpc.Trailer(&trl))

	// What the same call gets from the backend directly.
	_, direct := echov1.NewEchoServiceClient(dialClient(t, e.be.addr)).Echo(testCtx(t), &echov1.EchoRequest{Message: msgFail})

	got, want := status.Convert(err), status.Convert(direct)
	if !proto.Equal(got.Proto(), want.Proto()) {
		t.Fatalf("routed status %v, direct %v", got.Proto(), want.Proto())
	}
	if got.Code() != codes.FailedPrecondition || len(got.Details()) != 2 {
		t.Fatalf("status %v", got.Proto())
	}
	if v := trl.Get("x-trailer"); len(v) != 1 {
		t.Errorf("trailer of a failed call = %v", trl)
	}
}

func TestLargeMessages(t *testing.T) {
	e := newEnv(t)
	big := strings.Repeat("0123456789abcdef", 8<<20/16) // 8 MiB
	resp, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: big})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMessage() != big {
		t.Fatalf("got %d bytes back, want %d equal ones", len(resp.GetMessage()), len(big))
	}
	stream, err := e.echo.EchoStream(testCtx(t), &echov1.EchoStreamRequest{Message: big, Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	got, err := collect(stream)
	if err != nil || len(got) != 3 || got[2].GetMessage() != big {
		t.Fatalf("stream: %d responses, %v", len(got), err)
	}
}

func TestUnknownService(t *testing.T) {
	e := newEnv(t)
	err := e.conn.Invoke(testCtx(t), "/foo.v1.Bar/Baz", &emptypb.Empty{}, &emptypb.Empty{})
	wantStatus(t, err, codes.Unimplemented,
		"unknown service foo.v1.Bar: no plugin registered with the agent serves it (see 'plughost plugin list')")
	if got := e.r.Stats().UnknownService; got != 1 {
		t.Fatalf("UnknownService = %d", got)
	}
}

func TestUnavailable(t *testing.T) {
	e := newEnv(t)
	e.r.SetBackend("echo", nil)
	e.r.SetState("echo", "failed: exited with status 3")
	_, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
	wantStatus(t, err, codes.Unavailable, `plugin "echo" has no serving instance (state: failed: exited with status 3); see 'plughost plugin status echo', then 'plughost plugin restart echo' once it is fixed`)

	e.r.SetState("echo", "backoff: exited with status 2")
	_, err = e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
	wantStatus(t, err, codes.Unavailable, `plugin "echo" has no serving instance (state: backoff: exited with status 2); the agent restarts it by itself: retry later, or see 'plughost plugin status echo'`)

	e.r.SetState("echo", "failed: crash loop (fix the plugin, then 'plughost plugin restart echo' or add a new version)")
	_, err = e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
	wantStatus(t, err, codes.Unavailable, `plugin "echo" has no serving instance (state: failed: crash loop (fix the plugin, then 'plughost plugin restart echo' or add a new version))`)
}

func TestBackendConnError(t *testing.T) {
	e := newEnv(t)
	dead := startBackend(t, "9.9.9", reflectNone)
	dead.srv.Stop()
	e.r.SetBackend("echo", dead.backend(t))
	_, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.HasPrefix(st.Message(), `plugin "echo" version 9.9.9 is unreachable: `) {
		t.Fatalf("status %v %q", st.Code(), st.Message())
	}
}

func TestAgentOwnServicesWithRouterCodec(t *testing.T) {
	e := newEnv(t)
	resp, err := healthpb.NewHealthClient(e.conn).Check(testCtx(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v", resp.GetStatus())
	}
}

func TestDeclare(t *testing.T) {
	r := New(Config{})
	if err := r.Declare("a", []string{"x.v1.S", "x.v1.T"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Declare("a", []string{"x.v1.S"}); err != nil {
		t.Fatalf("redeclaring one's own service: %v", err)
	}
	err := r.Declare("b", []string{"y.v1.U", "x.v1.S"})
	if !errors.Is(err, ErrServiceTaken) || !strings.Contains(err.Error(), "x.v1.S") || !strings.Contains(err.Error(), `"a"`) {
		t.Fatalf("conflict: %v", err)
	}
	if _, ok := (*r.routes.Load())["y.v1.U"]; ok {
		t.Fatal("a failed Declare changed the routes")
	}
	if err := r.Declare("b", []string{"x.v1.T"}); err != nil {
		t.Fatalf("x.v1.T was dropped by a's second Declare: %v", err)
	}
	for _, bad := range []string{"", "x.v1.", "has space", "/x.v1.S"} {
		if err := r.Declare("c", []string{bad}); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Declare(%q) = %v, want ErrInvalidName", bad, err)
		}
	}
	if err := r.Declare("", []string{"z.v1.S"}); !errors.Is(err, ErrInvalidName) {
		t.Errorf("empty plugin name: %v", err)
	}
}

func TestUndeclare(t *testing.T) {
	e := newEnv(t)
	e.r.Undeclare("echo")
	_, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
	wantStatus(t, err, codes.Unimplemented, "")
	// The service is free for another plugin, and back for this one.
	if err := e.r.Declare("other", []string{echoService}); err != nil {
		t.Fatal(err)
	}
	e.r.Undeclare("other")
	if err := e.r.Declare("echo", []string{echoService}); err != nil {
		t.Fatal(err)
	}
	// The backend stayed: calls flow again at once.
	if _, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"}); err != nil {
		t.Fatal(err)
	}
}

func TestStats(t *testing.T) {
	e := newEnv(t)
	for range 3 {
		if _, err := e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: msgFail})
	e.r.SetBackend("echo", nil)
	_, _ = e.echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})

	st := e.r.Stats()
	if len(st.Plugins) != 1 {
		t.Fatalf("stats %+v", st)
	}
	p := st.Plugins[0]
	if p.Plugin != "echo" || p.Calls != 5 || p.Failures[codes.FailedPrecondition] != 1 ||
		p.Failures[codes.Unavailable] != 1 || len(p.Failures) != 2 {
		t.Fatalf("echo stats %+v", p)
	}
}

func testCtx(t testing.TB) context.Context { return testenv.Context(t, 30*time.Second) }
