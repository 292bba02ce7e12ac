package test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jhump/protoreflect/grpcreflect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	counterv1 "github.com/plughost/plughost/plugins/counter/proto/counter/v1"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// TestEndToEnd walks the whole first slice: bundles dropped, plugins called
// through the agent with a plain gRPC client and with 'plughost call',
// versions pinned and unpinned, and a clean shutdown with no plugin left.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	for _, b := range []string{bundlePath("echo", "1.0.0"), bundlePath("echo", "1.1.0"), bundlePath("counter", "1.0.0")} {
		a.Drop(b)
	}
	// Unpinned, the highest registered version runs.
	a.WaitRunning("echo", "1.1.0")
	a.WaitRunning("counter", "1.0.0")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	echo := echov1.NewEchoServiceClient(a.Conn())

	t.Run("unary with metadata", func(t *testing.T) {
		var header metadata.MD
		resp, err := echo.Echo(metadata.AppendToOutgoingContext(ctx, "x-test", "42"), &echov1.EchoRequest{Message: "hello"}, grpcHeader(&header))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetMessage() != "hello" || resp.GetVersion() != "1.1.0" {
			t.Fatalf("Echo = %q from %q, want hello from 1.1.0", resp.GetMessage(), resp.GetVersion())
		}
	})

	t.Run("server stream", func(t *testing.T) {
		stream, err := echo.EchoStream(ctx, &echov1.EchoStreamRequest{Message: "tick", Count: 5, IntervalMs: 10})
		if err != nil {
			t.Fatal(err)
		}
		var got []int32
		for {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, m.GetSequence())
		}
		if len(got) != 5 {
			t.Fatalf("stream sent %d messages %v, want 5", len(got), got)
		}
	})

	t.Run("deadline carried", func(t *testing.T) {
		sctx, scancel := context.WithTimeout(ctx, 150*time.Millisecond)
		defer scancel()
		stream, err := echo.EchoStream(sctx, &echov1.EchoStreamRequest{Message: "slow", Count: 100, IntervalMs: 50})
		if err != nil {
			t.Fatal(err)
		}
		for {
			_, err = stream.Recv()
			if err != nil {
				break
			}
		}
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("stream ended with %v, want DeadlineExceeded", err)
		}
	})

	t.Run("counter exact under concurrency", func(t *testing.T) {
		counter := counterv1.NewCounterServiceClient(a.Conn())
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 25; i++ {
					if _, err := counter.Increment(ctx, &counterv1.IncrementRequest{Name: "e2e", Delta: 1}); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		resp, err := counter.Get(ctx, &counterv1.GetRequest{Name: "e2e"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetValue() != 200 {
			t.Fatalf("counter = %d, want 200", resp.GetValue())
		}
		// The count lives in the counter's own namespace of the store.
		out, errOut, code := a.CLI("store", "get", "-ns", "counter", "counters/e2e")
		if code != 0 || strings.TrimSpace(out) != "200" {
			t.Fatalf("store get = %q %q (exit %d), want 200", out, errOut, code)
		}
	})

	t.Run("plughost call", func(t *testing.T) {
		out, errOut, code := a.CLI("call", "echo.v1.EchoService/Echo", "-d", `{"message":"from the cli"}`)
		if code != 0 {
			t.Fatalf("call exit %d: %s", code, errOut)
		}
		var resp struct{ Message, Version string }
		if err := json.Unmarshal([]byte(out), &resp); err != nil {
			t.Fatalf("call printed %q: %v", out, err)
		}
		if resp.Message != "from the cli" || resp.Version != "1.1.0" {
			t.Fatalf("call = %+v", resp)
		}
		// Flags after the method are honoured (issue 11: -d was dropped and
		// an empty request sent).
		out, errOut, code = a.CLI("call", "-addr", a.API, "echo.v1.EchoService/Echo", "-d", `{"message":"flags after the method"}`)
		resp.Message = ""
		if err := json.Unmarshal([]byte(out), &resp); code != 0 || err != nil || resp.Message != "flags after the method" {
			t.Fatalf("call -addr ADDR METHOD -d JSON: exit %d, printed %q %q, want the message echoed", code, out, errOut)
		}
		out, _, code = a.CLI("call", "echo.v1.EchoService/EchoStream", "-d", `{"message":"s","count":3}`)
		dec := json.NewDecoder(strings.NewReader(out))
		n := 0
		for dec.More() {
			var m struct{ Message string }
			if err := dec.Decode(&m); err != nil || m.Message != "s" {
				t.Fatalf("streaming call printed %q: %v", out, err)
			}
			n++
		}
		if code != 0 || n != 3 {
			t.Fatalf("streaming call exit %d printed %d messages: %q", code, n, out)
		}
		_, errOut, code = a.CLI("call", "nope.v1.Nothing/Do")
		if code != 1 || !strings.Contains(errOut, "nope.v1.Nothing") {
			t.Fatalf("unknown service: exit %d, %q", code, errOut)
		}
		_, _, code = a.CLI("call")
		if code != 2 {
			t.Fatalf("call without a method: exit %d, want 2", code)
		}
	})

	t.Run("unknown service is unimplemented", func(t *testing.T) {
		err := a.Conn().Invoke(ctx, "/nope.v1.Nothing/Do", &echov1.EchoRequest{}, &echov1.EchoResponse{})
		if status.Code(err) != codes.Unimplemented || !strings.Contains(status.Convert(err).Message(), "nope.v1.Nothing") {
			t.Fatalf("got %v, want Unimplemented naming nope.v1.Nothing", err)
		}
	})

	t.Run("reflection lists agent and plugin services", func(t *testing.T) {
		rc := grpcreflect.NewClientAuto(ctx, a.Conn())
		defer rc.Reset()
		svcs, err := rc.ListServices()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"echo.v1.EchoService", "counter.v1.CounterService", "plughost.operator.v1.OperatorService", "plughost.store.v1.StoreService"} {
			if !contains(svcs, want) {
				t.Errorf("reflection lists %v, missing %s", svcs, want)
			}
		}
		if _, err := rc.ResolveService("echo.v1.EchoService"); err != nil {
			t.Errorf("resolving echo.v1.EchoService: %v", err)
		}
	})

	t.Run("pin and unpin", func(t *testing.T) {
		out, errOut, code := a.CLI("plugin", "pin", "echo", "1.0.0")
		if code != 0 {
			t.Fatalf("pin exit %d: %s %s", code, out, errOut)
		}
		resp, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "pinned"})
		if err != nil || resp.GetVersion() != "1.0.0" {
			t.Fatalf("after pin: %v from %q, want 1.0.0", err, resp.GetVersion())
		}
		out, _, code = a.CLI("plugin", "list", "-format", "json")
		var list []map[string]any
		if code != 0 || json.Unmarshal([]byte(out), &list) != nil {
			t.Fatalf("plugin list -format json: exit %d, %q", code, out)
		}
		found := false
		for _, p := range list {
			if p["name"] == "echo" {
				found = true
				if p["pinned_version"] != "1.0.0" || p["running_version"] != "1.0.0" {
					t.Fatalf("list says %v", p)
				}
			}
		}
		if !found {
			t.Fatalf("list has no echo: %v", list)
		}
		if _, _, code := a.CLI("plugin", "pin", "echo", "9.9.9"); code != 1 {
			t.Fatalf("pin of an unknown version: exit %d, want 1", code)
		}
		if _, errOut, code := a.CLI("plugin", "unpin", "echo"); code != 0 {
			t.Fatalf("unpin exit %d: %s", code, errOut)
		}
		resp, err = echo.Echo(ctx, &echov1.EchoRequest{Message: "unpinned"})
		if err != nil || resp.GetVersion() != "1.1.0" {
			t.Fatalf("after unpin: %v from %q, want 1.1.0", err, resp.GetVersion())
		}
		out, _, _ = a.CLI("plugin", "history", "echo")
		for _, want := range []string{"register", "pin", "unpin", "swap"} {
			if !strings.Contains(out, want) {
				t.Errorf("history lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("clean shutdown leaves no plugin process", func(t *testing.T) {
		if len(a.PluginProcesses()) < 2 {
			t.Fatalf("expected echo and counter processes, found %v", a.PluginProcesses())
		}
		a.Stop()
		if a.exitErr != nil {
			t.Fatalf("agent exited with %v", a.exitErr)
		}
		if left := a.PluginProcesses(); len(left) > 0 {
			t.Fatalf("plugin processes left after shutdown: %v", left)
		}
	})
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
