// Package watch keeps the store's recent change history and streams it to
// watchers in revision order, with no gaps and no duplicates.
package watch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

var (
	// ErrCompacted means a revision a watcher needs is no longer in the
	// history: it started too far back, fell behind, or the store was
	// restored. The watcher must list again and watch from there.
	ErrCompacted = errors.New("store: revision compacted")
	// ErrClosed means the hub was closed.
	ErrClosed = errors.New("store: closed")
)

// Event is one change to one key of a namespace.
type Event struct {
	Namespace string
	Event     *storev1.Event
}

// entry is the history of one revision.
type entry struct {
	rev    int64
	events []Event
	size   int
}

// maxScan bounds how many revisions a watcher examines per lock hold.
const maxScan = 256

// Hub is a bounded history of revisions with their events, and the point
// where watchers wait for new ones.
//
// The state machine calls Publish and Reset, in revision order, from its
// apply goroutine; they never block on a watcher. Each watcher reads the
// history at its own pace through a cursor: the history is its buffer. A
// watcher whose cursor falls off the end of the history is ended with an
// error wrapping ErrCompacted, never left with a silent gap.
type Hub struct {
	maxRevs  int
	maxBytes int

	mu         sync.Mutex
	entries    []entry // entries[head:] is the history, oldest first
	head       int
	bytes      int
	compacted  int64 // every revision <= compacted is gone from the history
	restoredAt int64 // revision of the last Reset
	changed    chan struct{}
	closed     bool
	watchers   int
}

// NewHub returns a hub keeping at most maxRevs revisions that hold events,
// and at most maxBytes of keys and values.
func NewHub(maxRevs, maxBytes int) *Hub {
	if maxRevs < 1 {
		maxRevs = 1
	}
	return &Hub{maxRevs: maxRevs, maxBytes: maxBytes, changed: make(chan struct{})}
}

// Publish records the events of revision rev, which must be greater than
// every revision published before.
func (h *Hub) Publish(rev int64, events []Event) {
	if len(events) == 0 {
		return
	}
	size := 0
	for _, e := range events {
		size += 64 + len(e.Namespace) + len(e.Event.GetKv().GetKey()) + len(e.Event.GetKv().GetValue())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entries = append(h.entries, entry{rev: rev, events: events, size: size})
	h.bytes += size
	for len(h.entries)-h.head > h.maxRevs || (h.bytes > h.maxBytes && len(h.entries)-h.head > 1) {
		old := &h.entries[h.head]
		h.compacted = old.rev
		h.bytes -= old.size
		*old = entry{}
		h.head++
	}
	if h.head > 1024 && h.head*2 > len(h.entries) {
		h.entries = append([]entry(nil), h.entries[h.head:]...)
		h.head = 0
	}
	h.broadcast()
}

// Reset empties the history: the state was replaced at revision rev by a
// snapshot or a backup, so no watcher can continue across it.
func (h *Hub) Reset(rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entries, h.head, h.bytes = nil, 0, 0
	h.compacted, h.restoredAt = rev, rev
	h.broadcast()
}

// Close ends every watcher with ErrClosed.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	h.broadcast()
}

// Compacted is the newest revision no longer in the history.
func (h *Hub) Compacted() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.compacted
}

// Watchers counts the watches running.
func (h *Hub) Watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.watchers
}

func (h *Hub) broadcast() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// Watch sends, in order, one response per revision >= start holding events
// for keys of ns that start with prefix, until ctx ends, send fails or the
// watcher can no longer be served without a gap. send must not modify what
// it is given: the history shares it with other watchers.
func (h *Hub) Watch(ctx context.Context, ns string, prefix []byte, start int64, send func(*storev1.WatchResponse) error) error {
	h.mu.Lock()
	h.watchers++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.watchers--
		h.mu.Unlock()
	}()
	next := start
	first := true
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return ErrClosed
		}
		if next <= h.compacted {
			err := h.compactedError(next, first)
			h.mu.Unlock()
			return err
		}
		first = false
		live := h.entries[h.head:]
		i := sort.Search(len(live), func(i int) bool { return live[i].rev >= next })
		var out []*storev1.WatchResponse
		for n := 0; i < len(live) && n < maxScan; i, n = i+1, n+1 {
			e := &live[i]
			next = e.rev + 1
			var evs []*storev1.Event
			for _, ev := range e.events {
				if ev.Namespace == ns && bytes.HasPrefix(ev.Event.GetKv().GetKey(), prefix) {
					evs = append(evs, ev.Event)
				}
			}
			if len(evs) > 0 {
				out = append(out, &storev1.WatchResponse{Events: evs, Revision: e.rev})
			}
		}
		caughtUp := i == len(live)
		changed := h.changed
		h.mu.Unlock()

		for _, r := range out {
			if err := send(r); err != nil {
				return err
			}
		}
		if len(out) == 0 && caughtUp {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-changed:
			}
		} else if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// compactedError explains why revision next cannot be served.
func (h *Hub) compactedError(next int64, atStart bool) error {
	switch {
	case h.restoredAt > 0 && next <= h.restoredAt && h.compacted == h.restoredAt:
		return fmt.Errorf("%w: the store was replaced by a snapshot or backup at revision %d; list again and watch from the list's revision + 1", ErrCompacted, h.restoredAt)
	case atStart:
		return fmt.Errorf("%w: watch start revision %d is older than the retained history (revisions after %d are kept); list again and watch from the list's revision + 1", ErrCompacted, next, h.compacted)
	default:
		return fmt.Errorf("%w: watcher fell behind: revision %d left the history (it keeps %d revisions) before it was sent; list again and watch from the list's revision + 1", ErrCompacted, next, h.maxRevs)
	}
}
