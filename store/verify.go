package store

import (
	"context"
	"sync"
	"sync/atomic"
)

// verifier coalesces leadership checks: a caller joins the next round to
// start, and one raft VerifyLeader (one round of heartbeats) answers every
// caller of that round. A round never serves a caller that arrived after it
// began, so each answer is about a moment after its caller asked.
type verifier struct {
	check func() error // raft's VerifyLeader
	wg    *sync.WaitGroup

	waiting atomic.Int64 // callers in verify, for tests

	mu      sync.Mutex
	running bool
	stopped bool
	next    *round
}

// round is one leadership check and the callers waiting on it.
type round struct {
	done chan struct{}
	err  error
}

func newVerifier(check func() error, wg *sync.WaitGroup) *verifier {
	return &verifier{check: check, wg: wg}
}

// verify returns nil once a leadership check that started after the call
// has confirmed this node is still the leader.
func (v *verifier) verify(ctx context.Context) error {
	v.waiting.Add(1)
	defer v.waiting.Add(-1)
	v.mu.Lock()
	if v.stopped {
		v.mu.Unlock()
		return ErrClosed
	}
	if v.next == nil {
		v.next = &round{done: make(chan struct{})}
	}
	r := v.next
	if !v.running {
		v.running = true
		v.next = nil
		v.wg.Add(1)
		go v.run(r)
	}
	v.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run performs rounds until no caller waits for another. Each round ends
// when raft answers, which it always does: on success, on losing
// leadership, or on shutdown.
func (v *verifier) run(r *round) {
	defer v.wg.Done()
	for r != nil {
		r.err = v.check()
		close(r.done)
		v.mu.Lock()
		r, v.next = v.next, nil
		if r == nil {
			v.running = false
		}
		v.mu.Unlock()
	}
}

// stop refuses new rounds; rounds under way finish on their own.
func (v *verifier) stop() {
	v.mu.Lock()
	v.stopped = true
	v.mu.Unlock()
}
