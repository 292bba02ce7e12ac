package local

import (
	"bytes"
	"fmt"

	"google.golang.org/protobuf/proto"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// Request limits that are not configurable.
const (
	// MaxKeyBytes is the longest key.
	MaxKeyBytes = 4096
	// MaxTxnOps bounds the compares, and the operations of each branch, of
	// one transaction.
	MaxTxnOps = 128
	// maxTTLMs keeps expiry times far from overflowing (about 31 years).
	maxTTLMs = 1_000_000_000_000
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidRequest}, args...)...)
}

// quoteKey renders a key for a message, shortened when long.
func quoteKey(key []byte) string {
	if len(key) > 64 {
		return fmt.Sprintf("%q...", key[:64])
	}
	return fmt.Sprintf("%q", key)
}

func validKey(what string, key []byte) error {
	switch {
	case len(key) == 0:
		return invalid("%s: key is empty", what)
	case len(key) > MaxKeyBytes:
		return invalid("%s: key %s is %d bytes > max %d bytes", what, quoteKey(key), len(key), MaxKeyBytes)
	}
	return nil
}

func (e *Engine) validValue(ns string, key, value []byte) error {
	if len(value) > e.cfg.MaxValueBytes {
		return limitErrorf(ErrValueTooLarge, "max_value_bytes", "namespace %q key %s: value is %d bytes > max %d bytes (raise max_value_bytes in the agent config)",
			ns, quoteKey(key), len(value), e.cfg.MaxValueBytes)
	}
	return nil
}

func validTTL(what string, ttlMs int64) error {
	if ttlMs < 0 || ttlMs > maxTTLMs {
		return invalid("%s: ttl_ms %d is outside 0 to %d", what, ttlMs, int64(maxTTLMs))
	}
	return nil
}

func validPrefix(what string, prefix []byte) error {
	switch {
	case len(prefix) == 0:
		return invalid("%s: prefix is empty", what)
	case len(prefix) > MaxKeyBytes:
		return invalid("%s: prefix is %d bytes > max %d bytes", what, len(prefix), MaxKeyBytes)
	}
	return nil
}

// validFence checks a write's fence: an epoch is a revision, never
// negative.
func validFence(what string, f *storev1.Fence) error {
	if f.GetEpoch() < 0 {
		return invalid("%s: fence epoch %d is negative", what, f.GetEpoch())
	}
	return nil
}

// validTxn checks a transaction before it is proposed, so that the state
// machine only ever sees well-formed ones.
func (e *Engine) validTxn(req *storev1.TxnRequest) error {
	ns := req.GetNamespace()
	if size := proto.Size(req); size > e.cfg.MaxTxnBytes {
		return limitErrorf(ErrTxnTooLarge, "max_txn_bytes", "namespace %q: transaction is %d bytes > max %d bytes (split it, or raise max_txn_bytes in the agent config)",
			ns, size, e.cfg.MaxTxnBytes)
	}
	if err := validFence("txn", req.GetFence()); err != nil {
		return err
	}
	if len(req.GetCompares()) > MaxTxnOps || len(req.GetSuccess()) > MaxTxnOps || len(req.GetFailure()) > MaxTxnOps {
		return invalid("txn: more than %d compares or operations in a branch", MaxTxnOps)
	}
	for i, c := range req.GetCompares() {
		what := fmt.Sprintf("txn compare %d", i)
		if err := validKey(what, c.GetKey()); err != nil {
			return err
		}
		op := c.GetOperator()
		if _, ok := storev1.CompareOperator_name[int32(op)]; !ok {
			return invalid("%s: unknown operator %d", what, op)
		}
		switch c.GetTarget().(type) {
		case nil:
			return invalid("%s: no target (value, mod_revision, version or exists)", what)
		case *storev1.Compare_Exists:
			if op == storev1.CompareOperator_COMPARE_OPERATOR_GREATER || op == storev1.CompareOperator_COMPARE_OPERATOR_LESS {
				return invalid("%s: exists compares with EQUAL or NOT_EQUAL only", what)
			}
		}
	}
	for _, branch := range []struct {
		name string
		ops  []*storev1.TxnOp
	}{{"success", req.GetSuccess()}, {"failure", req.GetFailure()}} {
		if err := e.validBranch(ns, branch.name, branch.ops); err != nil {
			return err
		}
	}
	return nil
}

// validBranch checks the operations of one branch. A branch may write a key
// only once: two writes of one key (a put and a delete, or a key under a
// delete_range prefix) would make one revision hold two changes to it.
func (e *Engine) validBranch(ns, name string, ops []*storev1.TxnOp) error {
	written := make(map[string]int)
	var prefixes [][]byte
	for i, op := range ops {
		what := fmt.Sprintf("txn %s op %d", name, i)
		var key []byte
		switch o := op.GetOp().(type) {
		case *storev1.TxnOp_Put:
			key = o.Put.GetKey()
			if err := validKey(what, key); err != nil {
				return err
			}
			if err := e.validValue(ns, key, o.Put.GetValue()); err != nil {
				return err
			}
			if err := validTTL(what, o.Put.GetTtlMs()); err != nil {
				return err
			}
		case *storev1.TxnOp_Delete:
			key = o.Delete.GetKey()
			if err := validKey(what, key); err != nil {
				return err
			}
		case *storev1.TxnOp_Get:
			if err := validKey(what, o.Get.GetKey()); err != nil {
				return err
			}
			continue
		case *storev1.TxnOp_DeleteRange:
			p := o.DeleteRange.GetPrefix()
			if err := validPrefix(what, p); err != nil {
				return err
			}
			prefixes = append(prefixes, p)
			continue
		default:
			return invalid("%s: no operation (put, delete, get or delete_range)", what)
		}
		if j, dup := written[string(key)]; dup {
			return invalid("%s: key %s is already written by op %d of this branch", what, quoteKey(key), j)
		}
		written[string(key)] = i
	}
	for i, p := range prefixes {
		for j, q := range prefixes {
			if i != j && bytes.HasPrefix(q, p) {
				return invalid("txn %s: delete_range prefixes %s and %s overlap", name, quoteKey(p), quoteKey(q))
			}
		}
		for k := range written {
			if bytes.HasPrefix([]byte(k), p) {
				return invalid("txn %s: key %s is written and also under delete_range prefix %s", name, quoteKey([]byte(k)), quoteKey(p))
			}
		}
	}
	return nil
}
