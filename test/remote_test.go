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

// TestCallsReachAPluginRunningOnAnotherNode: echo is placed with count 1,
// so one node runs it; plain gRPC clients of the other two reach it all
// the same (their nodes relay the calls to it over the cluster RPC port),
// and reflection on every node describes it. Once its node is gone the
// calls fail UNAVAILABLE naming the plugin, with the router's ErrorInfo
// reason, until the scheduler's new instance on another node serves them.
func TestCallsReachAPluginRunningOnAnotherNode(t *testing.T) {
	agents := NewCluster(t, 3)
	// Every node holds the bundle (so that another can take over at once),
	// one runs it.
	// The constraint places it on n2 alone (cluster agents are tagged
	// zone=<node>), so nothing takes over when n2 goes.
	b := withPlacement(t, "echo", "1.0.0", map[string]any{"mode": "count", "count": 1, "constraint": `zone == "n2"`})
	for _, a := range agents {
		if _, errOut, code := a.CLI("bundle", "add", b); code != 0 {
			t.Fatalf("bundle add echo on %s: %s", a.Node, errOut)
		}
	}
	// runsEcho says which agents run echo, from their own status.
	runsEcho := func() (on, off []*ClusterAgent, err error) {
		for _, a := range agents {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			resp, err := a.Operator().GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: "echo"})
			cancel()
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", a.Node, err)
			}
			if resp.GetPlugin().GetState() == operatorv1.InstanceState_INSTANCE_STATE_RUNNING {
				on = append(on, a)
			} else {
				off = append(off, a)
			}
		}
		return on, off, nil
	}
	var host *ClusterAgent
	var others []*ClusterAgent
	testenv.WaitFor(t, 60*time.Second, "echo to run on n2", func() error {
		on, off, err := runsEcho()
		if err != nil {
			return err
		}
		if len(on) != 1 {
			return fmt.Errorf("echo runs on %d nodes", len(on))
		}
		host, others = on[0], off
		return nil
	})
	if host.Node != "n2" {
		t.Fatalf("echo runs on %s, not on n2 as its constraint says", host.Node)
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
	// Meanwhile echo ran on its node only: the others' calls crossed nodes.
	if on, _, err := runsEcho(); err != nil || len(on) != 1 || on[0] != host {
		t.Fatalf("echo moved during the calls (%v): the calls may not have crossed nodes", err)
	}
	// 'plughost call' works through reflection, on a node without echo.
	if out, errOut, code := others[0].CLI("call", "echo.v1.EchoService/Echo", "-d", `{"message":"elsewhere"}`); code != 0 || !strings.Contains(out, "elsewhere") {
		t.Fatalf("plughost call through %s: exit %d, %s%s", others[0].Node, code, out, errOut)
	}

	// Its node stops, and no other node may run it: calls through the
	// others fail UNAVAILABLE naming echo, with the router's reason.
	host.Stop()
	for _, a := range others {
		echo := echov1.NewEchoServiceClient(a.Conn())
		testenv.WaitFor(t, 30*time.Second, "calls through "+a.Node+" to fail for want of an instance", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "hi"})
			if status.Code(err) != codes.Unavailable || router.ErrorReason(err) != router.ReasonNoInstance {
				return fmt.Errorf("got %v (reason %q)", err, router.ErrorReason(err))
			}
			if msg := status.Convert(err).Message(); !strings.Contains(msg, `"echo"`) {
				return fmt.Errorf("the message does not name the plugin: %s", msg)
			}
			t.Logf("through %s: %v", a.Node, err)
			return nil
		})
	}
}
