package router

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jhump/protoreflect/grpcreflect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/plughost/plughost/host/clusterrpc"
	"github.com/plughost/plughost/host/tlsutil"
	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// clusterNode is one node of an in-process cluster: its cluster RPC port
// (mutual TLS, certificates from one CA) and its router serving both the
// API and the calls other nodes relay to it.
type clusterNode struct {
	*testRouter
	name string
	mux  *clusterrpc.Mux
	// authorized counts the calls this node's Authorize saw.
	authorized atomic.Int64
}

// nodeTLS makes a server certificate for node under ca and loads it.
func nodeTLS(t testing.TB, ca tlsutil.PEM, node string) *tlsutil.Config {
	t.Helper()
	p, err := tlsutil.CreateCert(tlsutil.CertRequest{Node: node, Days: 1, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := tlsutil.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "c.pem"), Key: filepath.Join(dir, "k.pem")}
	if err := os.WriteFile(f.CA, ca.Cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tlsutil.WriteFiles(p, f.Cert, f.Key); err != nil {
		t.Fatal(err)
	}
	c, err := tlsutil.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startCluster starts nodes named names, sharing one CA.
func startCluster(t testing.TB, names ...string) []*clusterNode {
	t.Helper()
	return startClusterConfig(t, Config{}, names...)
}

// startClusterConfig is startCluster with cfg for every router (Node,
// DialPeer and Authorize are set for each).
func startClusterConfig(t testing.TB, cfg Config, names ...string) []*clusterNode {
	t.Helper()
	ca, err := tlsutil.CreateCA(1)
	if err != nil {
		t.Fatal(err)
	}
	var out []*clusterNode
	for _, name := range names {
		mux, err := clusterrpc.Listen("127.0.0.1:0", nodeTLS(t, ca, name), clusterrpc.Limits{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mux.Close() })
		n := &clusterNode{name: name, mux: mux}
		c := cfg
		c.Node, c.DialPeer = name, mux.DialRelay
		c.Authorize = func(_, _, _, _ string, _ func(error)) (func(), error) { n.authorized.Add(1); return func() {}, nil }
		n.testRouter = startRouter(t, c)
		go func() { _ = n.r.ServeRelayed(mux.Relay()) }()
		out = append(out, n)
	}
	return out
}

// runEcho starts an echo backend of version on n and routes plugin "echo"
// to it.
func (n *clusterNode) runEcho(t testing.TB, version string) *testBackend {
	t.Helper()
	be := startBackend(t, version, reflectBoth)
	if err := n.r.Declare("echo", echoServices); err != nil {
		t.Fatal(err)
	}
	n.r.SetBackend("echo", be.backend(t, echoService, dynService))
	return be
}

var echoServices = []string{echoService, dynService, chatServiceDesc.ServiceName}

// remote is n as a remote instance of "echo" for the other nodes.
func (n *clusterNode) remote(version string, healthy bool) Remote {
	return Remote{Node: n.name, RPCAddr: n.mux.Addr().String(), Plugin: "echo", Version: version,
		Services: echoServices, Healthy: healthy}
}

func TestRemoteCallGoesToAnotherNodesInstance(t *testing.T) {
	nodes := startCluster(t, "n1", "n2")
	n1, n2 := nodes[0], nodes[1]
	be := n2.runEcho(t, "2.0.0")
	if err := n1.r.SetRemote(n2.remote("2.0.0", true)); err != nil {
		t.Fatal(err)
	}

	ctx := metadata.AppendToOutgoingContext(testCtx(t), "authorization", "Bearer secret", "x-app", "v")
	echo := echov1.NewEchoServiceClient(n1.conn)
	resp, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetVersion() != "2.0.0" || resp.GetMessage() != "hi" {
		t.Fatalf("answered by %v", resp)
	}
	// The caller's token is checked on the node it reached, and travels no
	// further; its other metadata reaches the plugin.
	if n1.authorized.Load() != 1 || n2.authorized.Load() != 0 {
		t.Fatalf("authorized on n1 %d times, on n2 %d times; want 1 and 0", n1.authorized.Load(), n2.authorized.Load())
	}
	md := be.echo.last.Load().md
	if len(md.Get("authorization")) != 0 || !slices.Equal(md.Get("x-app"), []string{"v"}) {
		t.Fatalf("the plugin saw metadata %v", md)
	}

	// Streams in both directions go through as well.
	stream, err := echo.EchoStream(testCtx(t), &echov1.EchoStreamRequest{Message: "s", Count: 5})
	if err != nil {
		t.Fatal(err)
	}
	got, err := collect(stream)
	if err != nil || len(got) != 5 || got[4].GetVersion() != "2.0.0" {
		t.Fatalf("stream: %d messages, %v", len(got), err)
	}
	chat, err := n1.conn.NewStream(testCtx(t), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/test.v1.ChatService/Chat")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"a", "b"} {
		if err := chat.SendMsg(wrapperspb.String(s)); err != nil {
			t.Fatal(err)
		}
		in := new(wrapperspb.StringValue)
		if err := chat.RecvMsg(in); err != nil || in.GetValue() != "echo:"+s {
			t.Fatalf("chat %q: %q %v", s, in.GetValue(), err)
		}
	}
	_ = chat.CloseSend()
	in := new(wrapperspb.StringValue)
	if err := chat.RecvMsg(in); err != nil || in.GetValue() != "done" {
		t.Fatalf("chat end: %q %v", in.GetValue(), err)
	}

	// A local instance, once there is one, is preferred.
	n1.runEcho(t, "1.0.0")
	if resp, err := echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "hi"}); err != nil || resp.GetVersion() != "1.0.0" {
		t.Fatalf("with a local instance: %v %v", resp, err)
	}
}

