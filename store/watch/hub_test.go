package watch

import (
	"context"
	"errors"
	"strings"
	"testing"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

func ev(ns, key string, value int) Event {
	return Event{Namespace: ns, Event: &storev1.Event{Type: storev1.EventType_EVENT_TYPE_PUT, Kv: &storev1.KeyValue{Key: []byte(key), Value: make([]byte, value)}}}
}

// collect runs a watch until it has n responses or ends.
func collect(h *Hub, ns, prefix string, start int64, n int) ([]*storev1.WatchResponse, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got []*storev1.WatchResponse
	err := h.Watch(ctx, ns, []byte(prefix), start, func(r *storev1.WatchResponse) error {
		got = append(got, r)
		if len(got) == n {
			cancel()
		}
		return nil
	})
	return got, err
}

func TestHubFiltersAndOrders(t *testing.T) {
	h := NewHub(100, 1<<20)
	h.Publish(3, []Event{ev("a", "x/1", 1), ev("b", "x/1", 1)})
	h.Publish(5, nil) // a revision without events is not kept
	h.Publish(7, []Event{ev("a", "y/1", 1)})
	h.Publish(9, []Event{ev("a", "x/2", 1), ev("a", "y/2", 1), ev("a", "x/3", 1)})
	got, err := collect(h, "a", "x/", 1, 2)
	if !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].GetRevision() != 3 || got[1].GetRevision() != 9 || len(got[1].GetEvents()) != 2 {
		t.Fatalf("got %v", got)
	}
	if got, _ := collect(h, "a", "", 8, 1); len(got) != 1 || got[0].GetRevision() != 9 {
		t.Fatalf("start between revisions: %v", got)
	}
}

func TestHubBounds(t *testing.T) {
	h := NewHub(3, 1<<20)
	for rev := int64(1); rev <= 5; rev++ {
		h.Publish(rev, []Event{ev("a", "k", 1)})
	}
	if h.Compacted() != 2 {
		t.Fatalf("compacted %d after 5 revisions with room for 3", h.Compacted())
	}
	if _, err := collect(h, "a", "", 2, 1); !errors.Is(err, ErrCompacted) || !strings.Contains(err.Error(), "older than the retained history") {
		t.Fatalf("start 2: %v", err)
	}

	// The byte bound trims too, keeping at least the newest revision.
	h = NewHub(100, 1000)
	h.Publish(1, []Event{ev("a", "k", 600)})
	h.Publish(2, []Event{ev("a", "k", 600)})
	if h.Compacted() != 1 {
		t.Fatalf("compacted %d, want the first 600-byte revision dropped", h.Compacted())
	}
	h.Publish(3, []Event{ev("a", "k", 5000)})
	if got, _ := collect(h, "a", "", 3, 1); len(got) != 1 {
		t.Fatal("an oversized newest revision must still be served")
	}

	h.Reset(10)
	if _, err := collect(h, "a", "", 4, 1); !errors.Is(err, ErrCompacted) || !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("after reset: %v", err)
	}
	h.Close()
	if _, err := collect(h, "a", "", 11, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}
