// Package leader runs the cluster's leader-only tasks (the placement
// controller, later the rollout controller) on the node that is the raft
// leader: started when a term is established, cancelled and waited for when
// it ends. A task resumes from the store alone; it keeps nothing between
// terms.
package leader

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Source runs a function for each term this node leads; *store.Store is one
// (store.Store.OnLead).
type Source interface {
	OnLead(fn func(ctx context.Context))
}

// Task is one leader-only task. Run works until ctx ends, then returns
// ctx's error; an error before that is logged and Run is called again after
// a pause, for as long as the term lasts.
type Task interface {
	Run(ctx context.Context) error
}

// TaskFunc is a function as a Task.
type TaskFunc func(ctx context.Context) error

// Run calls f.
func (f TaskFunc) Run(ctx context.Context) error { return f(ctx) }

// Retry bounds the pause before a failed task runs again.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

// Run registers task with src under name: it runs for every term this node
// leads.
func Run(src Source, name string, task Task, log hclog.Logger) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log = log.With("task", name)
	src.OnLead(func(ctx context.Context) {
		log.Info("this node leads; leader task starting")
		defer log.Info("leadership ended; leader task stopped")
		wait := retryMin
		for {
			start := time.Now()
			err := task.Run(ctx)
			if ctx.Err() != nil {
				return
			}
			if time.Since(start) > retryMax {
				wait = retryMin
			}
			log.Warn("leader task failed; running it again", "error", err, "retry_in", wait)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, retryMax)
		}
	})
}
