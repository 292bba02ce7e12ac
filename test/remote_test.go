package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jhump/protoreflect/grpcreflect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/router"
	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// TestCallsReachAPluginRunningOnAnotherNode: echo cannot start on n1 and
// n3 (a memory override starves it), so n2 alone runs it; plain gRPC
// clients of n1 and n3 reach it all the same (their nodes relay the calls to n2 over the cluster RPC port), and
// reflection on every node describes it. Once n2 is gone, calls fail
// UNAVAILABLE naming the plugin, with the router's ErrorInfo reason.
func TestCallsReachAPluginRunningOnAnotherNode(t *testing.T) {
	// Every node runs every registered plugin until the supervisor runs
	// its assignment; a memory limit echo cannot start under keeps n1 and
	// n3 without an instance of their own.
	starve := filepath.Join(t.TempDir(), "starve.json")
	if err := os.WriteFile(starve, []byte(`{"overrides": {"echo": {"memory_mb": 2}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	agents := NewClusterArgs(t, 3)
	n1, n2, n3 := agents[0], agents[1], agents[2]
	for _, a := range []*ClusterAgent{n1, n3} {
		a.Stop()
		a.Args = append(a.Args, "-config", starve)
	}
	StartAll(n1, n3)
	n2.Drop(bundlePath("echo", "1.0.0"))
	n2.WaitRunning("echo", "1.0.0")

	// n1 and n3 have no instance of their own: echo fails to start there
	// (backing off, or failed after a crash loop), and never runs.
	notRunning := func(a *ClusterAgent) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := a.Operator().GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: "echo"})
		if err != nil {
			return err
		}
		switch st := resp.GetPlugin().GetState(); st {
		case operatorv1.InstanceState_INSTANCE_STATE_BACKOFF, operatorv1.InstanceState_INSTANCE_STATE_FAILED:
			return nil
		default:
			return fmt.Errorf("echo on %s is %s (%s); the test needs it failing there", a.Node, st, resp.GetPlugin().GetLastError())
		}
	}
	for _, a := range []*ClusterAgent{n1, n3} {
		testenv.WaitFor(t, 60*time.Second, "echo to fail on "+a.Node, func() error { return notRunning(a) })
	}

	for _, a := range agents {
		echo := echov1.NewEchoServiceClient(a.Conn())
		testenv.WaitFor(t, 30*time.Second, "a call through "+a.Node+" to reach echo", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "hi"})
			return err
		})
		for i := range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := echo.Echo(ctx, &echov1.EchoRequest{Message: fmt.Sprint("m", i)})
			cancel()
			if err != nil || resp.GetMessage() != fmt.Sprint("m", i) || resp.GetVersion() != "1.0.0" {
				t.Fatalf("call %d through %s: %v %v", i, a.Node, resp, err)
			}
		}
		// A stream too.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		stream, err := echo.EchoStream(ctx, &echov1.EchoStreamRequest{Message: "s", Count: 3})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if m, err := stream.Recv(); err != nil || m.GetMessage() != "s" {
				t.Fatalf("stream through %s, message %d: %v %v", a.Node, i, m, err)
			}
		}
		cancel()

		// Reflection on every node lists and describes it.
		testenv.WaitFor(t, 10*time.Second, a.Node+"'s reflection to describe echo", func() error {
			rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer rcancel()
			rc := grpcreflect.NewClientAuto(rctx, a.Conn())
			defer rc.Reset()
			svcs, err := rc.ListServices()
			if err != nil {
				return err
			}
			if !slices.Contains(svcs, "echo.v1.EchoService") {
				return fmt.Errorf("it lists %v", svcs)
			}
			sd, err := rc.ResolveService("echo.v1.EchoService")
			if err != nil {
				return err
			}
			if sd.FindMethodByName("Echo") == nil {
				return fmt.Errorf("echo.v1.EchoService has no Echo method")
			}
			return nil
		})
	}
	// Meanwhile echo never ran on n1 or n3: what answered was n2's.
	for _, a := range []*ClusterAgent{n1, n3} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := a.Operator().GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: "echo"})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if p := resp.GetPlugin(); p.GetState() == operatorv1.InstanceState_INSTANCE_STATE_RUNNING || p.GetRunningVersion() != "" {
			t.Fatalf("echo came up on %s (%s, running %q): the calls may not have crossed nodes", a.Node, p.GetState(), p.GetRunningVersion())
		}
	}
	// 'plughost call' works through reflection, on a node without echo.
	if out, errOut, code := n1.CLI("call", "echo.v1.EchoService/Echo", "-d", `{"message":"via n1"}`); code != 0 || !strings.Contains(out, "via n1") {
		t.Fatalf("plughost call through n1: exit %d, %s%s", code, out, errOut)
	}

	// With n2 gone no instance serves anywhere: the call fails naming echo.
	n2.Stop()
	echo := echov1.NewEchoServiceClient(n1.Conn())
	testenv.WaitFor(t, 30*time.Second, "calls through n1 to fail for want of an instance", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "hi"})
		if status.Code(err) != codes.Unavailable || router.ErrorReason(err) != router.ReasonNoInstance {
			return fmt.Errorf("got %v (reason %q)", err, router.ErrorReason(err))
		}
		if msg := status.Convert(err).Message(); !strings.Contains(msg, `"echo"`) {
			return fmt.Errorf("the message does not name the plugin: %s", msg)
		}
		return nil
	})
}
