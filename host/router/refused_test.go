package router

import (
	"fmt"
	"testing"

	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// A node that stopped its instance (drained) while another still routes
// to it answers that it has none; nothing of the call reached an instance,
// so the relaying node refuses the call to its caller, whose gRPC client
// retries it transparently, and passes that node over: the retry reaches
// the other instance. (Without another instance, the node's answer goes to
// the caller: TestRemoteUnavailableNamesThePluginAndWhy.)
func TestRemoteCallToANodeWithoutInstanceGoesElsewhere(t *testing.T) {
	nodes := startCluster(t, "n1", "n2", "n3")
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n3.runEcho(t, "3.0.0")
	if err := n2.r.Declare("echo", echoServices); err != nil { // known, not running
		t.Fatal(err)
	}
	for _, n := range []*clusterNode{n2, n3} {
		if err := n1.r.SetRemote(n.remote(n.name, true)); err != nil {
			t.Fatal(err)
		}
	}
	echo := echov1.NewEchoServiceClient(n1.conn)
	for i := range 10 {
		msg := fmt.Sprint("m", i)
		resp, err := echo.Echo(testCtx(t), &echov1.EchoRequest{Message: msg})
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if resp.GetMessage() != msg || resp.GetVersion() != "3.0.0" {
			t.Fatalf("call %d answered %v", i, resp)
		}
	}
	// n2 was asked, and refused (it counts the call as failed).
	asked := uint64(0)
	for _, ps := range n2.r.Stats().Plugins {
		if ps.Plugin == "echo" {
			asked = ps.Calls
		}
	}
	if asked == 0 {
		t.Fatal("no call went to n2: the test did not exercise a refusal")
	}
	t.Logf("n2 was asked %d times", asked)
}
