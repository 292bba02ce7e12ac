package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// TestClusterLeaderRestartsAfterItsLogTailWasReplaced partitions the leader,
// has it take writes it cannot commit, lets the others elect a new leader
// whose log replaces that tail, heals the partition and restarts the old
// leader: it must come back with every acknowledged write. raft-wal v0.4.0
// panicked on that restart ("sealed segment has no index block"), on every
// start after.
func TestClusterLeaderRestartsAfterItsLogTailWasReplaced(t *testing.T) {
	agents := NewCluster(t, 3)
	ack := writeSome(t, agents, 200)

	old := leaderOf(t, agents)
	if old == agents[2] {
		// agents[2] keeps its log in boltdb; this is about the WAL. Pause it
		// until another node leads.
		old.Signal(syscall.SIGSTOP)
		old = leaderOf(t, agents, agents[2])
		agents[2].Signal(syscall.SIGCONT)
	}
	var others []*ClusterAgent
	for _, a := range agents {
		if a != old {
			others = append(others, a)
		}
	}
	paused := map[*ClusterAgent]bool{}
	pause := func(a *ClusterAgent) { a.Signal(syscall.SIGSTOP); paused[a] = true }
	resume := func(a *ClusterAgent) { a.Signal(syscall.SIGCONT); delete(paused, a) }
	defer func() {
		for a := range paused {
			a.Signal(syscall.SIGCONT)
		}
	}()

	// The partition: the old leader appends writes it cannot commit.
	for _, a := range others {
		pause(a)
	}
	var uncommitted sync.WaitGroup
	for i := range 40 {
		uncommitted.Add(1)
		go func() {
			defer uncommitted.Done()
			cctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
			defer cancel()
			key := fmt.Sprintf("lost/%d", i)
			if _, err := old.Store().Put(cctx, &storev1.PutRequest{Namespace: "app", Key: []byte(key), Value: []byte(key)}); err == nil {
				t.Errorf("the partitioned leader acknowledged %s", key)
			}
		}()
		time.Sleep(5 * time.Millisecond)
	}
	uncommitted.Wait()

	// The majority elects a new leader and writes over that tail.
	pause(old)
	for _, a := range others {
		resume(a)
	}
	leaderOf(t, others)
	after := writeSome(t, others, 200)
	for k, rev := range after.keys {
		ack.add(k, rev)
	}

	// Heal: the old leader's log tail is replaced by the new leader's.
	resume(old)
	ack.checkAll(t, old)

	// And it restarts on that log, as often as it is restarted.
	for range 2 {
		old.Kill9()
		old.Start()
		ack.checkAll(t, old)
	}
}

// TestClusterAllServersMoveAtOnce kills every server and starts each on a
// new raft (RPC) address with its data dir: the raft configuration holds
// the old addresses, gossip the new ones. The servers must elect a leader,
// keep every acknowledged write and take new ones.
func TestClusterAllServersMoveAtOnce(t *testing.T) {
	agents := NewCluster(t, 3)
	ack := writeSome(t, agents, 200)

	for _, a := range agents {
		a.Kill9()
		a.RPC = testenv.FreeAddr(t)
	}
	start := time.Now()
	StartAll(agents...)
	t.Logf("a leader after %v", time.Since(start).Round(time.Millisecond))
	for _, a := range agents {
		ack.checkAll(t, a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, a := range agents {
		if _, err := a.Store().Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("moved/" + a.Node), Value: []byte("v")}); err != nil {
			t.Fatalf("a write through %s after the move: %v", a.Node, err)
		}
	}
	// The leader writes every server's new address into the raft
	// configuration, its own included.
	testenv.WaitFor(t, 30*time.Second, "the raft configuration to hold the new addresses", func() error {
		out, errOut, code := agents[0].CLI("operator", "raft", "list-peers", "-format", "json")
		if code != 0 {
			return fmt.Errorf("list-peers: exit %d: %s", code, errOut)
		}
		for _, a := range agents {
			if !strings.Contains(out, `"`+a.RPC+`"`) {
				return fmt.Errorf("%s's new address %s is not in %s", a.Node, a.RPC, out)
			}
		}
		return nil
	})
}