func TestRemoteReflectionDescribesAPluginRunningElsewhere(t *testing.T) {
	nodes := startCluster(t, "n1", "n2")
	n1, n2 := nodes[0], nodes[1]
	n2.runEcho(t, "2.0.0")
	rem := n2.remote("2.0.0", true)
	// The test plugin has no descriptors for its chat service.
	rem.Services = []string{echoService, dynService}
	if err := n1.r.SetRemote(rem); err != nil {
		t.Fatal(err)
	}
	// dyn.v1.DynService is in no Go package: only n2's plugin can
	// describe it, so n1 has it from there.
	testenv.Eventually(t, 10*time.Second, "n1 to have the plugin's descriptors from n2", func() bool {
		rc := grpcreflect.NewClientAuto(testCtx(t), n1.conn)
		defer rc.Reset()
		sd, err := rc.ResolveService(dynService)
		return err == nil && sd.FindMethodByName("Ping") != nil
	})
	rc := grpcreflect.NewClientAuto(testCtx(t), n1.conn)
	defer rc.Reset()
	got, err := rc.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range rem.Services {
		if !slices.Contains(got, want) {
			t.Fatalf("n1 lists %v, without %s", got, want)
		}
	}
}

func TestRemoteUnavailableNamesThePluginAndWhy(t *testing.T) {
	nodes := startCluster(t, "n1", "n2", "n3")
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	echo := echov1.NewEchoServiceClient(n1.conn)

	// Registered in the cluster, run nowhere.
	n1.r.SetRegistered(map[string][]string{"echo": echoServices})
	_, err := echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "hi"})
	wantStatus(t, err, codes.Unavailable, `no node runs plugin "echo"; see 'plughost plugin status echo' for where it is placed and why`)
	if r := ErrorReason(err); r != ReasonNoInstance {
		t.Fatalf("reason %q, want %s", r, ReasonNoInstance)
	}
	// Forgotten by the catalog, it is unknown.
	n1.r.SetRegistered(nil)
	_, err = echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "hi"})
	wantStatus(t, err, codes.Unimplemented, "")

	if err := n1.r.SetRemote(n2.remote("2.0.0", false)); err != nil {
		t.Fatal(err)
	}
	_, err = echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "hi"})
	wantStatus(t, err, codes.Unavailable, "")
	if msg := status.Convert(err).Message(); !strings.Contains(msg, `no healthy instance of plugin "echo" on any node`) || !strings.Contains(msg, "n2: not healthy") {
		t.Fatalf("message %q", msg)
	}
	if r := ErrorReason(err); r != ReasonNoInstance {
		t.Fatalf("reason %q, want %s", r, ReasonNoInstance)
	}

	// n1 believes n2 serves, but n2 has no instance: n2 says so, and does
	// not relay the call onward to n3, which it knows to serve.
	be3 := n3.runEcho(t, "3.0.0")
	if err := n2.r.SetRemote(n3.remote("3.0.0", true)); err != nil {
		t.Fatal(err)
	}
	if err := n2.r.Declare("echo", echoServices); err != nil {
		t.Fatal(err)
	}
	if err := n1.r.SetRemote(n2.remote("2.0.0", true)); err != nil {
		t.Fatal(err)
	}
	_, err = echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "hi"})
	wantStatus(t, err, codes.Unavailable, "")
	if r := ErrorReason(err); r != ReasonNoLocalInstance || !strings.Contains(status.Convert(err).Message(), `node n2 has no serving instance of plugin "echo"`) {
		t.Fatalf("reason %q, message %q", r, status.Convert(err).Message())
	}
	if be3.echo.last.Load() != nil {
		t.Fatal("n2 relayed a relayed call onward to n3")
	}
}

