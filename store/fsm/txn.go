package fsm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tidwall/buntdb"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/watch"
)

// changeSet is one command's view of the database while it applies: the
// BuntDB transaction, the namespace usage it moves, and the events it emits.
type changeSet struct {
	tx     *buntdb.Tx
	index  int64
	nowMs  int64
	usage  map[string]Usage
	events []watch.Event
}

func newChangeSet(tx *buntdb.Tx, index, nowMs int64) *changeSet {
	return &changeSet{tx: tx, index: index, nowMs: nowMs, usage: make(map[string]Usage)}
}

// usageOf is the usage of ns as changed so far by this change set.
func (c *changeSet) usageOf(f *FSM, ns string) Usage {
	if u, ok := c.usage[ns]; ok {
		return u
	}
	return f.usage[ns]
}

// commit folds the change set's usage into the FSM. The caller holds mu.
func (c *changeSet) commit(f *FSM) {
	for ns, u := range c.usage {
		if u == (Usage{}) {
			delete(f.usage, ns)
		} else {
			f.usage[ns] = u
		}
	}
}

// get reads the record of key in ns, as changed so far.
func (c *changeSet) get(ns string, key []byte) (record, bool, error) {
	v, err := c.tx.Get(dataKey(ns, key))
	if errors.Is(err, buntdb.ErrNotFound) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, err
	}
	r, err := decodeRecord(v)
	return r, err == nil, err
}

// put writes key in ns, with a TTL when ttlMs > 0.
func (c *changeSet) put(f *FSM, ns string, key, value []byte, ttlMs int64) (*storev1.KeyValue, error) {
	var expiresAt int64
	if ttlMs > 0 {
		expiresAt = c.nowMs + ttlMs
	}
	return c.putAt(f, ns, key, value, expiresAt)
}

// putAt writes key in ns, expiring at expiresAt (unix ms) unless it is 0.
func (c *changeSet) putAt(f *FSM, ns string, key, value []byte, expiresAt int64) (*storev1.KeyValue, error) {
	old, exists, err := c.get(ns, key)
	if err != nil {
		return nil, err
	}
	u := c.usageOf(f, ns)
	rec := record{createRev: c.index, modRev: c.index, version: 1, value: string(value)}
	if exists {
		rec.createRev, rec.version = old.createRev, old.version+1
		u.Bytes += int64(len(value)) - int64(len(old.value))
		if old.expiresAt != 0 {
			if _, err := c.tx.Delete(expiryKey(old.expiresAt, ns, string(key))); err != nil && !errors.Is(err, buntdb.ErrNotFound) {
				return nil, err
			}
		}
	} else {
		u.Keys++
		u.Bytes += size(string(key), rec.value)
	}
	if expiresAt != 0 {
		rec.expiresAt = expiresAt
		if _, _, err := c.tx.Set(expiryKey(rec.expiresAt, ns, string(key)), "", nil); err != nil {
			return nil, err
		}
	}
	if _, _, err := c.tx.Set(dataKey(ns, key), rec.encode(), nil); err != nil {
		return nil, err
	}
	c.usage[ns] = u
	// The event and the result share one KeyValue: both are only read
	// (marshalled to watchers and to the caller) from here on.
	kv := rec.keyValue(string(key), true)
	c.events = append(c.events, watch.Event{Namespace: ns, Event: &storev1.Event{
		Type: storev1.EventType_EVENT_TYPE_PUT,
		Kv:   kv,
	}})
	return kv, nil
}

// remove deletes key in ns, which holds rec, and emits an event of typ.
func (c *changeSet) remove(f *FSM, ns string, key string, rec record, typ storev1.EventType) error {
	if _, err := c.tx.Delete(dataKey(ns, []byte(key))); err != nil {
		return err
	}
	if rec.expiresAt != 0 {
		if _, err := c.tx.Delete(expiryKey(rec.expiresAt, ns, key)); err != nil && !errors.Is(err, buntdb.ErrNotFound) {
			return err
		}
	}
	u := c.usageOf(f, ns)
	u.Keys--
	u.Bytes -= size(key, rec.value)
	c.usage[ns] = u
	c.events = append(c.events, watch.Event{Namespace: ns, Event: &storev1.Event{
		Type: typ,
		Kv:   rec.keyValue(key, false),
	}})
	return nil
}

// deletePrefix removes every key of ns starting with prefix.
func (c *changeSet) deletePrefix(f *FSM, ns string, prefix []byte) (int64, error) {
	start := dataKey(ns, prefix)
	_, end := namespaceBounds(ns)
	if pe := PrefixEnd(prefix); pe != nil {
		end = dataKey(ns, pe)
	}
	type victim struct {
		key string
		rec record
	}
	var victims []victim
	var ierr error
	err := c.tx.AscendRange("", start, end, func(k, v string) bool {
		_, key, ok := splitDataKey(k)
		rec, err := decodeRecord(v)
		if !ok || err != nil {
			ierr = fmt.Errorf("%w: key %q", errBadRecord, k)
			return false
		}
		victims = append(victims, victim{key, rec})
		return true
	})
	if err == nil {
		err = ierr
	}
	if err != nil {
		return 0, err
	}
	for _, v := range victims {
		if err := c.remove(f, ns, v.key, v.rec, storev1.EventType_EVENT_TYPE_DELETE); err != nil {
			return 0, err
		}
	}
	return int64(len(victims)), nil
}