// TestClusterOperatorRemovesAGoneServer: a server gone for good is removed
// from raft by an operator through any node, before the automatic removal
// would; a server that gossip sees alive is refused without -force.
func TestClusterOperatorRemovesAGoneServer(t *testing.T) {
	agents := NewCluster(t, 3)
	leader := leaderOf(t, agents)
	var rest []*ClusterAgent
	for _, a := range agents {
		if a != leader {
			rest = append(rest, a)
		}
	}
	gone, via := rest[0], rest[1] // via is a follower: the removal goes through the leader

	out, errOut, code := via.CLI("operator", "raft", "remove-peer", gone.Node)
	if code != 1 || !strings.Contains(errOut, "alive in gossip") || !strings.Contains(errOut, "-force") {
		t.Fatalf("removing a live server without -force: exit %d, %s%s", code, out, errOut)
	}

	gone.Kill9()
	// Each agent answers list-peers from its own gossip view, and the
	// removal's check runs on the leader: wait until both have seen it.
	for _, a := range []*ClusterAgent{via, leader} {
		testenv.WaitFor(t, 30*time.Second, a.Node+"'s gossip to see "+gone.Node+" failed", func() error {
			out, _, _ := a.CLI("operator", "raft", "list-peers", "-format", "json")
			var peers []struct {
				ID         string `json:"id"`
				SerfStatus string `json:"serf_status"`
			}
			if err := json.Unmarshal([]byte(out), &peers); err != nil {
				return fmt.Errorf("list-peers: %v: %s", err, out)
			}
			for _, p := range peers {
				if p.ID == gone.Node && p.SerfStatus == "failed" {
					return nil
				}
			}
			return fmt.Errorf("list-peers: %s", out)
		})
	}
	out, errOut, code = via.CLI("operator", "raft", "remove-peer", gone.Node)
	if code != 0 {
		t.Fatalf("remove-peer %s: exit %d, %s%s", gone.Node, code, out, errOut)
	}
	if strings.Contains(out, gone.Node+" ") && strings.Count(out, gone.Node) > 1 {
		t.Fatalf("remove-peer printed a configuration that still holds %s:\n%s", gone.Node, out)
	}
	list, _, _ := leader.CLI("operator", "raft", "list-peers")
	if strings.Contains(list, gone.Node) || !strings.Contains(list, leader.Node) || !strings.Contains(list, via.Node) {
		t.Fatalf("list-peers after the removal:\n%s", list)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := via.Store().Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("after-removal"), Value: []byte("v")}); err != nil {
		t.Fatalf("a write after the removal: %v", err)
	}
}

// TestClusterRecoversFromLostQuorumWithPeersJSON: two of three servers are
// lost for good; the operator writes peers.json naming the one left, which
// then leads alone with every acknowledged write.
func TestClusterRecoversFromLostQuorumWithPeersJSON(t *testing.T) {
	agents := NewCluster(t, 3)
	ack := writeSome(t, agents, 200)
	left := agents[0]
	// A write is acknowledged once a majority has it: only those the
	// server left had received can survive the loss of the others.
	ack.checkAll(t, left)
	for _, a := range agents {
		a.Kill9()
	}
	for _, a := range agents[1:] {
		if err := os.RemoveAll(a.DataDir); err != nil {
			t.Fatal(err)
		}
	}
	peers := fmt.Sprintf(`[{"id": %q, "address": %q, "non_voter": false}]`, left.Node, left.RPC)
	peersFile := filepath.Join(left.DataDir, "store", "peers.json")
	if err := os.WriteFile(peersFile, []byte(peers), 0o600); err != nil {
		t.Fatal(err)
	}
	left.Start()
	ack.checkAll(t, left)
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if _, err := left.Store().Put(wctx, &storev1.PutRequest{Namespace: "app", Key: []byte("recovered"), Value: []byte("v")}); err != nil {
		t.Fatalf("a write after the recovery: %v", err)
	}
	if _, err := os.Stat(peersFile + ".applied"); err != nil {
		t.Errorf("peers.json was not renamed once applied: %v", err)
	}
	list, _, _ := left.CLI("operator", "raft", "list-peers")
	if strings.Contains(list, agents[1].Node) || strings.Contains(list, agents[2].Node) {
		t.Fatalf("list-peers after the recovery:\n%s", list)
	}
	// It stays recovered across a restart, without the file.
	left.Kill9()
	left.Start()
	ack.checkAll(t, left)
}

