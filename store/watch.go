package store

import (
	"context"
	"errors"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/watch"
)

// Watch calls send with the changes to keys of the namespace that start with
// the prefix, one response per revision, in revision order, with no gaps and
// no duplicates, from start_revision (0: from now) until ctx ends or send
// fails. It serves from this node's history of the last Config.WatchHistory
// revisions with changes: a start revision older than that, or a watcher that
// falls that far behind, ends with an error wrapping ErrCompacted. send must
// not modify the responses: watchers share them.
func (s *Store) Watch(ctx context.Context, req *storev1.WatchRequest, send func(*storev1.WatchResponse) error) error {
	ns := req.GetNamespace()
	if err := validNamespace(ns); err != nil {
		return err
	}
	if len(req.GetPrefix()) > MaxKeyBytes {
		return invalid("watch: prefix is %d bytes > max %d bytes", len(req.GetPrefix()), MaxKeyBytes)
	}
	start := req.GetStartRevision()
	switch {
	case start < 0:
		return invalid("watch: negative start_revision %d", start)
	case start == 0:
		start = s.fsm.Applied() + 1
	}
	if s.closed.Load() {
		return ErrClosed
	}
	err := s.fsm.Hub().Watch(ctx, ns, req.GetPrefix(), start, send)
	if errors.Is(err, watch.ErrClosed) {
		return ErrClosed
	}
	return err
}
