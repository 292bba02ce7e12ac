package fsm

import (
	"github.com/tidwall/buntdb"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/watch"
)

// DueExpiries lists up to max keys whose TTL ran out at nowMs, oldest first,
// each with the mod revision its TTL belongs to. The leader proposes them in
// one OpExpire.
func (f *FSM) DueExpiries(nowMs int64, max int) ([]ExpireKey, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	var due []ExpireKey
	err := f.db.View(func(tx *buntdb.Tx) error {
		var ierr error
		err := tx.AscendRange("", string(expiryTag), expiryUpperBound(nowMs), func(k, _ string) bool {
			_, ns, key, ok := splitExpiryKey(k)
			if !ok {
				return true
			}
			v, err := tx.Get(dataKey(ns, []byte(key)))
			if err != nil {
				return true
			}
			rec, err := decodeRecord(v)
			if err != nil {
				ierr = err
				return false
			}
			due = append(due, ExpireKey{Namespace: ns, Key: []byte(key), ModRevision: rec.modRev})
			return len(due) < max
		})
		if err != nil {
			return err
		}
		return ierr
	})
	return due, err
}

// applyExpire removes the listed keys that still hold the mod revision their
// TTL belongs to; a key written since keeps living. The caller holds mu.
func (f *FSM) applyExpire(index int64, keys []ExpireKey) (int64, []watch.Event, error) {
	var cs *changeSet
	var n int64
	err := f.db.Update(func(tx *buntdb.Tx) error {
		cs = newChangeSet(tx, index, 0)
		n = 0
		for _, e := range keys {
			rec, exists, err := cs.get(e.Namespace, e.Key)
			if err != nil {
				return err
			}
			if !exists || rec.modRev != e.ModRevision || rec.expiresAt == 0 {
				continue
			}
			if err := cs.remove(f, e.Namespace, string(e.Key), rec, storev1.EventType_EVENT_TYPE_EXPIRE); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	cs.commit(f)
	return n, cs.events, nil
}
