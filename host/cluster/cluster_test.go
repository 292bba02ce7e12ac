package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

func TestBootstrapExpectAndForwarding(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader := leaderOf(t, nodes)
	if got := voters(t, leader); len(got) != 3 {
		t.Fatalf("configuration after bootstrap-expect 3: %v", got)
	}
	// Every node sees every member and the one leader.
	for _, n := range nodes {
		testenv.WaitFor(t, 10*time.Second, n.name+" sees three alive members with roles", func() error {
			leaders := 0
			ms := n.c.Members()
			for _, m := range ms {
				if m.Status != "alive" || m.APIAddr == "" || m.RPCAddr == "" {
					return fmt.Errorf("member %+v", m)
				}
				if m.RaftRole == RaftLeader {
					leaders++
				}
			}
			if len(ms) != 3 || leaders != 1 {
				return fmt.Errorf("%d members, %d leaders", len(ms), leaders)
			}
			return nil
		})
	}
	// Any node takes writes and linearizable reads; followers forward them.
	for i, n := range nodes {
		p := put(t, n, fmt.Sprint("k", i), n.name)
		for _, m := range nodes {
			if kv := sessionGet(t, m, fmt.Sprint("k", i), p.GetRevision()); string(kv.GetValue()) != n.name {
				t.Errorf("%s: k%d = %v after a write through %s", m.name, i, kv, n.name)
			}
			resp, err := m.st.Get(testenv.Context(t, 5*time.Second), &storev1.GetRequest{Namespace: "app", Key: []byte(fmt.Sprint("k", i))})
			if err != nil || string(resp.GetKv().GetValue()) != n.name || resp.GetRevision() < p.GetRevision() {
				t.Errorf("linearizable get through %s: %v, %v", m.name, resp, err)
			}
		}
	}
	// Errors keep their meaning across the hop.
	follower := nodes[0]
	if follower == leader {
		follower = nodes[1]
	}
	_, err := follower.st.Put(testenv.Context(t, 5*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte("k0"), Value: []byte("x"), ExpectedModRevision: ptr(int64(1))})
	if !errors.Is(err, store.ErrCASFailed) {
		t.Errorf("forwarded CAS on a stale revision: %v, want ErrCASFailed", err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestLeaderLossAndReelection(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	old := leaderOf(t, nodes)
	var last int64
	for i := range 20 {
		last = put(t, old, fmt.Sprint("k", i), fmt.Sprint(i)).GetRevision()
	}
	old.kill()
	killed := time.Now()
	var alive []*testNode
	for _, n := range nodes {
		if n != old {
			alive = append(alive, n)
		}
	}
	leader := leaderOf(t, alive)
	// A write through the follower (forwarded) lands on the new leader.
	var follower *testNode
	for _, n := range alive {
		if n != leader {
			follower = n
		}
	}
	var p *storev1.PutResponse
	testenv.WaitFor(t, 10*time.Second, "a write after the election", func() (err error) {
		p, err = follower.st.Put(testenv.Context(t, 2*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte("after"), Value: []byte("v")})
		return err
	})
	t.Logf("leader kill to first acknowledged write: %v", time.Since(killed))
	if p.GetRevision() <= last {
		t.Errorf("revision %d after failover is not after %d", p.GetRevision(), last)
	}
	for i := range 20 {
		resp, err := follower.st.Get(testenv.Context(t, 5*time.Second), &storev1.GetRequest{Namespace: "app", Key: []byte(fmt.Sprint("k", i))})
		if err != nil || string(resp.GetKv().GetValue()) != fmt.Sprint(i) {
			t.Fatalf("k%d after failover: %v, %v", i, resp, err)
		}
	}
}

func TestFollowerCatchUpFromSnapshot(t *testing.T) {
	small := func(c *store.Config) { c.SnapshotThreshold, c.TrailingLogs = 64, 16 }
	nodes := newTestCluster(t, 3, small)
	leader := leaderOf(t, nodes)
	var lagger *testNode
	for _, n := range nodes {
		if n != leader {
			lagger = n
			break
		}
	}
	lagger.kill()
	var last int64
	for i := range 300 {
		last = put(t, leader, fmt.Sprintf("k%03d", i), fmt.Sprint(i)).GetRevision()
	}
	// The leader snapshots and truncates its log past what the lagging node
	// has: it can only catch up from the snapshot.
	if err := leader.st.Snapshot(); err != nil {
		t.Fatal(err)
	}
	back := lagger.restart(leader.c.Addr())
	testenv.WaitFor(t, 20*time.Second, "the restarted node to catch up", func() error {
		if r := back.st.Revision(); r < last {
			return fmt.Errorf("applied %d of %d", r, last)
		}
		return nil
	})
	for i := range 300 {
		if kv := sessionGet(t, back, fmt.Sprintf("k%03d", i), last); string(kv.GetValue()) != fmt.Sprint(i) {
			t.Fatalf("k%03d on the caught-up node: %v", i, kv)
		}
	}
	// It is a voter again.
	testenv.WaitFor(t, 10*time.Second, "the node back in the configuration as a voter", func() error {
		conf, err := leaderOf(t, nodes).st.Configuration()
		if err != nil {
			return err
		}
		for _, s := range conf {
			if s.ID == back.name && s.Address == back.st.RaftAddr() && s.Suffrage == store.Voter {
				return nil
			}
		}
		return fmt.Errorf("configuration %v", conf)
	})
}

func TestMembershipChanges(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader := leaderOf(t, nodes)
	base := t.TempDir()

	// A fourth server joins and becomes a voter once stable. It keeps at
	// least three voters, as the first three do (-bootstrap-expect 3).
	n3 := startNode(t, "n3", filepath.Join(base, "n3"), nodeOptions{Join: []string{nodes[0].c.Addr()}, MinQuorum: 3})
	testenv.WaitFor(t, 15*time.Second, "n3 to become a voter", func() error {
		if voters(t, leaderOf(t, nodes))["n3"] != store.Voter {
			return fmt.Errorf("configuration %v", voters(t, leader))
		}
		return nil
	})
	p := put(t, n3, "from-n3", "v")
	if kv := sessionGet(t, n3, "from-n3", p.GetRevision()); string(kv.GetValue()) != "v" {
		t.Fatalf("read-your-write on n3: %v", kv)
	}

	// A server that leaves gracefully is removed at once.
	var leaving *testNode
	for _, n := range nodes {
		if n != leaderOf(t, nodes) {
			leaving = n
			break
		}
	}
	leaving.leave()
	all := append(append([]*testNode{}, nodes...), n3)
	testenv.WaitFor(t, 15*time.Second, leaving.name+" removed after leaving", func() error {
		if _, ok := voters(t, leaderOf(t, all))[leaving.name]; ok {
			return fmt.Errorf("still in %v", voters(t, leaderOf(t, all)))
		}
		return nil
	})

	// A server that fails stays a voter: removing it would leave fewer
	// than the minimum quorum of three, and then the two up would be no
	// quorum of the two left once the other failed.
	var failing *testNode
	for _, n := range all {
		if !n.isDown() && n != leaderOf(t, all) {
			failing = n
			break
		}
	}
	failing.kill()
	testenv.WaitFor(t, 15*time.Second, failing.name+" failed in gossip", func() error {
		for _, m := range leaderOf(t, all).c.Members() {
			if m.Name == failing.name && m.Status == "failed" {
				return nil
			}
		}
		return fmt.Errorf("not failed yet")
	})
	time.Sleep(3 * time.Second) // three times the grace
	if got := voters(t, leaderOf(t, all)); len(got) != 3 || got[failing.name] != store.Voter {
		t.Fatalf("configuration after one leave and one failure of four: %v, want three voters", got)
	}
	put(t, leaderOf(t, all), "still-writable", "v")
}

// TestServerFailedInGossipKeptWhileRaftReachesIt cuts a follower off from
// gossip alone: gossip calls it failed while raft still replicates to it.
// It stays a voter past the dead-server grace; once it is down for raft
// too, it is removed (the minimum quorum, two, allows it).
func TestServerFailedInGossipKeptWhileRaftReachesIt(t *testing.T) {
	base := t.TempDir()
	var nodes []*testNode
	for i := range 3 {
		o := nodeOptions{Expect: 3, MinQuorum: 2}
		if i > 0 {
			o.Join = []string{nodes[0].c.Addr()}
		}
		nodes = append(nodes, startNode(t, fmt.Sprint("n", i), filepath.Join(base, fmt.Sprint("n", i)), o))
	}
	leader := leaderOf(t, nodes)
	var cut *testNode
	for _, n := range nodes {
		if n != leader {
			cut = n
			break
		}
	}
	if err := cut.c.Shutdown(); err != nil { // gossip only; its store runs on
		t.Fatal(err)
	}
	cutAt := time.Now()
	testenv.WaitFor(t, 15*time.Second, cut.name+" failed in gossip", func() error {
		for _, m := range leader.c.Members() {
			if m.Name == cut.name && m.Status == "failed" {
				return nil
			}
		}
		return fmt.Errorf("not failed yet")
	})
	failedAfter := time.Since(cutAt)
	// Three times the grace (1 s), watching the leader's configuration.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !leader.st.IsLeader() {
			t.Fatalf("%s lost the leadership", leader.name)
		}
		if got := voters(t, leader); got[cut.name] != store.Voter {
			t.Fatalf("%s removed while raft reached it (failed in gossip %v after the cut, %v ago): %v",
				cut.name, failedAfter, time.Since(cutAt)-failedAfter, got)
		}
	}
	p := put(t, leader, "k", "v")
	if kv := sessionGet(t, cut, "k", p.GetRevision()); string(kv.GetValue()) != "v" {
		t.Fatalf("%s did not replicate k: %v", cut.name, kv)
	}

	// Down for raft too: removed.
	cut.kill()
	down := time.Now()
	testenv.WaitFor(t, 20*time.Second, cut.name+" removed once raft cannot reach it", func() error {
		if got := voters(t, leaderOf(t, nodes)); len(got) != 2 {
			return fmt.Errorf("configuration %v", got)
		}
		return nil
	})
	t.Logf("%s failed in gossip %v after the cut; kept a voter 3s; removed %v after raft lost it",
		cut.name, failedAfter.Round(time.Millisecond), time.Since(down).Round(time.Millisecond))
}

func TestTTLExpiresAtOneRevisionEverywhere(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader := leaderOf(t, nodes)
	start := leader.st.Revision() + 1
	type expiry struct {
		node string
		rev  int64
	}
	got := make(chan expiry, len(nodes))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = n.st.Watch(ctx, &storev1.WatchRequest{Namespace: "app", StartRevision: start}, func(r *storev1.WatchResponse) error {
				for _, e := range r.GetEvents() {
					if e.GetType() == storev1.EventType_EVENT_TYPE_EXPIRE {
						got <- expiry{n.name, r.GetRevision()}
						return errors.New("done")
					}
				}
				return nil
			})
		}()
	}
	if _, err := nodes[1].st.Put(testenv.Context(t, 5*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte("ttl"), Value: []byte("v"), TtlMs: 300}); err != nil {
		t.Fatal(err)
	}
	var revs []expiry
	timeout := time.After(15 * time.Second)
	for len(revs) < len(nodes) {
		select {
		case e := <-got:
			revs = append(revs, e)
		case <-timeout:
			t.Fatalf("expiry seen on %d of %d nodes: %v", len(revs), len(nodes), revs)
		}
	}
	for _, e := range revs[1:] {
		if e.rev != revs[0].rev {
			t.Fatalf("the key expired at different revisions: %v", revs)
		}
	}
	cancel()
	wg.Wait()
}