func TestRemoteNodeRefusesWhatIsNotAPluginCall(t *testing.T) {
	nodes := startCluster(t, "n1", "n2")
	n1, n2 := nodes[0], nodes[1]
	n2.runEcho(t, "2.0.0")
	// A connection to n2's relay as n1's router opens them.
	conn, err := grpc.NewClient("passthrough:///n2", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return n1.mux.DialRelay(ctx, n2.mux.Addr().String(), "n2")
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The agent's own services are not reachable from a peer's relay.
	_, err = agentInfo(testCtx(t), conn, "x")
	wantStatus(t, err, codes.Unavailable, "")
	if r := ErrorReason(err); r != ReasonNotRelayable {
		t.Fatalf("agent service through the relay: reason %q (%v)", r, err)
	}
	// A plugin's service is, without a token.
	resp, err := echov1.NewEchoServiceClient(conn).Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
	if err != nil || resp.GetVersion() != "2.0.0" {
		t.Fatalf("plugin call through the relay: %v %v", resp, err)
	}
	if n2.authorized.Load() != 0 {
		t.Fatal("a relayed call was authorized again on the peer")
	}
	// A node that is not the one dialed is refused by TLS.
	if _, err := n1.mux.DialRelay(testCtx(t), n2.mux.Addr().String(), "n9"); err == nil {
		t.Fatal("a dial expecting n9 reached n2")
	}
}

func TestRemoteCallsSpreadAndSkipUnreachableInstances(t *testing.T) {
	nodes := startClusterConfig(t, Config{HoldTimeout: time.Second}, "n1", "n2", "n3")
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n2.runEcho(t, "2.0.0")
	n3.runEcho(t, "3.0.0")
	// n4 is observed healthy but nothing listens at its address.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close()
	for _, rem := range []Remote{n2.remote("2.0.0", true), n3.remote("3.0.0", true),
		{Node: "n4", RPCAddr: deadAddr, Plugin: "echo", Version: "4.0.0", Services: echoServices, Healthy: true}} {
		if err := n1.r.SetRemote(rem); err != nil {
			t.Fatal(err)
		}
	}
	echo := echov1.NewEchoServiceClient(n1.conn)
	seen := map[string]int{}
	for range 30 {
		resp, err := echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
		if err != nil {
			t.Fatalf("a call failed although two instances serve: %v", err)
		}
		seen[resp.GetVersion()]++
	}
	if seen["2.0.0"] == 0 || seen["3.0.0"] == 0 {
		t.Fatalf("calls went to %v; want both n2 and n3", seen)
	}

	// Removed, an instance takes no more calls.
	n1.r.RemoveRemote("n3", "")
	for range 5 {
		resp, err := echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
		if err != nil || resp.GetVersion() != "2.0.0" {
			t.Fatalf("after n3's removal: %v %v", resp, err)
		}
	}
	// With the unreachable one alone left, the call waits for another
	// (HoldTimeout), then fails naming it.
	n1.r.RemoveRemote("n2", "echo")
	_, err = echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
	wantStatus(t, err, codes.Unavailable, "")
	if r := ErrorReason(err); r != ReasonUnreachable || !strings.Contains(status.Convert(err).Message(), "on node n4") {
		t.Fatalf("reason %q, message %q", r, status.Convert(err).Message())
	}
}

func TestPickRemote(t *testing.T) {
	mk := func(node string, inflight int64, down bool) *Backend {
		b := &Backend{Node: node}
		b.inflight.Store(inflight)
		if down {
			b.downUntil.Store(time.Now().Add(time.Hour).UnixNano())
		}
		return b
	}
	for _, tc := range []struct {
		name  string
		bs    []*Backend
		skip  int // index of the backend to skip, -1 for none
		wants []string
	}{
		{"none", nil, -1, []string{""}},
		{"fewest in flight", []*Backend{mk("a", 3, false), mk("b", 1, false), mk("c", 2, false)}, -1, []string{"b"}},
		{"ties in turn", []*Backend{mk("a", 0, false), mk("b", 0, false)}, -1, []string{"a", "b"}},
		{"down passed over", []*Backend{mk("a", 0, true), mk("b", 5, false)}, -1, []string{"b"}},
		{"all down: one anyway", []*Backend{mk("a", 0, true)}, -1, []string{"a"}},
		{"skipped", []*Backend{mk("a", 0, false), mk("b", 5, false)}, 0, []string{"b"}},
		{"skipped alone", []*Backend{mk("a", 0, false)}, 0, []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &plugin{}
			bs := tc.bs
			p.routable.Store(&bs)
			var skip *Backend
			if tc.skip >= 0 {
				skip = tc.bs[tc.skip]
			}
			got := map[string]bool{}
			for range 4 {
				if b := p.pickRemote(skip); b != nil {
					got[b.Node] = true
				} else {
					got[""] = true
				}
			}
			var nodes []string
			for n := range got {
				nodes = append(nodes, n)
			}
			slices.Sort(nodes)
			if !slices.Equal(nodes, tc.wants) {
				t.Fatalf("picked %v, want %v", nodes, tc.wants)
			}
		})
	}
}

