package test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/internal/testenv"
	counterv1 "github.com/plughost/plughost/plugins/counter/proto/counter/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// acked records acknowledged writes: key -> revision.
type acked struct {
	mu   sync.Mutex
	keys map[string]int64
	max  int64
}

func (a *acked) add(key string, rev int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.keys == nil {
		a.keys = map[string]int64{}
	}
	a.keys[key] = rev
	a.max = max(a.max, rev)
}

// checkAll verifies that every acknowledged key is on agent a, read locally
// once a has applied the last acknowledged revision.
func (a *acked) checkAll(t *testing.T, ag *ClusterAgent) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	have := map[string]bool{}
	var token []byte
	for first := true; first || len(token) > 0; first = false {
		var resp *storev1.ListResponse
		// A restarted agent's connection may need a moment to come back.
		testenv.WaitFor(t, 20*time.Second, "a list on "+ag.Node, func() (err error) {
			resp, err = ag.Store().List(ctx, &storev1.ListRequest{Namespace: "app", Prefix: []byte("w/"), KeysOnly: true, PageToken: token,
				Consistency: storev1.Consistency_CONSISTENCY_SESSION, MinRevision: a.max})
			return err
		})
		for _, kv := range resp.GetKvs() {
			have[string(kv.GetKey())] = true
		}
		token = resp.GetNextPageToken()
	}
	missing := 0
	for k := range a.keys {
		if !have[k] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged writes are missing on %s", missing, len(a.keys), ag.Node)
	}
	t.Logf("all %d acknowledged writes present on %s", len(a.keys), ag.Node)
}

// writeLoad writes unique keys through the agents until ctx ends.
func writeLoad(ctx context.Context, agents []*ClusterAgent, clients int, ack *acked, onAck func(time.Time)) *sync.WaitGroup {
	var wg sync.WaitGroup
	var seq atomic.Int64
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 1))
			for ctx.Err() == nil {
				a := agents[r.IntN(len(agents))]
				key := fmt.Sprintf("w/%d", seq.Add(1))
				start := time.Now()
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				resp, err := a.Store().Put(cctx, &storev1.PutRequest{Namespace: "app", Key: []byte(key), Value: []byte(key)})
				cancel()
				if err == nil {
					ack.add(key, resp.GetRevision())
					if onAck != nil {
						onAck(start)
					}
				}
			}
		}()
	}
	return &wg
}

