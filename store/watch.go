package store

import (
	"context"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/local"
)

// Watch calls send with the changes to keys of the namespace that start with
// the prefix, one response per revision, in revision order, with no gaps and
// no duplicates, from start_revision (0: from now) until ctx ends or send
// fails. It serves from this node's history of the last Config.WatchHistory
// revisions with changes: a start revision older than that, or a watcher that
// falls that far behind, ends with an error wrapping ErrCompacted. send must
// not modify the responses: watchers share them.
//
// A watch from a client over gRPC (local.ClientOf) that would take the
// client past Config.MaxWatchesPerClient, or the node past
// Config.MaxWatches (clients other than plugins past MaxWatches less
// Config.PluginWatchReserve), fails at once with an error wrapping
// ErrTooManyWatches. The agent's own watches, made in process, are not
// counted.
func (s *Store) Watch(ctx context.Context, req *storev1.WatchRequest, send func(*storev1.WatchResponse) error) error {
	if client, remote := local.ClientOf(ctx); remote {
		release, err := s.watches.acquire(client, local.IsPlugin(ctx))
		if err != nil {
			return err
		}
		defer release()
	}
	return s.eng.Watch(ctx, req, send)
}

// MaxRequestBytes is the largest request message the store's API takes
// (see Config.MaxRequestBytes).
func (s *Store) MaxRequestBytes() int { return s.cfg.MaxRequestBytes() }
