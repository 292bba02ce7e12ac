package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/tidwall/buntdb"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/watch"
)

// applyRestoreNamespace replaces r.Namespace with the dump kept under
// r.Source in SystemNamespace, at index. The caller holds mu.
//
// Keys the dump holds with the value and expiry they have now are left as
// they are; the others are written (at index, as a put writes them) or
// deleted, each with its watch event, all at one revision. No quota is
// applied: the data fit in the namespace when it was captured, and a
// restore that puts it back must not be refused for it.
func (f *FSM) applyRestoreNamespace(index int64, cmd *Command) (int64, []watch.Event, error) {
	r := cmd.Restore
	var keys int64
	var cs *changeSet
	err := f.db.Update(func(tx *buntdb.Tx) error {
		data, err := readChunks(tx, r.Source)
		if err != nil {
			return err
		}
		if sum := sha256.Sum256(data); !bytes.Equal(sum[:], r.SHA256) {
			if len(data) == 0 {
				return fmt.Errorf("%w: namespace snapshot: no chunks under %s/%q", ErrCorrupt, SingletonNamespace, r.Source)
			}
			return fmt.Errorf("%w: namespace snapshot under %s/%q: SHA-256 %s, expected %s", ErrCorrupt,
				SingletonNamespace, r.Source, hex.EncodeToString(sum[:]), hex.EncodeToString(r.SHA256))
		}
		ns, entries, err := DecodeDump(data)
		if err != nil {
			return err
		}
		if ns != r.Namespace {
			return fmt.Errorf("%w: the snapshot under %s/%q is of namespace %q, not %q", ErrCorrupt,
				SingletonNamespace, r.Source, ns, r.Namespace)
		}
		cs = newChangeSet(tx, index, cmd.NowMs)
		old, err := namespaceRecords(tx, r.Namespace)
		if err != nil {
			return err
		}
		// Both lists are in key order: merge them.
		i := 0
		for _, e := range entries {
			for i < len(old) && old[i].key < string(e.Key) {
				if err := cs.remove(f, r.Namespace, old[i].key, old[i].rec, storev1.EventType_EVENT_TYPE_DELETE); err != nil {
					return err
				}
				i++
			}
			if i < len(old) && old[i].key == string(e.Key) {
				same := old[i].rec.value == string(e.Value) && old[i].rec.expiresAt == e.ExpiresAtMs
				i++
				if same {
					continue
				}
			}
			if _, err := cs.putAt(f, r.Namespace, e.Key, e.Value, e.ExpiresAtMs); err != nil {
				return err
			}
		}
		for ; i < len(old); i++ {
			if err := cs.remove(f, r.Namespace, old[i].key, old[i].rec, storev1.EventType_EVENT_TYPE_DELETE); err != nil {
				return err
			}
		}
		keys = int64(len(entries))
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	cs.commit(f)
	return keys, cs.events, nil
}

// readChunks joins the values of the keys of SystemNamespace under prefix,
// in key order.
func readChunks(tx *buntdb.Tx, prefix []byte) ([]byte, error) {
	start := dataKey(SingletonNamespace, prefix)
	_, end := namespaceBounds(SingletonNamespace)
	if pe := PrefixEnd(prefix); pe != nil {
		end = dataKey(SingletonNamespace, pe)
	}
	var data []byte
	var ierr error
	err := tx.AscendRange("", start, end, func(k, v string) bool {
		rec, err := decodeRecord(v)
		if err != nil {
			ierr = fmt.Errorf("%w: key %q", errBadRecord, k)
			return false
		}
		data = append(data, rec.value...)
		return true
	})
	if err == nil {
		err = ierr
	}
	return data, err
}

type keyRecord struct {
	key string
	rec record
}

// namespaceRecords reads every key of ns, in order.
func namespaceRecords(tx *buntdb.Tx, ns string) ([]keyRecord, error) {
	start, end := namespaceBounds(ns)
	var out []keyRecord
	var ierr error
	err := tx.AscendRange("", start, end, func(k, v string) bool {
		_, key, ok := splitDataKey(k)
		rec, err := decodeRecord(v)
		if !ok || err != nil {
			ierr = fmt.Errorf("%w: key %q", errBadRecord, k)
			return false
		}
		out = append(out, keyRecord{key, rec})
		return true
	})
	if err == nil {
		err = ierr
	}
	return out, err
}