func TestServersPastMaxVotersAreNonvoters(t *testing.T) {
	// Three voters at most in this cluster (five by default).
	base := t.TempDir()
	var nodes []*testNode
	for i := range 4 {
		o := nodeOptions{Expect: 3, MaxVoters: 3}
		if i > 0 {
			o.Join = []string{nodes[0].c.Addr()}
		}
		if i == 3 {
			o.Expect = 0
		}
		nodes = append(nodes, startNode(t, fmt.Sprint("n", i), filepath.Join(base, fmt.Sprint("n", i)), o))
	}
	testenv.WaitFor(t, 20*time.Second, "n3 to join as a non-voter", func() error {
		for _, n := range nodes[:3] {
			if n.st.IsLeader() {
				conf := voters(t, n)
				if conf["n3"] != store.Nonvoter || len(conf) != 4 {
					return fmt.Errorf("configuration %v", conf)
				}
				return nil
			}
		}
		return fmt.Errorf("no leader among the first three")
	})
	// When a voter leaves, the non-voter is promoted.
	leader := leaderOf(t, nodes[:3])
	var leaving *testNode
	for _, n := range nodes[:3] {
		if n != leader {
			leaving = n
			break
		}
	}
	leaving.leave()
	testenv.WaitFor(t, 20*time.Second, "n3 promoted to voter", func() error {
		conf := voters(t, leaderOf(t, nodes))
		if conf["n3"] != store.Voter || len(conf) != 3 {
			return fmt.Errorf("configuration %v", conf)
		}
		return nil
	})
}