func TestRemoteNodeStoppingLosesNoCall(t *testing.T) {
	nodes := startCluster(t, "n1", "n2", "n3")
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n2.runEcho(t, "2.0.0")
	n3.runEcho(t, "3.0.0")
	for _, n := range []*clusterNode{n2, n3} {
		if err := n1.r.SetRemote(n.remote("x", true)); err != nil {
			t.Fatal(err)
		}
	}
	echo := echov1.NewEchoServiceClient(n1.conn)
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"}); err != nil {
					failed.Add(1)
					t.Errorf("a call failed while n2 stopped: %v", err)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	testenv.Eventually(t, 10*time.Second, "calls to flow", func() bool { return ok.Load() > 100 })
	// n2 stops as an agent does: its relay says GOAWAY to n1, finishes the
	// calls it has, closes; its observation goes a moment later.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	n2.r.Stop(ctx)
	cancel()
	before := ok.Load()
	testenv.Eventually(t, 10*time.Second, "calls to go on through n3", func() bool { return ok.Load() > before+100 })
	n1.r.RemoveRemote("n2", "")
	close(stop)
	for range 4 {
		<-done
	}
	t.Logf("%d calls answered, %d failed", ok.Load(), failed.Load())
}

func TestFailoverHoldsCallsUntilTheNewActiveServes(t *testing.T) {
	nodes := startCluster(t, "n1", "n3")
	n1, n3 := nodes[0], nodes[1]
	n3.runEcho(t, "3.0.0")
	n1.r.SetRegistered(map[string][]string{"echo": echoServices})
	n1.r.SetFailover("echo", "singleton echo is failing over from n2 to n3")
	echo := echov1.NewEchoServiceClient(n1.conn)

	type result struct {
		resp *echov1.EchoResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "held"})
		done <- result{resp, err}
	}()
	testenv.Eventually(t, 10*time.Second, "the call to be held", func() bool { return n1.r.heldCalls("echo") == 1 })
	// The new active serves: the held call goes to it.
	if err := n1.r.SetRemote(n3.remote("3.0.0", true)); err != nil {
		t.Fatal(err)
	}
	n1.r.SetFailover("echo", "")
	if res := <-done; res.err != nil || res.resp.GetVersion() != "3.0.0" {
		t.Fatalf("held call: %v %v", res.resp, res.err)
	}

	// A failover that takes longer than the hold: the call says why.
	n1.r.RemoveRemote("n3", "")
	n1.r.cfg.HoldTimeout = 100 * time.Millisecond
	n1.r.SetFailover("echo", "singleton echo is failing over from n3 to n2")
	_, err := echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
	wantStatus(t, err, codes.Unavailable, `plugin "echo" has no serving instance: singleton echo is failing over from n3 to n2; no instance came up within 100ms; retry in a moment`)
	if r := ErrorReason(err); r != ReasonFailingOver {
		t.Fatalf("reason %q, want %s", r, ReasonFailingOver)
	}
}

