package store

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// newCluster starts n in-memory nodes joined over raft's in-memory
// transport, node 0 the bootstrap leader.
func newCluster(t *testing.T, n int, clock *fakeClock) []*Store {
	t.Helper()
	nodes := make([]*Store, n)
	for i := range nodes {
		cfg := DefaultConfig()
		cfg.InMemory = true
		cfg.NodeID = fmt.Sprint("node", i)
		cfg.Bootstrap = i == 0
		cfg.clock = clock.now
		tm := testTiming
		cfg.timing = &tm
		s, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		nodes[i] = s
	}
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				a.node.trans.(*raft.InmemTransport).Connect(b.node.addr, b.node.trans)
			}
		}
	}
	if err := nodes[0].WaitForLeader(testenv.Context(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, s := range nodes[1:] {
		if err := nodes[0].node.raft.AddVoter(raft.ServerID(s.cfg.NodeID), s.node.addr, 0, 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range nodes {
		if err := s.WaitForLeader(testenv.Context(t, 20*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

func leaderOf(t *testing.T, nodes []*Store) *Store {
	t.Helper()
	var leader *Store
	testenv.Eventually(t, 10*time.Second, "a ready leader", func() bool {
		for _, s := range nodes {
			if !s.closed.Load() && s.leaderReady() {
				leader = s
				return true
			}
		}
		return false
	})
	return leader
}

// sessionGet reads key on s once s has applied rev.
func sessionGet(t *testing.T, s *Store, ns, key string, rev int64) *storev1.GetResponse {
	t.Helper()
	resp, err := s.Get(testenv.Context(t, 20*time.Second), &storev1.GetRequest{Namespace: ns, Key: []byte(key), Consistency: storev1.Consistency_CONSISTENCY_SESSION, MinRevision: rev})
	if err != nil {
		t.Fatalf("session read on %s: %v", s.cfg.NodeID, err)
	}
	return resp
}

func TestClusterFollowers(t *testing.T) {
	clock := newFakeClock()
	nodes := newCluster(t, 3, clock)
	leader, followers := nodes[0], nodes[1:]
	w := startWatch(t, followers[0], &storev1.WatchRequest{Namespace: "app", StartRevision: leader.Revision() + 1})

	p := put(t, leader, "app", "k", "v")
	for _, f := range followers {
		// Read-your-writes on a follower.
		if r := sessionGet(t, f, "app", "k", p.GetRevision()); string(r.GetKv().GetValue()) != "v" || r.GetRevision() < p.GetRevision() {
			t.Errorf("session read on %s: %v", f.cfg.NodeID, r)
		}
		_, err := f.Get(testenv.Context(t, 20*time.Second), &storev1.GetRequest{Namespace: "app", Key: []byte("k")})
		wantErr(t, err, ErrNotLeader)
		_, err = f.Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte("k")})
		wantErr(t, err, ErrNotLeader)
		if !bytes.Contains([]byte(err.Error()), []byte("node0")) {
			t.Errorf("not-leader error does not name the leader: %v", err)
		}
	}

	// The leader's clock expires the key; every node removes it at the
	// same revision, and the follower's watcher sees it.
	if _, err := leader.Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte("ttl"), Value: []byte("v"), TtlMs: 1000}); err != nil {
		t.Fatal(err)
	}
	clock.advance(2 * time.Second)
	testenv.Eventually(t, 5*time.Second, "expiry on the follower", func() bool {
		for _, e := range w.events() {
			if e.GetType() == storev1.EventType_EVENT_TYPE_EXPIRE {
				return true
			}
		}
		return false
	})

	// A restore on the leader reaches every node.
	var backup bytes.Buffer
	put(t, leader, "app", "in-backup", "v")
	if err := leader.Backup(testenv.Context(t, 20*time.Second), &backup); err != nil {
		t.Fatal(err)
	}
	put(t, leader, "app", "after-backup", "v")
	res, err := leader.Restore(testenv.Context(t, 20*time.Second), &backup, RestoreOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	want := capture(t, leader)
	for _, f := range followers {
		if r := sessionGet(t, f, "app", "after-backup", res.GetRevision()); r.GetKv() != nil {
			t.Errorf("%s still has a key the restore removed", f.cfg.NodeID)
		}
		if got := capture(t, f); !bytes.Equal(got, want) {
			t.Errorf("%s diverged from the leader after the restore", f.cfg.NodeID)
		}
	}
}

// capture is the state of s as a snapshot file, revision aside.
func capture(t *testing.T, s *Store) []byte {
	t.Helper()
	snap, err := s.fsm.Capture()
	if err != nil {
		t.Fatal(err)
	}
	snap.Revision = 0
	var buf bytes.Buffer
	if err := snap.Write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestClusterFailoverKeepsAcknowledgedWrites(t *testing.T) {
	nodes := newCluster(t, 3, newFakeClock())
	old := nodes[0]
	var last *storev1.PutResponse
	for i := range 50 {
		last = put(t, old, "app", fmt.Sprint("k", i), fmt.Sprint(i))
	}
	old.Close()

	leader := leaderOf(t, nodes[1:])
	// A linearizable read on the new leader sees every write the old one
	// acknowledged.
	for i := range 50 {
		kv := get(t, leader, "app", fmt.Sprint("k", i))
		if string(kv.GetValue()) != fmt.Sprint(i) {
			t.Fatalf("k%d = %v on the new leader", i, kv)
		}
	}
	p := put(t, leader, "app", "after", "v")
	if p.GetRevision() <= last.GetRevision() {
		t.Errorf("revision %d after failover, not after %d", p.GetRevision(), last.GetRevision())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range nodes[1:] {
		if _, err := s.Get(ctx, &storev1.GetRequest{Namespace: "app", Key: []byte("after"), Consistency: storev1.Consistency_CONSISTENCY_SESSION, MinRevision: p.GetRevision()}); err != nil {
			t.Errorf("%s: %v", s.cfg.NodeID, err)
		}
	}
}
