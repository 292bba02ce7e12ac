package intent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// Store is what DB needs of the replicated store; *store.Store has it.
type Store interface {
	Get(ctx context.Context, req *storev1.GetRequest) (*storev1.GetResponse, error)
	List(ctx context.Context, req *storev1.ListRequest) (*storev1.ListResponse, error)
	Put(ctx context.Context, req *storev1.PutRequest) (*storev1.PutResponse, error)
	Delete(ctx context.Context, req *storev1.DeleteRequest) (*storev1.DeleteResponse, error)
	Txn(ctx context.Context, req *storev1.TxnRequest) (*storev1.TxnResponse, error)
	Watch(ctx context.Context, req *storev1.WatchRequest, send func(*storev1.WatchResponse) error) error
	Revision() int64
}

var _ Store = (*store.Store)(nil)

// Record is a record kept in _sys: it names its own key and checks itself.
type Record interface {
	Key() string
	Validate() error
}

// RecordPtr is satisfied by a pointer to a record type: *Intent, *Assignment…
type RecordPtr[T any] interface {
	*T
	Record
}

// Item is a record read from the store with its key's revisions.
type Item[T any] struct {
	Value          T
	ModRevision    int64
	CreateRevision int64
}

// DB reads and writes the records in a store.
type DB struct {
	st Store
	// consistency of reads: linearizable (the zero value) but for Local.
	consistency storev1.Consistency
}

// New returns a DB over st whose reads are linearizable.
func New(st Store) *DB { return &DB{st: st} }

// Local is the DB read from this node's copy of the store, which may lag
// behind the cluster's: for status answers on any node. Writes go to the
// leader as ever.
func (db *DB) Local() *DB {
	return &DB{st: db.st, consistency: storev1.Consistency_CONSISTENCY_STALE}
}

// Store is the store db reads and writes.
func (db *DB) Store() Store { return db.st }

// Decode decodes and checks the record in kv. JSON fields it does not know
// are ignored (a newer agent may write more); its key must be the record's
// own and the record must pass its Validate, else the error is a
// *RecordError.
func Decode[T any, P RecordPtr[T]](kv *storev1.KeyValue) (Item[T], error) {
	var it Item[T]
	key := string(kv.GetKey())
	refuse := func(format string, args ...any) error {
		return &RecordError{Key: key, ModRevision: kv.GetModRevision(), Reason: fmt.Sprintf(format, args...)}
	}
	p := P(&it.Value)
	if err := json.Unmarshal(kv.GetValue(), p); err != nil {
		return it, refuse("it does not decode (%v)", err)
	}
	if err := p.Validate(); err != nil {
		return it, refuse("%v", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	if p.Key() != key {
		return it, refuse("its content belongs at key %q", p.Key())
	}
	it.ModRevision = kv.GetModRevision()
	it.CreateRevision = kv.GetCreateRevision()
	return it, nil
}

// Encode checks r and returns its JSON.
func Encode(r Record) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("intent: %s: %w", r.Key(), err)
	}
	return json.Marshal(r)
}

// Get reads the record at key. found is false when there is none; a record
// that fails its checks is an error matching ErrInvalidRecord.
func Get[T any, P RecordPtr[T]](ctx context.Context, db *DB, key string) (it Item[T], found bool, err error) {
	resp, err := db.st.Get(ctx, &storev1.GetRequest{Namespace: store.SystemNamespace, Key: []byte(key), Consistency: db.consistency})
	if err != nil {
		return it, false, err
	}
	if resp.GetKv() == nil {
		return it, false, nil
	}
	it, err = Decode[T, P](resp.GetKv())
	return it, err == nil, err
}

// List reads every record under prefix, in key order: the valid ones, and
// a *RecordError for each of the others.
func List[T any, P RecordPtr[T]](ctx context.Context, db *DB, prefix string) (items []Item[T], refused []error, err error) {
	var token []byte
	for {
		resp, err := db.st.List(ctx, &storev1.ListRequest{Namespace: store.SystemNamespace, Prefix: []byte(prefix), PageToken: token, Consistency: db.consistency})
		if err != nil {
			return nil, nil, err
		}
		for _, kv := range resp.GetKvs() {
			it, err := Decode[T, P](kv)
			if err != nil {
				refused = append(refused, err)
				continue
			}
			items = append(items, it)
		}
		token = resp.GetNextPageToken()
		if len(token) == 0 {
			return items, refused, nil
		}
	}
}