// TestClusterAgentWithoutLeaderAnswers: an agent whose cluster has no leader
// (the other servers are down) still answers what it knows by itself: the
// members, the raft peers as it sees them, and its plugins as its own copy
// of the catalog knows them.
func TestClusterAgentWithoutLeaderAnswers(t *testing.T) {
	agents := NewCluster(t, 3)
	alone := agents[0]
	alone.Drop(bundlePath("echo", "1.0.0"))
	alone.WaitRunning("echo", "1.0.0")
	for _, a := range agents[1:] {
		a.Kill9()
	}
	testenv.WaitFor(t, 30*time.Second, alone.Node+" to lose its leader", func() error {
		if err := alone.ready(); err == nil {
			return fmt.Errorf("it still knows a leader")
		}
		return nil
	})
	out, errOut, code := alone.CLI("plugin", "list")
	if code != 0 || !strings.Contains(out, "echo") || !strings.Contains(out, "1.0.0") || !strings.Contains(errOut, "no raft leader") {
		t.Fatalf("plugin list without a leader: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = alone.CLI("plugin", "status", "echo")
	if code != 0 || !strings.Contains(out, "running") || !strings.Contains(errOut, "this node's copy") {
		t.Fatalf("plugin status without a leader: exit %d\n%s%s", code, out, errOut)
	}

	// Restarted without a leader, it answers at once.
	alone.Kill9()
	alone.startProcess()
	var members string
	testenv.WaitFor(t, 30*time.Second, "members from an agent without a leader", func() error {
		out, errOut, code := alone.CLI("members")
		if code != 0 {
			return fmt.Errorf("members: exit %d: %s", code, errOut)
		}
		members = out
		return nil
	})
	if !strings.Contains(members, alone.Node) {
		t.Fatalf("members without a leader:\n%s", members)
	}
	out, errOut, code = alone.CLI("operator", "raft", "list-peers", "-format", "json")
	if code != 0 {
		t.Fatalf("list-peers without a leader: exit %d: %s", code, errOut)
	}
	var peers []struct {
		ID     string `json:"id"`
		Leader bool   `json:"leader"`
	}
	if err := json.Unmarshal([]byte(out), &peers); err != nil {
		t.Fatalf("list-peers: %v: %s", err, out)
	}
	if len(peers) != 3 {
		t.Fatalf("list-peers without a leader shows %d servers, want the 3 it counts on: %s", len(peers), out)
	}
	for _, p := range peers {
		if p.Leader {
			t.Fatalf("list-peers names a leader in a cluster without one: %s", out)
		}
	}
	// The rest comes back, and the agent goes on to lead or follow.
	for _, a := range agents[1:] {
		a.startProcess()
	}
	for _, a := range agents {
		a.waitAPI(agents...)
	}
	alone.WaitRunning("echo", "1.0.0")
}

// writeSome writes through agents until n writes are acknowledged, and
// returns them.
func writeSome(t *testing.T, agents []*ClusterAgent, n int) *acked {
	t.Helper()
	ack := &acked{}
	ctx, cancel := context.WithCancel(context.Background())
	wg := writeLoad(ctx, agents, 4, ack, nil)
	defer func() {
		cancel()
		wg.Wait()
	}()
	testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("%d writes", n), func() error {
		ack.mu.Lock()
		defer ack.mu.Unlock()
		if len(ack.keys) < n {
			return fmt.Errorf("%d writes", len(ack.keys))
		}
		return nil
	})
	return ack
}

// TestClusterFirstServerRejoinsAfterRestart restarts the server the others
// joined, whose own -join names only itself (n1 in the README): it finds
// its peers again from what gossip knew before, and takes writes.
func TestClusterFirstServerRejoinsAfterRestart(t *testing.T) {
	agents := NewCluster(t, 3)
	first := agents[0]
	first.Kill9()
	// The others see it failed before it comes back.
	testenv.WaitFor(t, 30*time.Second, "gossip to see "+first.Node+" failed", func() error {
		out, _, _ := agents[1].CLI("members", "-format", "json")
		if !strings.Contains(out, `"failed"`) {
			return fmt.Errorf("members: %s", out)
		}
		return nil
	})
	start := time.Now()
	first.Start()
	testenv.WaitFor(t, 10*time.Second, first.Node+" to take writes after its restart", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := first.Store().Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("rejoined"), Value: []byte("v")})
		return err
	})
	t.Logf("%s took writes %v after its restart", first.Node, time.Since(start).Round(time.Millisecond))
}

