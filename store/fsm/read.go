package fsm

import (
	"errors"

	"github.com/tidwall/buntdb"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// Get reads key in ns. It returns nil when the key does not exist, and the
// revision the read saw.
func (f *FSM) Get(ns string, key []byte) (*storev1.KeyValue, int64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, 0, ErrClosed
	}
	var kv *storev1.KeyValue
	err := f.db.View(func(tx *buntdb.Tx) error {
		v, err := tx.Get(dataKey(ns, key))
		if errors.Is(err, buntdb.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		rec, err := decodeRecord(v)
		if err != nil {
			return err
		}
		kv = rec.keyValue(string(key), true)
		return nil
	})
	return kv, f.applied, err
}

// ListOptions selects the keys of a List.
type ListOptions struct {
	Namespace string
	// Start is the first key (inclusive); End the end (exclusive), nil for
	// the end of the namespace.
	Start, End []byte
	// After, when not nil, resumes strictly after this key.
	After []byte
	// Limit caps the keys returned.
	Limit int
	// MaxBytes ends a page once its keys and values reach this size; a page
	// always holds at least one key.
	MaxBytes int
	KeysOnly bool
}

// List reads keys in order. more is true when keys remain after the page.
func (f *FSM) List(o ListOptions) (kvs []*storev1.KeyValue, more bool, rev int64, err error) {
	start := dataKey(o.Namespace, o.Start)
	if o.After != nil {
		if a := dataKey(o.Namespace, o.After) + "\x00"; a > start {
			start = a
		}
	}
	_, end := namespaceBounds(o.Namespace)
	if o.End != nil {
		end = dataKey(o.Namespace, o.End)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, false, 0, ErrClosed
	}
	if start >= end {
		return nil, false, f.applied, nil
	}
	err = f.db.View(func(tx *buntdb.Tx) error {
		var ierr error
		bytes := 0
		err := tx.AscendRange("", start, end, func(k, v string) bool {
			if len(kvs) >= o.Limit || (o.MaxBytes > 0 && bytes >= o.MaxBytes) {
				more = true
				return false
			}
			_, key, ok := splitDataKey(k)
			rec, err := decodeRecord(v)
			if !ok || err != nil {
				ierr = errBadRecord
				return false
			}
			bytes += len(key)
			if !o.KeysOnly {
				bytes += len(rec.value)
			}
			kvs = append(kvs, rec.keyValue(key, !o.KeysOnly))
			return true
		})
		if err != nil {
			return err
		}
		return ierr
	})
	return kvs, more, f.applied, err
}

// Usage is what ns holds now.
func (f *FSM) Usage(ns string) Usage {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.usage[ns]
}

// Namespaces returns what each namespace that holds keys holds now.
func (f *FSM) Namespaces() map[string]Usage {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]Usage, len(f.usage))
	for ns, u := range f.usage {
		if u.Keys > 0 {
			out[ns] = u
		}
	}
	return out
}

// Capture takes a consistent copy of the whole state at the current
// revision. It copies references, not data: BuntDB strings are immutable.
func (f *FSM) Capture() (*Snapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	snap := &Snapshot{Revision: f.applied}
	err := f.db.View(func(tx *buntdb.Tx) error {
		n, err := tx.Len()
		if err != nil {
			return err
		}
		snap.Items = make([]Item, 0, n)
		return tx.AscendRange("", string(dataTag), string(dataTag+1), func(k, v string) bool {
			snap.Items = append(snap.Items, Item{Key: k, Value: v})
			return true
		})
	})
	if err != nil {
		return nil, err
	}
	return snap, nil
}