// deadRemote is a remote instance of "echo" on node, observed healthy,
// where nothing listens.
func deadRemote(t *testing.T, node string) Remote {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return Remote{Node: node, RPCAddr: addr, Plugin: "echo", Version: "4.0.0", Services: echoServices, Healthy: true}
}

// TestRemoteCallWaitsForAnotherInstance: a call whose only instance is on
// a node that cannot be reached (killed, and the cluster has not noticed
// yet) waits, as a held call does, until another instance is routed to,
// and goes there: nothing of it reached the first. Both ways a call
// crosses the agent: the relay, and the agent's own server (a connection
// whose first call was to one of the agent's services, as grpcurl's
// reflection is).
func TestRemoteCallWaitsForAnotherInstance(t *testing.T) {
	for _, via := range []string{"relay", "server"} {
		t.Run(via, func(t *testing.T) {
			nodes := startCluster(t, "n1", "n2")
			n1, n2 := nodes[0], nodes[1]
			n2.runEcho(t, "2.0.0")
			if err := n1.r.SetRemote(deadRemote(t, "n4")); err != nil {
				t.Fatal(err)
			}
			conn := dialClient(t, n1.addr)
			if via == "server" {
				if _, err := healthpb.NewHealthClient(conn).Check(testCtx(t), &healthpb.HealthCheckRequest{}); err != nil {
					t.Fatal(err)
				}
			}
			echo := echov1.NewEchoServiceClient(conn)
			type answer struct {
				resp    *echov1.EchoResponse
				trailer metadata.MD
				err     error
			}
			done := make(chan answer, 1)
			go func() {
				var a answer
				a.resp, a.err = echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "x"}, grpc.Trailer(&a.trailer))
				done <- a
			}()
			testenv.WaitFor(t, 10*time.Second, "the call to wait", func() error {
				if n1.r.heldCalls("echo") == 0 {
					return errors.New("no call waits")
				}
				return nil
			})
			// The cluster notices: n4's instance goes, n2's comes.
			n1.r.RemoveRemote("n4", "echo")
			if err := n1.r.SetRemote(n2.remote("2.0.0", true)); err != nil {
				t.Fatal(err)
			}
			a := <-done
			if a.err != nil || a.resp.GetVersion() != "2.0.0" {
				t.Fatalf("the held call: %v %v", a.resp, a.err)
			}
			if v := a.trailer.Get(HeldTrailer); len(v) != 1 {
				t.Fatalf("the held call's %s trailer: %q, want one value", HeldTrailer, v)
			}
		})
	}
}

