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
// by client (local.ClientOf). The last reserve of max are kept for
// plugins' own watches (local.IsPlugin): other clients together stop
// short of them.
type watchLimiter struct {
	max, perClient, reserve int // 0: unlimited, none

	mu        sync.Mutex
	open      int
	nonPlugin int // open by clients other than plugins
	byClient  map[string]int
}

func newWatchLimiter(maxWatches, perClient, reserve int) watchLimiter {
	if reserve < 0 {
		reserve = maxWatches / 8
	}
	if maxWatches > 0 && reserve >= maxWatches {
		reserve = maxWatches - 1 // Validate refuses more; in-process callers get one watch at least
	}
	return watchLimiter{max: maxWatches, perClient: perClient, reserve: reserve, byClient: make(map[string]int)}
}

// acquire counts a watch of client in, or says which limit it would cross;
// plugin is set for a plugin's own watch, which may use the reserve. Call
// release when the watch ends.
func (l *watchLimiter) acquire(client string, plugin bool) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.max > 0 && l.open >= l.max:
		return nil, &local.LimitError{Err: ErrTooManyWatches, Limit: "max_watches", Msg: fmt.Sprintf(
			"%v: the node has %d watches open, the most max_watches allows (end some, or raise max_watches in the agent config)", ErrTooManyWatches, l.open)}
	case !plugin && l.max > 0 && l.reserve > 0 && l.nonPlugin >= l.max-l.reserve:
		return nil, &local.LimitError{Err: ErrTooManyWatches, Limit: "max_watches", Msg: fmt.Sprintf(
			"%v: clients have %d watches open on the node, the most max_watches (%d) allows besides the %d of plugin_watch_reserve kept for plugins (end some, or raise max_watches in the agent config)",
			ErrTooManyWatches, l.nonPlugin, l.max, l.reserve)}
	case l.perClient > 0 && l.byClient[client] >= l.perClient:
		return nil, &local.LimitError{Err: ErrTooManyWatches, Limit: "max_watches_per_client", Msg: fmt.Sprintf(
			"%v: this client (%s) has %d watches open, the most max_watches_per_client allows, on all its connections together (watch a wider prefix, end some, or raise max_watches_per_client in the agent config)",
			ErrTooManyWatches, client, l.byClient[client])}
	}
	l.open++
	if !plugin {
		l.nonPlugin++
	}
	l.byClient[client]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.open--
			if !plugin {
				l.nonPlugin--
			}
			if l.byClient[client]--; l.byClient[client] <= 0 {
				delete(l.byClient, client)
			}
		})
	}, nil
}
