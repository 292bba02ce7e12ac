package cluster

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// testNode is one in-process plughost node: a durable store on loopback,
// its StoreService on a gRPC listener, and membership.
type testNode struct {
	t       testing.TB
	name    string
	dir     string
	st      *store.Store
	c       *Cluster
	srv     *grpc.Server
	apiAddr string

	storeConf func(*store.Config)

	mu   sync.Mutex // serializes kill and leave
	down atomic.Bool
}

// nodeOptions shape a test node.
type nodeOptions struct {
	Expect int
	Join   []string
	Store  func(*store.Config)
	// SerfAddr and RaftAddr reuse a stopped node's addresses, as a real
	// agent restarting with the same flags would.
	SerfAddr, RaftAddr string
	MaxVoters          int
	MinQuorum          int
	// VerifyServer is Config.VerifyServer (area: tls).
	VerifyServer func(ctx context.Context, node, rpcAddr string) error
	// Node identity (area: nodes).
	FaultDomain, UpgradeDomain string
	Tags                       map[string]string
}

func testLogger(t testing.TB, name string) hclog.Logger {
	if !testing.Verbose() {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn})
}

// startNode starts a node named name in dir (reused across restarts).
func startNode(t testing.TB, name, dir string, o nodeOptions) *testNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sc := store.DefaultConfig()
	sc.NodeID = name
	sc.Dir = filepath.Join(dir, "store")
	// Fixed ports, outside the ephemeral range: a node restarts on its
	// addresses, and a parallel test's outgoing connection must not have
	// taken them meanwhile.
	sc.RaftAddr = testenv.FreeAddr(t)
	if o.RaftAddr != "" {
		sc.RaftAddr = o.RaftAddr
	}
	serfAddr := testenv.FreeAddr(t)
	if o.SerfAddr != "" {
		serfAddr = o.SerfAddr
	}
	sc.Bootstrap = o.Expect == 1
	sc.Logger = testLogger(t, name)
	if o.Store != nil {
		o.Store(&sc)
	}
	st, err := store.Open(sc)
	if err != nil {
		ln.Close()
		t.Fatalf("open store %s: %v", name, err)
	}
	srv := grpc.NewServer()
	ss := store.NewServer(st)
	storev1.RegisterStoreServiceServer(srv, ss)
	storev1.RegisterStoreAdminServiceServer(srv, ss)
	go srv.Serve(ln)
	c, err := Start(Config{
		NodeName: name, BindAddr: serfAddr, APIAddr: ln.Addr().String(),
		Join: o.Join, BootstrapExpect: o.Expect, DataDir: filepath.Join(dir, "serf"), Store: st,
		Logger:              testLogger(t, name),
		MaxVoters:           o.MaxVoters,
		MinQuorum:           o.MinQuorum,
		ServerStabilization: 200 * time.Millisecond,
		DeadServerGrace:     time.Second,
		ReconcileInterval:   50 * time.Millisecond,
		VerifyServer:        o.VerifyServer,
		FaultDomain:         o.FaultDomain,
		UpgradeDomain:       o.UpgradeDomain,
		Tags:                o.Tags,
	})
	if err != nil {
		srv.Stop()
		st.Close()
		t.Fatalf("start membership %s: %v", name, err)
	}
	n := &testNode{t: t, name: name, dir: dir, st: st, c: c, srv: srv, apiAddr: ln.Addr().String(), storeConf: o.Store}
	t.Cleanup(n.kill)
	return n
}

// restart starts a stopped node again in its directory, on its addresses.
func (n *testNode) restart(join ...string) *testNode {
	n.t.Helper()
	return startNode(n.t, n.name, n.dir, nodeOptions{Join: join, SerfAddr: n.c.Addr(), RaftAddr: n.st.RaftAddr(), Store: n.storeConf})
}

// kill stops the node as a crash would look to the others: no leave.
func (n *testNode) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down.Swap(true) {
		return
	}
	n.c.Shutdown()
	n.srv.Stop()
	n.st.Close()
}

// leave stops the node gracefully.
func (n *testNode) leave() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down.Swap(true) {
		return
	}
	n.c.Leave()
	n.srv.Stop()
	n.st.Close()
}

func (n *testNode) isDown() bool { return n.down.Load() }

// newTestCluster starts size nodes with -bootstrap-expect size, joined to
// the first, and waits until every node knows the leader.
func newTestCluster(t testing.TB, size int, configure func(*store.Config)) []*testNode {
	t.Helper()
	base := t.TempDir()
	nodes := make([]*testNode, size)
	nodes[0] = startNode(t, "n0", filepath.Join(base, "n0"), nodeOptions{Expect: size, Store: configure})
	for i := 1; i < size; i++ {
		nodes[i] = startNode(t, fmt.Sprint("n", i), filepath.Join(base, fmt.Sprint("n", i)),
			nodeOptions{Expect: size, Join: []string{nodes[0].c.Addr()}, Store: configure})
	}
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := n.st.WaitForLeader(ctx)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", n.name, err)
		}
	}
	return nodes
}

// leaderOf waits for a ready leader among the live nodes.
func leaderOf(t testing.TB, nodes []*testNode) *testNode {
	t.Helper()
	var leader *testNode
	testenv.WaitFor(t, 15*time.Second, "a leader", func() error {
		for _, n := range nodes {
			if !n.isDown() && n.st.IsLeader() {
				leader = n
				return nil
			}
		}
		return fmt.Errorf("no live node leads")
	})
	return leader
}

func put(t testing.TB, n *testNode, key, value string) *storev1.PutResponse {
	t.Helper()
	resp, err := n.st.Put(testenv.Context(t, 10*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte(key), Value: []byte(value)})
	if err != nil {
		t.Fatalf("put %s through %s: %v", key, n.name, err)
	}
	return resp
}

// sessionGet reads key on n once n has applied rev.
func sessionGet(t testing.TB, n *testNode, key string, rev int64) *storev1.KeyValue {
	t.Helper()
	resp, err := n.st.Get(testenv.Context(t, 10*time.Second), &storev1.GetRequest{Namespace: "app", Key: []byte(key),
		Consistency: storev1.Consistency_CONSISTENCY_SESSION, MinRevision: rev})
	if err != nil {
		t.Fatalf("session get %s on %s: %v", key, n.name, err)
	}
	return resp.GetKv()
}

func voters(t testing.TB, n *testNode) map[string]store.Suffrage {
	t.Helper()
	conf, err := n.st.Configuration()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.Suffrage{}
	for _, s := range conf {
		out[s.ID] = s.Suffrage
	}
	return out
}
