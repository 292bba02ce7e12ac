package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// TestWatchResumesAcrossLeaderChange watches on the leader, kills it under a
// stream of writes, and resumes the watch on a follower from the last
// revision seen: every acknowledged write arrives once, in order.
func TestWatchResumesAcrossLeaderChange(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader := leaderOf(t, nodes)
	var follower *testNode
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}
	start := leader.st.Revision() + 1

	var (
		mu     sync.Mutex
		events []*storev1.WatchResponse
	)
	watch := func(ctx context.Context, n *testNode, from int64) error {
		return n.st.Watch(ctx, &storev1.WatchRequest{Namespace: "app", Prefix: []byte("w"), StartRevision: from}, func(r *storev1.WatchResponse) error {
			mu.Lock()
			events = append(events, r)
			mu.Unlock()
			return nil
		})
	}
	lastSeen := func() int64 {
		mu.Lock()
		defer mu.Unlock()
		if len(events) == 0 {
			return start - 1
		}
		return events[len(events)-1].GetRevision()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watchDone := make(chan error, 1)
	go func() { watchDone <- watch(ctx, leader, start) }()

	// Writes go through the follower, which forwards them to whoever leads.
	acked := map[int64]string{}
	write := func(i int) {
		key := fmt.Sprint("w", i)
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
		defer wcancel()
		resp, err := follower.st.Put(wctx, &storev1.PutRequest{Namespace: "app", Key: []byte(key), Value: []byte(key)})
		if err == nil {
			acked[resp.GetRevision()] = key
		}
	}
	for i := range 50 {
		write(i)
	}
	testenv.WaitFor(t, 10*time.Second, "the watch on the leader to see the first writes", func() error {
		if lastSeen() < start {
			return fmt.Errorf("nothing yet")
		}
		return nil
	})
	leader.kill()
	select {
	case err := <-watchDone:
		t.Logf("watch on the killed leader ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the watch on the killed leader did not end")
	}
	// Resume on the follower from the last revision seen.
	go func() { watchDone <- watch(ctx, follower, lastSeen()+1) }()
	for i := 50; i < 150; i++ {
		write(i)
	}
	var maxAcked int64
	for r := range acked {
		maxAcked = max(maxAcked, r)
	}
	testenv.WaitFor(t, 15*time.Second, "the resumed watch to reach the last write", func() error {
		if r := lastSeen(); r < maxAcked {
			return fmt.Errorf("seen up to %d of %d", r, maxAcked)
		}
		return nil
	})
	cancel()
	<-watchDone

	mu.Lock()
	defer mu.Unlock()
	seen := map[int64]bool{}
	prev := int64(0)
	for _, r := range events {
		if r.GetRevision() <= prev {
			t.Fatalf("revision %d after %d: duplicate or out of order", r.GetRevision(), prev)
		}
		prev = r.GetRevision()
		seen[r.GetRevision()] = true
		for _, e := range r.GetEvents() {
			if string(e.GetKv().GetValue()) != string(e.GetKv().GetKey()) {
				t.Errorf("event at %d: %v", r.GetRevision(), e)
			}
		}
	}
	for rev, key := range acked {
		if !seen[rev] {
			t.Errorf("acknowledged write %s at revision %d never reached the watch", key, rev)
		}
	}
	if len(acked) < 100 {
		t.Errorf("only %d of 150 writes were acknowledged", len(acked))
	}
}