// applyTxn runs a transaction at index. The caller holds mu.
func (f *FSM) applyTxn(index int64, cmd *Command) (*storev1.TxnResponse, []watch.Event, error) {
	req := cmd.Txn
	ns := req.GetNamespace()
	if ns == "" || strings.IndexByte(ns, nsEnd) >= 0 {
		return nil, nil, fmt.Errorf("%w: txn namespace %q", errBadCommand, ns)
	}
	before := f.usage[ns]
	var resp *storev1.TxnResponse
	var cs *changeSet
	err := f.db.Update(func(tx *buntdb.Tx) error {
		cs = newChangeSet(tx, index, cmd.NowMs)
		if err := cs.checkFence(ns, req.GetFence()); err != nil {
			return err
		}
		ok := true
		for _, cmp := range req.GetCompares() {
			held, err := cs.compare(ns, cmp)
			if err != nil {
				return err
			}
			if !held {
				ok = false
				break
			}
		}
		ops := req.GetSuccess()
		if !ok {
			ops = req.GetFailure()
		}
		results := make([]*storev1.TxnOpResult, 0, len(ops))
		for _, op := range ops {
			r, err := cs.do(f, ns, op)
			if err != nil {
				return err
			}
			results = append(results, r)
		}
		if err := checkQuota(ns, cmd.Quota, before, cs.usageOf(f, ns)); err != nil {
			return err
		}
		resp = &storev1.TxnResponse{Succeeded: ok, Revision: index, Results: results}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	cs.commit(f)
	return resp, cs.events, nil
}

// do runs one transaction operation.
func (c *changeSet) do(f *FSM, ns string, op *storev1.TxnOp) (*storev1.TxnOpResult, error) {
	switch o := op.GetOp().(type) {
	case *storev1.TxnOp_Put:
		kv, err := c.put(f, ns, o.Put.GetKey(), o.Put.GetValue(), o.Put.GetTtlMs())
		if err != nil {
			return nil, err
		}
		return &storev1.TxnOpResult{Kv: kv}, nil
	case *storev1.TxnOp_Delete:
		rec, exists, err := c.get(ns, o.Delete.GetKey())
		if err != nil || !exists {
			return &storev1.TxnOpResult{}, err
		}
		if err := c.remove(f, ns, string(o.Delete.GetKey()), rec, storev1.EventType_EVENT_TYPE_DELETE); err != nil {
			return nil, err
		}
		return &storev1.TxnOpResult{Deleted: 1}, nil
	case *storev1.TxnOp_Get:
		rec, exists, err := c.get(ns, o.Get.GetKey())
		if err != nil || !exists {
			return &storev1.TxnOpResult{}, err
		}
		return &storev1.TxnOpResult{Kv: rec.keyValue(string(o.Get.GetKey()), true)}, nil
	case *storev1.TxnOp_DeleteRange:
		if len(o.DeleteRange.GetPrefix()) == 0 {
			return nil, fmt.Errorf("%w: delete_range without a prefix", errBadCommand)
		}
		n, err := c.deletePrefix(f, ns, o.DeleteRange.GetPrefix())
		if err != nil {
			return nil, err
		}
		return &storev1.TxnOpResult{Deleted: n}, nil
	default:
		return nil, fmt.Errorf("%w: txn op without an operation", errBadCommand)
	}
}

// compare evaluates one compare against the state as changed so far.
func (c *changeSet) compare(ns string, cmp *storev1.Compare) (bool, error) {
	rec, exists, err := c.get(ns, cmp.GetKey())
	if err != nil {
		return false, err
	}
	op := cmp.GetOperator()
	if op == storev1.CompareOperator_COMPARE_OPERATOR_UNSPECIFIED {
		op = storev1.CompareOperator_COMPARE_OPERATOR_EQUAL
	}
	switch t := cmp.GetTarget().(type) {
	case *storev1.Compare_Value:
		if !exists {
			// A missing key never equals a value, and is neither greater
			// nor less than one.
			return op == storev1.CompareOperator_COMPARE_OPERATOR_NOT_EQUAL, nil
		}
		return relate(op, strings.Compare(rec.value, string(t.Value)))
	case *storev1.Compare_ModRevision:
		return relate(op, cmpInt(rec.modRev, t.ModRevision))
	case *storev1.Compare_Version:
		return relate(op, cmpInt(rec.version, t.Version))
	case *storev1.Compare_Exists:
		switch op {
		case storev1.CompareOperator_COMPARE_OPERATOR_EQUAL:
			return exists == t.Exists, nil
		case storev1.CompareOperator_COMPARE_OPERATOR_NOT_EQUAL:
			return exists != t.Exists, nil
		}
		return false, fmt.Errorf("%w: compare on exists takes EQUAL or NOT_EQUAL, not %v", errBadCommand, op)
	default:
		return false, fmt.Errorf("%w: compare without a target", errBadCommand)
	}
}

// relate applies op to the result of a three-way comparison.
func relate(op storev1.CompareOperator, cmp int) (bool, error) {
	switch op {
	case storev1.CompareOperator_COMPARE_OPERATOR_EQUAL:
		return cmp == 0, nil
	case storev1.CompareOperator_COMPARE_OPERATOR_NOT_EQUAL:
		return cmp != 0, nil
	case storev1.CompareOperator_COMPARE_OPERATOR_GREATER:
		return cmp > 0, nil
	case storev1.CompareOperator_COMPARE_OPERATOR_LESS:
		return cmp < 0, nil
	}
	return false, fmt.Errorf("%w: unknown compare operator %v", errBadCommand, op)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
