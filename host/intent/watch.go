package intent

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// Change is one change seen by Watch.
type Change struct {
	// Key is the changed key; empty when Resync is set.
	Key string
	// Deleted is true when the key was removed (deleted or expired).
	Deleted bool
	// KV is the key as written, for a put; decode it with Decode.
	KV *storev1.KeyValue
	// Revision is the revision of the change.
	Revision int64
	// Resync means changes may have been missed (the store's watch history
	// no longer held them): read everything again.
	Resync bool
}

// watchRetryMax caps the wait between attempts to resume a failed watch.
const watchRetryMax = 5 * time.Second

// Watch calls fn, in order, with each change of a key under one of prefixes
// from revision from on (0: from now), until ctx ends; then it returns
// ctx's error. A watch that fails (no leader yet, a restart of the store's
// watch) is resumed where it stopped, and the failure logged; when the
// store no longer holds the changes since then, fn gets a Change with
// Resync set. fn runs on Watch's goroutine and must not block for long.
func (db *DB) Watch(ctx context.Context, from int64, prefixes []string, log hclog.Logger, fn func(Change)) error {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	wanted := func(key string) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(key, p) {
				return true
			}
		}
		return false
	}
	prefix := commonPrefix(prefixes)
	if from == 0 {
		from = db.st.Revision() + 1
	}
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := db.st.Watch(ctx, &storev1.WatchRequest{Namespace: store.SystemNamespace, Prefix: []byte(prefix), StartRevision: from},
			func(resp *storev1.WatchResponse) error {
				wait = 100 * time.Millisecond
				for _, ev := range resp.GetEvents() {
					key := string(ev.GetKv().GetKey())
					if !wanted(key) {
						continue
					}
					c := Change{Key: key, Revision: resp.GetRevision(), Deleted: ev.GetType() != storev1.EventType_EVENT_TYPE_PUT}
					if !c.Deleted {
						c.KV = ev.GetKv()
					}
					fn(c)
				}
				from = resp.GetRevision() + 1
				return nil
			})
		if ctx.Err() != nil {
			break
		}
		if errors.Is(err, store.ErrCompacted) {
			from = db.st.Revision() + 1
			fn(Change{Resync: true, Revision: from - 1})
			continue
		}
		log.Warn("watch of _sys records ended; resuming", "prefixes", prefixes, "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, watchRetryMax)
	}
	return ctx.Err()
}

// commonPrefix is the longest prefix of every string in ps.
func commonPrefix(ps []string) string {
	if len(ps) == 0 {
		return ""
	}
	p := ps[0]
	for _, s := range ps[1:] {
		for !strings.HasPrefix(s, p) {
			p = p[:len(p)-1]
		}
	}
	return p
}
