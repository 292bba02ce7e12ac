package store

import (
	"context"
	"sync"
)

// leadTasks are the functions run for each term this node leads (OnLead).
type leadTasks struct {
	mu   sync.Mutex
	fns  []func(context.Context)
	term *term // the term under way, nil when this node does not lead
}

// term is one term's run of the leader tasks.
type term struct {
	ctx context.Context
	wg  sync.WaitGroup
}

func (t *term) start(fn func(context.Context)) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		fn(t.ctx)
	}()
}

// OnLead registers fn to run on its own goroutine for every term this node
// leads, from the moment the term is established (this node serves
// linearizable reads and writes) until leadership is lost or the store
// closes: then fn's context ends and the store waits for fn to return
// before it runs the next term's. Registered while this node leads, fn
// starts at once for the current term. fn must return soon after its
// context ends.
func (s *Store) OnLead(fn func(ctx context.Context)) {
	s.tasks.mu.Lock()
	defer s.tasks.mu.Unlock()
	s.tasks.fns = append(s.tasks.fns, fn)
	if t := s.tasks.term; t != nil {
		t.start(fn)
	}
}

// beginTerm starts the registered tasks for a term that ends with ctx, and
// returns the function that waits for them once ctx has ended.
func (s *Store) beginTerm(ctx context.Context) (end func()) {
	t := &term{ctx: ctx}
	s.tasks.mu.Lock()
	s.tasks.term = t
	for _, fn := range s.tasks.fns {
		t.start(fn)
	}
	s.tasks.mu.Unlock()
	return func() {
		s.tasks.mu.Lock()
		s.tasks.term = nil
		s.tasks.mu.Unlock()
		t.wg.Wait()
	}
}