func TestRemoteReflectionLoadsDescriptorsWhenAsked(t *testing.T) {
	nodes := startCluster(t, "n1", "n2")
	n1, n2 := nodes[0], nodes[1]
	rem := n2.remote("2.0.0", true)
	rem.Services = []string{echoService, dynService}
	// n2 does not run echo yet: n1's first load of its descriptors fails.
	if err := n1.r.SetRemote(rem); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "n1's first load to be done", func() bool {
		n1.r.mu.Lock()
		p := n1.r.plugins["echo"]
		n1.r.mu.Unlock()
		if !p.loadMu.TryLock() {
			return false
		}
		p.loadMu.Unlock()
		return true
	})
	n2.runEcho(t, "2.0.0")
	// Asked, n1 loads them then and there.
	rc := grpcreflect.NewClientAuto(testCtx(t), n1.conn)
	defer rc.Reset()
	sd, err := rc.ResolveService(dynService)
	if err != nil || sd.FindMethodByName("Ping") == nil {
		t.Fatalf("resolving %s on n1: %v", dynService, err)
	}
}

// TestStartingHoldsCallsUntilAnInstanceServes: on an agent's start its
// local instance is starting and the other nodes' instances are not known
// yet. Calls wait for whichever serves first, the local one or a remote
// one; a start that fails ends the wait at once with the reason; a call
// another node relayed here is not held, as that node may route it
// elsewhere.
func TestStartingHoldsCallsUntilAnInstanceServes(t *testing.T) {
	nodes := startCluster(t, "n1", "n2")
	n1, n2 := nodes[0], nodes[1]
	if err := n1.r.Declare("echo", echoServices); err != nil {
		t.Fatal(err)
	}
	n1.r.SetState("echo", "starting")
	echo := echov1.NewEchoServiceClient(n1.conn)
	type result struct {
		resp *echov1.EchoResponse
		err  error
	}
	call := func() <-chan result {
		done := make(chan result, 1)
		go func() {
			resp, err := echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "held"})
			done <- result{resp, err}
		}()
		return done
	}

	// The other node's instance becomes known first: the call goes there.
	n2.runEcho(t, "2.0.0")
	done := call()
	testenv.Eventually(t, 10*time.Second, "the call to be held", func() bool { return n1.r.heldCalls("echo") == 1 })
	if err := n1.r.SetRemote(n2.remote("2.0.0", true)); err != nil {
		t.Fatal(err)
	}
	if res := <-done; res.err != nil || res.resp.GetVersion() != "2.0.0" {
		t.Fatalf("held call: %v %v", res.resp, res.err)
	}

	// The local instance serves first: the call goes to it.
	n1.r.RemoveRemote("n2", "")
	done = call()
	testenv.Eventually(t, 10*time.Second, "the call to be held", func() bool { return n1.r.heldCalls("echo") == 1 })
	be := startBackend(t, "1.0.0", reflectBoth)
	old := n1.r.SetBackend("echo", be.backend(t, echoService, dynService))
	n1.r.SetState("echo", "running")
	if res := <-done; res.err != nil || res.resp.GetVersion() != "1.0.0" {
		t.Fatalf("held call: %v %v", res.resp, res.err)
	}

	// A start that fails: the held call fails then, with the reason.
	n1.r.SetBackend("echo", old)
	n1.r.SetState("echo", "starting")
	done = call()
	testenv.Eventually(t, 10*time.Second, "the call to be held", func() bool { return n1.r.heldCalls("echo") == 1 })
	n1.r.SetState("echo", "failed: exited with status 3")
	res := <-done
	wantStatus(t, res.err, codes.Unavailable, `plugin "echo" has no serving instance (state: failed: exited with status 3); see 'plughost plugin status echo', then 'plughost plugin restart echo' once it is fixed`)
	if r := ErrorReason(res.err); r != ReasonNoInstance {
		t.Fatalf("reason %q, want %s", r, ReasonNoInstance)
	}

	// Relayed from another node, a call to an instance that is starting
	// fails at once, naming this node.
	n1.r.SetState("echo", "starting")
	n2.r.SetBackend("echo", nil)
	if err := n2.r.SetRemote(n1.remote("1.0.0", true)); err != nil {
		t.Fatal(err)
	}
	_, err := echov1.NewEchoServiceClient(n2.conn).Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
	if r := ErrorReason(err); status.Code(err) != codes.Unavailable || r != ReasonNoLocalInstance {
		t.Fatalf("relayed call to a starting instance: %v (reason %q), want %s", err, r, ReasonNoLocalInstance)
	}
}

