package test

import (
	"context"
	"fmt"
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

// TestCallsReachAPluginRunningOnAnotherNode: echo's bundle is on n2 only,
// so n2 alone runs it; plain gRPC clients of n1 and n3 reach it all the
// same (their nodes relay the calls to n2 over the cluster RPC port), and
// reflection on every node describes it. Once n2 is gone, calls fail
// UNAVAILABLE naming the plugin, with the router's ErrorInfo reason.
func TestCallsReachAPluginRunningOnAnotherNode(t *testing.T) {
	agents := NewCluster(t, 3)
	n1, n2, n3 := agents[0], agents[1], agents[2]
	n2.Drop(bundlePath("echo", "1.0.0"))
	n2.WaitRunning("echo", "1.0.0")

	// n1 and n3 have no instance of their own: the bundle's files are not
	// there to start one.
	for _, a := range []*ClusterAgent{n1, n3} {
		testenv.WaitFor(t, 30*time.Second, a.Node+" to know of echo without running it", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			resp, err := a.Operator().GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: "echo"})
			if err != nil {
				return err
			}
			if st := resp.GetPlugin().GetState(); st == operatorv1.InstanceState_INSTANCE_STATE_RUNNING {
				return fmt.Errorf("echo runs on %s itself (state %s): the test needs a node without an instance", a.Node, st)
			}
			return nil
		})
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