// Put checks and writes r, and returns the revision of the write.
func (db *DB) Put(ctx context.Context, r Record) (int64, error) {
	val, err := Encode(r)
	if err != nil {
		return 0, err
	}
	resp, err := db.st.Put(ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(r.Key()), Value: val})
	if err != nil {
		return 0, err
	}
	return resp.GetRevision(), nil
}

// Delete removes the record at key; it is not an error when there is none.
func (db *DB) Delete(ctx context.Context, key string) (int64, error) {
	resp, err := db.st.Delete(ctx, &storev1.DeleteRequest{Namespace: store.SystemNamespace, Key: []byte(key)})
	if err != nil {
		return 0, err
	}
	return resp.GetRevision(), nil
}

// MaxTxnOps is the most compares, and the most writes, one Txn may hold
// (the store's limit per branch).
const MaxTxnOps = 128

// ErrTxnTooLarge means a Txn holds more than MaxTxnOps compares or writes.
var ErrTxnTooLarge = errors.New("intent: transaction too large")

// Txn is a set of writes that happen together, only if every condition
// holds. Build it with Put, Delete and the If methods, then Commit it.
type Txn struct {
	cmps []*storev1.Compare
	ops  []*storev1.TxnOp
	err  error
}

// Put adds a write of r.
func (t *Txn) Put(r Record) *Txn {
	val, err := Encode(r)
	if err != nil {
		t.err = errors.Join(t.err, err)
		return t
	}
	t.ops = append(t.ops, &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: []byte(r.Key()), Value: val}}})
	return t
}

// Delete adds a delete of key.
func (t *Txn) Delete(key string) *Txn {
	t.ops = append(t.ops, &storev1.TxnOp{Op: &storev1.TxnOp_Delete{Delete: &storev1.TxnDelete{Key: []byte(key)}}})
	return t
}

// DeletePrefix deletes every key under prefix.
func (t *Txn) DeletePrefix(prefix string) *Txn {
	t.ops = append(t.ops, &storev1.TxnOp{Op: &storev1.TxnOp_DeleteRange{DeleteRange: &storev1.TxnDeleteRange{Prefix: []byte(prefix)}}})
	return t
}

// IfModRevision adds the condition that key's mod revision is rev; 0 means
// the key does not exist.
func (t *Txn) IfModRevision(key string, rev int64) *Txn {
	t.cmps = append(t.cmps, &storev1.Compare{Key: []byte(key), Operator: storev1.CompareOperator_COMPARE_OPERATOR_EQUAL,
		Target: &storev1.Compare_ModRevision{ModRevision: rev}})
	return t
}

// Split returns t's writes in txns of at most n writes each, without t's
// conditions: for writes that need not happen together.
func (t *Txn) Split(n int) []*Txn {
	var out []*Txn
	for i := 0; i < len(t.ops); i += n {
		out = append(out, &Txn{ops: t.ops[i:min(i+n, len(t.ops))], err: t.err})
	}
	return out
}

// Len is the number of writes in t.
func (t *Txn) Len() int { return len(t.ops) }

// Commit applies t. ok is false when a condition did not hold (nothing was
// written); rev is the revision of the txn.
func (db *DB) Commit(ctx context.Context, t *Txn) (rev int64, ok bool, err error) {
	if t.err != nil {
		return 0, false, t.err
	}
	if len(t.ops) > MaxTxnOps || len(t.cmps) > MaxTxnOps {
		return 0, false, fmt.Errorf("%w: %d writes and %d conditions, at most %d of each", ErrTxnTooLarge, len(t.ops), len(t.cmps), MaxTxnOps)
	}
	if len(t.ops) == 0 {
		return 0, true, nil
	}
	resp, err := db.st.Txn(ctx, &storev1.TxnRequest{Namespace: store.SystemNamespace, Compares: t.cmps, Success: t.ops})
	if err != nil {
		return 0, false, err
	}
	return resp.GetRevision(), resp.GetSucceeded(), nil
}
