package store

import (
	"fmt"
	"sync"

	"github.com/plughost/plughost/store/local"
)

// ErrTooManyWatches means a watch would take its client, or the node, past
// Config.MaxWatchesPerClient or Config.MaxWatches; it was not started.
var ErrTooManyWatches = local.ErrTooManyWatches

// ErrTxnTooLarge means a transaction is larger than Config.MaxTxnBytes;
// nothing was applied.
var ErrTxnTooLarge = local.ErrTxnTooLarge

// watchLimiter counts the watches clients have open on a node, in all and
// by client (local.ClientOf).
type watchLimiter struct {
	max, perClient int // 0: unlimited

	mu       sync.Mutex
	open     int
	byClient map[string]int
}

func newWatchLimiter(maxWatches, perClient int) watchLimiter {
	return watchLimiter{max: maxWatches, perClient: perClient, byClient: make(map[string]int)}
}

// acquire counts a watch of client in, or says which limit it would cross.
// Call release when the watch ends.
func (l *watchLimiter) acquire(client string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.max > 0 && l.open >= l.max:
		return nil, &local.LimitError{Err: ErrTooManyWatches, Limit: "max_watches", Msg: fmt.Sprintf(
			"%v: the node has %d watches open, the most max_watches allows (end some, or raise max_watches in the agent config)", ErrTooManyWatches, l.open)}
	case l.perClient > 0 && l.byClient[client] >= l.perClient:
		return nil, &local.LimitError{Err: ErrTooManyWatches, Limit: "max_watches_per_client", Msg: fmt.Sprintf(
			"%v: this client (%s) has %d watches open, the most max_watches_per_client allows (watch a wider prefix, end some, or raise max_watches_per_client in the agent config)",
			ErrTooManyWatches, client, l.byClient[client])}
	}
	l.open++
	l.byClient[client]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.open--
			if l.byClient[client]--; l.byClient[client] <= 0 {
				delete(l.byClient, client)
			}
		})
	}, nil
}