func TestClusterMembers(t *testing.T) {
	agents := NewCluster(t, 3)
	testenv.WaitFor(t, 20*time.Second, "three alive members, one leader", func() error {
		out, errOut, code := agents[1].CLI("members", "-format", "json")
		if code != 0 {
			return fmt.Errorf("members: %s", errOut)
		}
		var ms []struct {
			Name, Status string
			RaftRole     string `json:"raft_role"`
			Tags         map[string]string
		}
		if err := json.Unmarshal([]byte(out), &ms); err != nil {
			return err
		}
		leaders := 0
		for _, m := range ms {
			if m.Status != "alive" || m.Tags["zone"] != m.Name || (m.RaftRole != "leader" && m.RaftRole != "voter") {
				return fmt.Errorf("member %+v", m)
			}
			// The raft role has its field; plughost's own tags are not shown.
			if len(m.Tags) != 1 {
				t.Fatalf("member %s has tags %v, want only the operator's zone", m.Name, m.Tags)
			}
			if m.RaftRole == "leader" {
				leaders++
			}
		}
		if len(ms) != 3 || leaders != 1 {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	out, _, _ := agents[2].CLI("members")
	for _, col := range []string{"NAME", "ADDRESS", "API", "STATUS", "RAFT", "TAGS", "n1", "n2", "n3", "leader", "zone="} {
		if !strings.Contains(out, col) {
			t.Errorf("members table lacks %q:\n%s", col, out)
		}
	}
	if strings.Contains(out, "raft_state") {
		t.Errorf("members table shows the internal tag raft_state:\n%s", out)
	}

	// Every node's /metrics shows its raft log and gossip: the leader its
	// commits, each node its log writes (the leader's own or a follower's
	// from replication) and memberlist's probes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 20 {
		if _, err := agents[i%3].Store().Put(ctx, &storev1.PutRequest{Namespace: "app", Key: fmt.Appendf(nil, "m%d", i), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "raft and gossip series in every node's /metrics", func() error {
		commits := 0.0
		for _, a := range agents {
			series, err := scrape(a.Agent)
			if err != nil {
				return err
			}
			commits += series["plughost_raft_commitTime_count"]
			if series["plughost_raft_leader_dispatchLog_count"]+series["plughost_raft_rpc_appendEntries_storeLogs_count"] == 0 {
				return fmt.Errorf("%s: no raft log writes in /metrics", a.Node)
			}
			if series["plughost_memberlist_probeNode_count"] == 0 {
				return fmt.Errorf("%s: no memberlist probes in /metrics", a.Node)
			}
		}
		if commits < 20 {
			return fmt.Errorf("%v commits in the nodes' /metrics, want 20 or more", commits)
		}
		return nil
	})
}

func TestClusterKillLeaderUnderLoad(t *testing.T) {
	agents := NewCluster(t, 3)
	leader := leaderOf(t, agents)
	var others []*ClusterAgent
	for _, a := range agents {
		if a != leader {
			others = append(others, a)
		}
	}
	var ack acked
	var killedAt atomic.Int64
	var firstAfter atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg := writeLoad(ctx, others, 16, &ack, func(start time.Time) {
		if k := killedAt.Load(); k != 0 && start.UnixNano() > k {
			firstAfter.CompareAndSwap(0, time.Now().UnixNano())
		}
	})
	testenv.WaitFor(t, 20*time.Second, "writes before the kill", func() error {
		ack.mu.Lock()
		defer ack.mu.Unlock()
		if len(ack.keys) < 500 {
			return fmt.Errorf("%d writes", len(ack.keys))
		}
		return nil
	})
	killedAt.Store(time.Now().UnixNano())
	leader.Kill9()
	testenv.WaitFor(t, 30*time.Second, "an acknowledged write after the kill", func() error {
		if firstAfter.Load() == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	gap := time.Duration(firstAfter.Load() - killedAt.Load())
	t.Logf("leader %s killed with kill -9; first acknowledged write on the new leader after %v", leader.Node, gap)
	ack.mu.Lock()
	n := len(ack.keys)
	ack.mu.Unlock()
	testenv.WaitFor(t, 20*time.Second, "writes to go on under the new leader", func() error {
		ack.mu.Lock()
		defer ack.mu.Unlock()
		if len(ack.keys) < n+500 {
			return fmt.Errorf("%d writes since", len(ack.keys)-n)
		}
		return nil
	})
	cancel()
	wg.Wait()

	// The killed node comes back and catches up.
	leader.Start()
	ack.checkAll(t, leader)
	for _, a := range others {
		ack.checkAll(t, a)
	}
}

func TestClusterKillAllAndRestart(t *testing.T) {
	agents := NewCluster(t, 3)
	var ack acked
	ctx, cancel := context.WithCancel(context.Background())
	wg := writeLoad(ctx, agents, 8, &ack, nil)
	testenv.WaitFor(t, 20*time.Second, "writes", func() error {
		ack.mu.Lock()
		defer ack.mu.Unlock()
		if len(ack.keys) < 1000 {
			return fmt.Errorf("%d writes", len(ack.keys))
		}
		return nil
	})
	// Kill all three while writes are in flight.
	for _, a := range agents {
		a.Kill9()
	}
	cancel()
	wg.Wait()
	StartAll(agents...)
	for _, a := range agents {
		ack.checkAll(t, a)
	}
	// Each node recovered from the log store it was started with.
	for _, a := range agents {
		log := filepath.Join(a.DataDir, "store", "wal")
		if slices.Contains(a.Args, "boltdb") {
			log = filepath.Join(a.DataDir, "store", "raft.db")
		}
		if _, err := os.Stat(log); err != nil {
			t.Errorf("%s: no raft log at %s: %v", a.Node, log, err)
		}
	}
}

func TestClusterMinorityRefusesWrites(t *testing.T) {
	agents := NewCluster(t, 3)
	isolated := agents[2]
	put := func(a *ClusterAgent, key string, d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, err := a.Store().Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte(key), Value: []byte("v")})
		return err
	}
	if err := put(isolated, "before", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Cut the node off from the majority by stopping the majority.
	agents[0].Signal(syscall.SIGSTOP)
	agents[1].Signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			agents[0].Signal(syscall.SIGCONT)
			agents[1].Signal(syscall.SIGCONT)
		}
	}()
	err := put(isolated, "cut-off", 8*time.Second)
	if err == nil {
		t.Fatal("the isolated node acknowledged a write without a majority")
	}
	st, _ := status.FromError(err)
	if (st.Code() != codes.Unavailable && st.Code() != codes.DeadlineExceeded) || !strings.Contains(st.Message(), "leader") {
		t.Fatalf("the isolated node's refusal is unclear: %v", err)
	}
	t.Logf("isolated node refused the write: %v", err)
	out, errOut, code := isolated.CLI("store", "put", "-ns", "app", "cli-cut-off", "v")
	if code == 0 || !strings.Contains(errOut, "leader") {
		t.Fatalf("CLI put on the isolated node: code %d, %s %s", code, out, errOut)
	}

	agents[0].Signal(syscall.SIGCONT)
	agents[1].Signal(syscall.SIGCONT)
	stopped = false
	testenv.WaitFor(t, 30*time.Second, "the cluster to heal", func() error { return put(isolated, "healed", 3*time.Second) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, a := range agents {
		resp, err := a.Store().Get(ctx, &storev1.GetRequest{Namespace: "app", Key: []byte("healed")})
		if err != nil || string(resp.GetKv().GetValue()) != "v" {
			t.Fatalf("healed key on %s: %v, %v", a.Node, resp, err)
		}
	}
}

func TestClusterBackupRestoreThroughFollower(t *testing.T) {
	agents := NewCluster(t, 3)
	leader := leaderOf(t, agents)
	var follower *ClusterAgent
	for _, a := range agents {
		if a != leader {
			follower = a
			break
		}
	}
	cli := func(args ...string) string {
		t.Helper()
		out, errOut, code := follower.CLI(args...)
		if code != 0 {
			t.Fatalf("plughost %v: %s", args, errOut)
		}
		return out
	}
	cli("store", "put", "-ns", "app", "kept", "1")
	file := filepath.Join(t.TempDir(), "backup.bin")
	cli("store", "backup", file)
	cli("store", "put", "-ns", "app", "after-backup", "1")

	// A corrupt backup is refused through the follower, data untouched.
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte{}, data...)
	bad[len(bad)/2] ^= 0xff
	badFile := filepath.Join(t.TempDir(), "bad.bin")
	if err := os.WriteFile(badFile, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := follower.CLI("store", "restore", badFile)
	if code == 0 || !strings.Contains(strings.ToLower(errOut), "corrupt") {
		t.Fatalf("restore of a corrupt backup: code %d, %s", code, errOut)
	}
	if out := cli("store", "get", "-ns", "app", "after-backup"); strings.TrimSpace(out) != "1" {
		t.Fatalf("data changed by a refused restore: %q", out)
	}

	// Without -force the agents refuse to replace a store that holds data,
	// and say what a restore would replace: _sys and each namespace. (_sys
	// is listed first when it holds more than ACL records: each node's
	// bundles/<node> record is there from its start.)
	_, errOut, code = follower.CLI("store", "restore", file)
	for _, want := range []string{"holds data in ", "app (2 keys)", "_sys (the agent's plugin catalog, pins and history)", "-force"} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Fatalf("restore without -force into a store with data: exit %d, %q does not say %q", code, errOut, want)
		}
	}
	if out := cli("store", "get", "-ns", "app", "after-backup"); strings.TrimSpace(out) != "1" {
		t.Fatalf("data changed by a restore without -force: %q", out)
	}

	// A good backup restores through the follower, on every node.
	cli("store", "restore", file, "-force")
	for _, a := range agents {
		if _, errOut, code := a.CLI("store", "get", "-ns", "app", "after-backup"); code == 0 || !strings.Contains(errOut, "not found") {
			t.Errorf("%s still has a key the restore removed (%s)", a.Node, errOut)
		}
		if out, errOut, _ := a.CLI("store", "get", "-ns", "app", "kept"); strings.TrimSpace(out) != "1" {
			t.Errorf("%s lost a key from the backup: %s", a.Node, errOut)
		}
	}
}

func TestClusterCounterExactFromEveryNode(t *testing.T) {
	agents := NewCluster(t, 3)
	for _, a := range agents {
		a.Drop(bundlePath("counter", "1.0.0"))
	}
	for _, a := range agents {
		a.WaitRunning("counter", "1.0.0")
	}
	var ok atomic.Int64
	var wg sync.WaitGroup
	for _, a := range agents {
		c := counterv1.NewCounterServiceClient(a.Conn())
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 25 {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := c.Increment(ctx, &counterv1.IncrementRequest{Name: "cluster", Delta: 1})
					cancel()
					if err == nil {
						ok.Add(1)
					} else {
						t.Logf("increment through %s: %v", a.Node, err)
					}
				}
			}()
		}
	}
	wg.Wait()
	for _, a := range agents {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := counterv1.NewCounterServiceClient(a.Conn()).Get(ctx, &counterv1.GetRequest{Name: "cluster"})
		cancel()
		if err != nil {
			t.Fatalf("get through %s: %v", a.Node, err)
		}
		if resp.GetValue() != ok.Load() {
			t.Fatalf("counter through %s = %d, acknowledged increments %d", a.Node, resp.GetValue(), ok.Load())
		}
	}
	if ok.Load() < 250 {
		t.Errorf("only %d of 300 increments succeeded", ok.Load())
	}
}
