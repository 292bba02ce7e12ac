package store

import (
	"context"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// Watch calls send with the changes to keys of the namespace that start with
// the prefix, one response per revision, in revision order, with no gaps and
// no duplicates, from start_revision (0: from now) until ctx ends or send
// fails. It serves from this node's history of the last Config.WatchHistory
// revisions with changes: a start revision older than that, or a watcher that
// falls that far behind, ends with an error wrapping ErrCompacted. send must
// not modify the responses: watchers share them.
func (s *Store) Watch(ctx context.Context, req *storev1.WatchRequest, send func(*storev1.WatchResponse) error) error {
	return s.eng.Watch(ctx, req, send)
}
