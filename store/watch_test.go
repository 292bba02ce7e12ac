package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// checkOrdered fails unless resps have strictly increasing revisions and
// every event's mod revision matches its response (deletes carry the
// removed key's last revision, so only puts are checked).
func checkOrdered(t *testing.T, resps []*storev1.WatchResponse) {
	t.Helper()
	var last int64
	for _, r := range resps {
		if r.GetRevision() <= last {
			t.Fatalf("revision %d after %d: out of order or duplicated", r.GetRevision(), last)
		}
		last = r.GetRevision()
		if len(r.GetEvents()) == 0 {
			t.Fatalf("empty response at revision %d", r.GetRevision())
		}
		for _, ev := range r.GetEvents() {
			if ev.GetType() == storev1.EventType_EVENT_TYPE_PUT && ev.GetKv().GetModRevision() != r.GetRevision() {
				t.Fatalf("put event %v in response of revision %d", ev, r.GetRevision())
			}
		}
	}
}

func TestWatchConcurrentWritersNoGapsNoDuplicates(t *testing.T) {
	s := newMemStore(t)
	w := startWatch(t, s, &storev1.WatchRequest{Namespace: "app", Prefix: []byte("w/"), StartRevision: s.Revision() + 1})
	const writers, each = 16, 40
	var mu sync.Mutex
	acked := make(map[string]bool) // key@revision of every acknowledged put
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := fmt.Sprintf("w/%d/%d", g, i%7)
				resp, err := s.Put(context.Background(), &storev1.PutRequest{Namespace: "app", Key: []byte(key), Value: []byte("v")})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[fmt.Sprintf("%s@%d", key, resp.GetRevision())] = true
				mu.Unlock()
				// Noise the watcher must not see.
				if _, err := s.Put(context.Background(), &storev1.PutRequest{Namespace: "app", Key: []byte("x/" + key), Value: []byte("v")}); err != nil {
					t.Error(err)
				}
				if _, err := s.Put(context.Background(), &storev1.PutRequest{Namespace: "app-w", Key: []byte(key), Value: []byte("v")}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	testenv.Eventually(t, 10*time.Second, "every put to reach the watcher", func() bool { return len(w.events()) >= writers*each })
	resps := w.responses()
	checkOrdered(t, resps)
	seen := make(map[string]bool)
	for _, r := range resps {
		for _, ev := range r.GetEvents() {
			id := fmt.Sprintf("%s@%d", ev.GetKv().GetKey(), r.GetRevision())
			if !strings.HasPrefix(string(ev.GetKv().GetKey()), "w/") {
				t.Fatalf("event outside the prefix: %s", id)
			}
			if seen[id] {
				t.Fatalf("duplicate event %s", id)
			}
			seen[id] = true
			if !acked[id] {
				t.Fatalf("event %s was never written", id)
			}
		}
	}
	if len(seen) != len(acked) {
		t.Fatalf("watcher saw %d puts, %d were acknowledged", len(seen), len(acked))
	}
}

func TestWatchResumeFromRevision(t *testing.T) {
	s := newMemStore(t)
	start := put(t, s, "app", "a", "1").GetRevision()
	put(t, s, "app", "b", "1")
	if _, err := s.Txn(testenv.Context(t, 20*time.Second), &storev1.TxnRequest{Namespace: "app", Success: []*storev1.TxnOp{putTxnOp("c", "1", 0), putTxnOp("d", "1", 0), delTxnOp("a")}}); err != nil {
		t.Fatal(err)
	}
	del, err := s.DeleteRange(testenv.Context(t, 20*time.Second), &storev1.DeleteRangeRequest{Namespace: "app", Prefix: []byte("c")})
	if err != nil {
		t.Fatal(err)
	}

	// A watcher from the past replays history, then follows live writes.
	w := startWatch(t, s, &storev1.WatchRequest{Namespace: "app", StartRevision: start})
	// A watcher from now sees only what comes next.
	now := startWatch(t, s, &storev1.WatchRequest{Namespace: "app"})
	testenv.Eventually(t, 5*time.Second, "both watches to start", func() bool { return s.fsm.Hub().Watchers() == 2 })
	testenv.Eventually(t, 5*time.Second, "history replay", func() bool { return len(w.responses()) == 4 })
	live := put(t, s, "app", "e", "1")
	testenv.Eventually(t, 5*time.Second, "live event", func() bool { return len(w.responses()) == 5 && len(now.responses()) == 1 })

	resps := w.responses()
	checkOrdered(t, resps)
	want := []string{"PUT a", "PUT b", "PUT c,PUT d,DELETE a", "DELETE c", "PUT e"}
	for i, r := range resps {
		var got []string
		for _, ev := range r.GetEvents() {
			got = append(got, strings.TrimPrefix(ev.GetType().String(), "EVENT_TYPE_")+" "+string(ev.GetKv().GetKey()))
		}
		if strings.Join(got, ",") != want[i] {
			t.Errorf("response %d = %q, want %q", i, strings.Join(got, ","), want[i])
		}
	}
	if resps[0].GetRevision() != start || resps[3].GetRevision() != del.GetRevision() || resps[4].GetRevision() != live.GetRevision() {
		t.Errorf("revisions %v", resps)
	}
	if r := now.responses(); r[0].GetRevision() != live.GetRevision() {
		t.Errorf("watch from now got %v", r)
	}
}

func TestWatchCompacted(t *testing.T) {
	s := newMemStore(t, func(c *Config) { c.WatchHistory = 5 })
	first := put(t, s, "app", "k", "0").GetRevision()
	var revs []int64
	for i := range 20 {
		revs = append(revs, put(t, s, "app", "k", fmt.Sprint(i)).GetRevision())
	}
	err := s.Watch(testenv.Context(t, 20*time.Second), &storev1.WatchRequest{Namespace: "app", StartRevision: first}, func(*storev1.WatchResponse) error { return nil })
	wantErr(t, err, ErrCompacted)
	if !strings.Contains(err.Error(), "list again") {
		t.Errorf("compacted error does not tell the client what to do: %v", err)
	}

	// The last 5 revisions are still there.
	w := startWatch(t, s, &storev1.WatchRequest{Namespace: "app", StartRevision: revs[15]})
	testenv.Eventually(t, 5*time.Second, "retained history", func() bool { return len(w.responses()) == 5 })
	for i, r := range w.responses() {
		if r.GetRevision() != revs[15+i] {
			t.Errorf("response %d at revision %d, want %d", i, r.GetRevision(), revs[15+i])
		}
	}
	err = s.Watch(testenv.Context(t, 20*time.Second), &storev1.WatchRequest{Namespace: "app", StartRevision: revs[14]}, func(*storev1.WatchResponse) error { return nil })
	wantErr(t, err, ErrCompacted)
}

func TestWatchSlowWatcherEndsWithError(t *testing.T) {
	s := newMemStore(t, func(c *Config) { c.WatchHistory = 8 })
	start := s.Revision() + 1
	unblock := make(chan struct{})
	var got []*storev1.WatchResponse
	done := make(chan error, 1)
	go func() {
		done <- s.Watch(context.Background(), &storev1.WatchRequest{Namespace: "app", StartRevision: start}, func(r *storev1.WatchResponse) error {
			got = append(got, r)
			if len(got) == 1 {
				<-unblock // a consumer that stops reading
			}
			return nil
		})
	}()
	testenv.Eventually(t, 5*time.Second, "the watch to start", func() bool { return s.fsm.Hub().Watchers() == 1 })
	// Writes go on at full speed while the watcher is stuck: apply never
	// waits for it.
	for i := range 50 {
		put(t, s, "app", fmt.Sprint("k", i), "v")
	}
	close(unblock)
	select {
	case err := <-done:
		wantErr(t, err, ErrCompacted)
		if !strings.Contains(err.Error(), "fell behind") {
			t.Errorf("error does not say the watcher fell behind: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the slow watcher was never ended")
	}
	// What it did get has no gap: consecutive writes from the start.
	for i, r := range got {
		if want := fmt.Sprint("k", i); string(r.GetEvents()[0].GetKv().GetKey()) != want {
			t.Fatalf("event %d is %s, want %s: a gap", i, r.GetEvents()[0].GetKv().GetKey(), want)
		}
	}
}

func TestWatchEndsOnCloseAndSendError(t *testing.T) {
	s := newMemStore(t)
	sendErr := errors.New("client went away")
	done := make(chan error, 1)
	start := s.Revision() + 1
	go func() {
		done <- s.Watch(context.Background(), &storev1.WatchRequest{Namespace: "app", StartRevision: start}, func(*storev1.WatchResponse) error { return sendErr })
	}()
	closed := make(chan error, 1)
	go func() {
		closed <- s.Watch(context.Background(), &storev1.WatchRequest{Namespace: "other"}, func(*storev1.WatchResponse) error { return nil })
	}()
	put(t, s, "app", "k", "v")
	wantErr(t, <-done, sendErr)
	s.Close()
	wantErr(t, <-closed, ErrClosed)

	for _, req := range []*storev1.WatchRequest{{Namespace: "Bad"}, {Namespace: "app", StartRevision: -1}} {
		if err := s.Watch(testenv.Context(t, 20*time.Second), req, nil); err == nil {
			t.Errorf("watch %v: no error", req)
		}
	}
}