// TestClusterLostWritesSayIfTheyMayHaveApplied kills the leader with -9
// while followers forward writes to it. Every write that fails either says
// its outcome is unknown (ErrorInfo OUTCOME_UNKNOWN, or the caller's own
// deadline) or was not applied: none of the others is found written.
func TestClusterLostWritesSayIfTheyMayHaveApplied(t *testing.T) {
	agents := NewCluster(t, 3)
	leader := leaderOf(t, agents)
	var others []*ClusterAgent
	for _, a := range agents {
		if a != leader {
			others = append(others, a)
		}
	}
	type failure struct {
		key string
		err error
	}
	var (
		mu       sync.Mutex
		failures []failure
		acks     atomic.Int64
		seq      atomic.Int64
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				key := fmt.Sprintf("lost/%d", seq.Add(1))
				wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := others[c%2].Store().Put(wctx, &storev1.PutRequest{Namespace: "app", Key: []byte(key), Value: []byte(key)})
				wcancel()
				if err == nil {
					acks.Add(1)
					continue
				}
				mu.Lock()
				failures = append(failures, failure{key, err})
				mu.Unlock()
			}
		}()
	}
	testenv.WaitFor(t, 20*time.Second, "forwarded writes", func() error {
		if n := acks.Load(); n < 300 {
			return fmt.Errorf("%d writes", n)
		}
		return nil
	})
	leader.Kill9()
	before := acks.Load()
	testenv.WaitFor(t, 30*time.Second, "writes under the new leader", func() error {
		if n := acks.Load() - before; n < 300 {
			return fmt.Errorf("%d writes since the kill", n)
		}
		return nil
	})
	cancel()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	unknown, refused := 0, 0
	for _, f := range failures {
		st := status.Convert(f.err)
		reason := storev1.ErrorReason(f.err)
		switch {
		case reason == storev1.ReasonOutcomeUnknown, st.Code() == codes.DeadlineExceeded:
			unknown++
			continue
		case reason == "":
			t.Errorf("write %s failed without a reason to tell whether it applied: %v", f.key, f.err)
			continue
		}
		refused++
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := others[0].Store().Get(rctx, &storev1.GetRequest{Namespace: "app", Key: []byte(f.key)})
		rcancel()
		if err != nil {
			t.Fatalf("reading %s back: %v", f.key, err)
		}
		if resp.GetKv() != nil {
			t.Errorf("write %s failed as not applied (%s: %v), but it was applied", f.key, reason, f.err)
		}
	}
	t.Logf("leader %s killed: %d writes acknowledged, %d failed with an unknown outcome, %d refused and checked not applied",
		leader.Node, acks.Load(), unknown, refused)
}