// TestCallsWaitForTheRouteFeedsFirstPass: on an agent's start, before the
// route feed made its first pass, a call to a service no plugin declared
// yet waits for it, and goes to the instance it makes known; afterwards
// a call to an unknown service fails at once, and one that waited longer
// than HoldTimeout fails as unknown.
func TestCallsWaitForTheRouteFeedsFirstPass(t *testing.T) {
	nodes := startClusterConfig(t, Config{AwaitRoutes: true}, "n1", "n2")
	n1, n2 := nodes[0], nodes[1]
	n2.runEcho(t, "2.0.0")
	n2.r.RoutesKnown()
	echo := echov1.NewEchoServiceClient(n1.conn)

	type result struct {
		resp *echov1.EchoResponse
		err  error
	}
	var trl metadata.MD
	done := make(chan result, 1)
	go func() {
		resp, err := echo.Echo(testCtx(t), &echov1.EchoRequest{Message: "early"}, grpc.Trailer(&trl))
		done <- result{resp, err}
	}()
	testenv.Eventually(t, 10*time.Second, "the call to wait for the route table", func() bool { return n1.r.awaiting.Load() == 1 })
	// The feed's first pass: n2's instance.
	if err := n1.r.SetRemote(n2.remote("2.0.0", true)); err != nil {
		t.Fatal(err)
	}
	n1.r.RoutesKnown()
	if res := <-done; res.err != nil || res.resp.GetVersion() != "2.0.0" {
		t.Fatalf("call made before the first pass: %v %v", res.resp, res.err)
	}
	if v := trl.Get(HeldTrailer); len(v) != 1 {
		t.Fatalf("trailers %v carry no %s", trl, HeldTrailer)
	}
	n1.r.RoutesKnown() // again: no effect

	err := n1.conn.Invoke(testCtx(t), "/nowhere.v1.Nothing/Call", &echov1.EchoRequest{}, &echov1.EchoResponse{})
	wantStatus(t, err, codes.Unimplemented, "")
	if n := n1.r.awaiting.Load(); n != 0 {
		t.Fatalf("%d calls wait for the route table after it is known", n)
	}

	// Never made known: the call fails as unknown after HoldTimeout.
	tr := startRouter(t, Config{AwaitRoutes: true, HoldTimeout: 100 * time.Millisecond})
	_, err = echov1.NewEchoServiceClient(tr.conn).Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
	wantStatus(t, err, codes.Unimplemented, "")
	if msg := status.Convert(err).Message(); !strings.HasPrefix(msg, "unknown service echo.v1.EchoService") {
		t.Fatalf("message %q", msg)
	}
}
