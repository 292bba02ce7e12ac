package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/store"
)

// Observation writes: how often one plugin's record may be written, how
// long one write may take, and the waits between failed writes.
const (
	observeInterval = 250 * time.Millisecond
	observeTimeout  = 10 * time.Second
	// A failed write is retried soon: a new raft leader needs the nodes'
	// observations to see what runs (a promoted standby, a failover).
	observeRetryFirst = 250 * time.Millisecond
	observeRetryMax   = 2 * time.Second
	// observeFlushTimeout bounds the removal of this node's records when
	// the agent stops.
	observeFlushTimeout = 2 * time.Second
)

// observer reports what runs on this node as observe/<node>/<plugin>
// records. The supervisor hands it the latest state of a plugin and never
// waits for the store: one goroutine writes, at most one record of a
// plugin per observeInterval, and a write that fails is tried again later
// with the state of then.
type observer struct {
	db   *intent.DB
	node string
	log  hclog.Logger

	mu    sync.Mutex
	slots map[string]*obsSlot
	wake  chan struct{}
}

// obsSlot is one plugin's record: what should be in the store (nil: no
// record) and what was last written.
type obsSlot struct {
	want    *intent.Observation
	wantGen uint64 // counts changes of want
	written []byte // the value last written; nil when the record is absent
	wrote   time.Time
	dirty   bool
	fails   int
	retryAt time.Time
}

func newObserver(st *store.Store, node string, log hclog.Logger) *observer {
	return &observer{db: intent.New(st), node: node, log: log.Named("observe"), slots: map[string]*obsSlot{}, wake: make(chan struct{}, 1)}
}

func (o *observer) slot(plugin string) *obsSlot {
	s, ok := o.slots[plugin]
	if !ok {
		s = &obsSlot{}
		o.slots[plugin] = s
	}
	return s
}

// set records the plugin's latest observation; it does not block.
func (o *observer) set(obs intent.Observation) {
	obs.Node = o.node
	o.mu.Lock()
	s := o.slot(obs.Plugin)
	s.want = &obs
	s.wantGen++
	s.dirty = true
	o.mu.Unlock()
	o.poke()
}

// remove deletes the plugin's record: it no longer runs on this node.
func (o *observer) remove(plugin string) {
	o.mu.Lock()
	s := o.slot(plugin)
	s.want = nil
	s.wantGen++
	s.dirty = true
	o.mu.Unlock()
	o.poke()
}

func (o *observer) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// run writes records until ctx ends; first it removes the records of this
// node whose plugins the supervisor does not know (keep says which it
// does). Then it removes every record it wrote, within
// observeFlushTimeout: the plugins stop with the agent.
func (o *observer) run(ctx context.Context, keep func(plugin string) bool) {
	o.prune(ctx, keep)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		next := o.writeDue(ctx, time.Now())
		if next.IsZero() {
			next = time.Now().Add(time.Hour)
		}
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
		case <-o.wake:
		case <-timer.C:
		}
	}
	o.flush()
}

// prune removes the records of plugins this node no longer runs, left by
// an earlier run of the agent. It retries until the store answers.
func (o *observer) prune(ctx context.Context, keep func(string) bool) {
	wait := observeRetryFirst
	for ctx.Err() == nil {
		obs, refused, err := intent.List[intent.Observation](ctx, o.db, intent.ObservePrefix(o.node))
		if err == nil {
			var stale []string
			for _, ob := range obs {
				stale = append(stale, ob.Value.Plugin)
			}
			for _, r := range refused {
				// A record that fails its checks is replaced or removed too.
				var re *intent.RecordError
				if errors.As(r, &re) {
					stale = append(stale, strings.TrimPrefix(re.Key, intent.ObservePrefix(o.node)))
				}
			}
			o.mu.Lock()
			for _, plugin := range stale {
				if _, known := o.slots[plugin]; known || keep(plugin) {
					continue
				}
				s := o.slot(plugin)
				s.written, s.dirty = []byte("?"), true // delete it
			}
			o.mu.Unlock()
			return
		}
		o.log.Warn("cannot read this node's observations yet; stale ones are removed once the store answers", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, observeRetryMax)
	}
}

// writeDue writes every record that is due, and returns when the next one
// is (zero: none waits).
func (o *observer) writeDue(ctx context.Context, now time.Time) time.Time {
	var next time.Time
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	o.mu.Lock()
	var due []string
	for name, s := range o.slots {
		if !s.dirty {
			continue
		}
		at := s.wrote.Add(observeInterval)
		if s.retryAt.After(at) {
			at = s.retryAt
		}
		if at.After(now) {
			later(at)
			continue
		}
		due = append(due, name)
	}
	o.mu.Unlock()
	for _, name := range due {
		if ctx.Err() != nil {
			return time.Time{}
		}
		if at := o.write(ctx, name); !at.IsZero() {
			later(at)
		}
	}
	return next
}

// write brings one plugin's record to its latest state; after a failure it
// returns when to try again.
func (o *observer) write(ctx context.Context, plugin string) time.Time {
	o.mu.Lock()
	s := o.slots[plugin]
	gen, want, written := s.wantGen, s.want, s.written
	o.mu.Unlock()

	var val []byte
	if want != nil {
		err := want.Validate()
		if err == nil {
			val, err = json.Marshal(want)
		}
		if err != nil {
			// Nothing to retry: the next change of the plugin's state
			// brings another record.
			o.log.Error("this node's observation of a plugin is not valid; not written", "plugin", plugin, "error", err)
			o.mu.Lock()
			if s.wantGen == gen {
				s.dirty = false
			}
			o.mu.Unlock()
			return time.Time{}
		}
	}
	var err error
	switch {
	case want == nil && written == nil, want != nil && bytes.Equal(val, written):
		// The store has it already.
	case want == nil:
		wctx, cancel := context.WithTimeout(ctx, observeTimeout)
		_, err = o.db.Delete(wctx, intent.ObserveKey(o.node, plugin))
		cancel()
	default:
		wctx, cancel := context.WithTimeout(ctx, observeTimeout)
		_, err = o.db.Put(wctx, want)
		cancel()
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		s.fails++
		d := observeRetryFirst << min(s.fails-1, 5)
		d = min(d, observeRetryMax)
		s.retryAt = time.Now().Add(d)
		if s.fails == 1 || s.fails%10 == 0 {
			o.log.Warn("cannot write this node's observation of a plugin; trying again with its latest state", "plugin", plugin, "error", err, "retry_in", d, "failures", s.fails)
		}
		return s.retryAt
	}
	s.fails, s.retryAt = 0, time.Time{}
	s.written, s.wrote = val, time.Now()
	if s.wantGen == gen {
		s.dirty = false
		if want == nil {
			delete(o.slots, plugin)
		}
		return time.Time{}
	}
	return s.wrote.Add(observeInterval)
}

// flush removes every record this node wrote, within observeFlushTimeout.
func (o *observer) flush() {
	ctx, cancel := context.WithTimeout(context.Background(), observeFlushTimeout)
	defer cancel()
	o.mu.Lock()
	var names []string
	for name, s := range o.slots {
		if s.written != nil {
			names = append(names, name)
		}
	}
	o.mu.Unlock()
	for _, name := range names {
		if _, err := o.db.Delete(ctx, intent.ObserveKey(o.node, name)); err != nil {
			o.log.Warn("cannot remove this node's observation as the agent stops; the next start removes it", "plugin", name, "error", err)
			return
		}
	}
}
