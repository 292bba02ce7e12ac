package local

import (
	"context"
	"fmt"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/fsm"
)

// Put writes one key. With expected_mod_revision set it writes only if the
// key is at that mod revision (0: only if it does not exist), and otherwise
// fails with an error wrapping ErrCASFailed.
func (e *Engine) Put(ctx context.Context, req *storev1.PutRequest) (*storev1.PutResponse, error) {
	ns, key := req.GetNamespace(), req.GetKey()
	if err := ValidNamespace(ns); err != nil {
		return nil, err
	}
	if err := validKey("put", key); err != nil {
		return nil, err
	}
	if err := e.validValue(ns, key, req.GetValue()); err != nil {
		return nil, err
	}
	if err := validTTL("put", req.GetTtlMs()); err != nil {
		return nil, err
	}
	if err := validFence("put", req.GetFence()); err != nil {
		return nil, err
	}
	txn := &storev1.TxnRequest{
		Namespace: ns,
		Success: []*storev1.TxnOp{{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{
			Key: key, Value: req.GetValue(), TtlMs: req.GetTtlMs(),
		}}}},
		Fence: req.GetFence(),
	}
	if req.ExpectedModRevision != nil {
		txn.Compares = casCompare(key, req.GetExpectedModRevision())
		txn.Failure = getOp(key)
	}
	resp, err := e.txn(ctx, txn)
	if err != nil {
		return nil, err
	}
	if !resp.GetSucceeded() {
		return nil, casError("put", ns, key, req.GetExpectedModRevision(), resp)
	}
	return &storev1.PutResponse{Revision: resp.GetRevision(), Kv: resp.GetResults()[0].GetKv()}, nil
}

// Delete removes one key. With expected_mod_revision set it removes it only
// at that mod revision, and otherwise fails with an error wrapping
// ErrCASFailed. Deleting a missing key is not an error.
func (e *Engine) Delete(ctx context.Context, req *storev1.DeleteRequest) (*storev1.DeleteResponse, error) {
	ns, key := req.GetNamespace(), req.GetKey()
	if err := ValidNamespace(ns); err != nil {
		return nil, err
	}
	if err := validKey("delete", key); err != nil {
		return nil, err
	}
	if err := validFence("delete", req.GetFence()); err != nil {
		return nil, err
	}
	txn := &storev1.TxnRequest{
		Namespace: ns,
		Success:   []*storev1.TxnOp{{Op: &storev1.TxnOp_Delete{Delete: &storev1.TxnDelete{Key: key}}}},
		Fence:     req.GetFence(),
	}
	if req.ExpectedModRevision != nil {
		txn.Compares = casCompare(key, req.GetExpectedModRevision())
		txn.Failure = getOp(key)
	}
	resp, err := e.txn(ctx, txn)
	if err != nil {
		return nil, err
	}
	if !resp.GetSucceeded() {
		return nil, casError("delete", ns, key, req.GetExpectedModRevision(), resp)
	}
	return &storev1.DeleteResponse{Revision: resp.GetRevision(), Deleted: resp.GetResults()[0].GetDeleted() > 0}, nil
}

// DeleteRange removes every key of the namespace that starts with a
// non-empty prefix, at one revision.
func (e *Engine) DeleteRange(ctx context.Context, req *storev1.DeleteRangeRequest) (*storev1.DeleteRangeResponse, error) {
	ns := req.GetNamespace()
	if err := ValidNamespace(ns); err != nil {
		return nil, err
	}
	if err := validPrefix("delete_range", req.GetPrefix()); err != nil {
		return nil, err
	}
	if err := validFence("delete_range", req.GetFence()); err != nil {
		return nil, err
	}
	resp, err := e.txn(ctx, &storev1.TxnRequest{
		Namespace: ns,
		Success:   []*storev1.TxnOp{{Op: &storev1.TxnOp_DeleteRange{DeleteRange: &storev1.TxnDeleteRange{Prefix: req.GetPrefix()}}}},
		Fence:     req.GetFence(),
	})
	if err != nil {
		return nil, err
	}
	return &storev1.DeleteRangeResponse{Revision: resp.GetRevision(), Deleted: resp.GetResults()[0].GetDeleted()}, nil
}

// Txn evaluates the compares and applies the success or the failure
// operations, all at one revision or not at all.
func (e *Engine) Txn(ctx context.Context, req *storev1.TxnRequest) (*storev1.TxnResponse, error) {
	if err := ValidNamespace(req.GetNamespace()); err != nil {
		return nil, err
	}
	if err := e.validTxn(req); err != nil {
		return nil, err
	}
	return e.txn(ctx, req)
}

// txn proposes a validated transaction with the leader's clock and the
// namespace's quota.
func (e *Engine) txn(ctx context.Context, req *storev1.TxnRequest) (*storev1.TxnResponse, error) {
	res, err := e.log.Propose(ctx, &fsm.Command{
		Op:    fsm.OpTxn,
		NowMs: e.cfg.Clock().UnixMilli(),
		Quota: e.cfg.Quota(req.GetNamespace()),
		Txn:   req,
	})
	if err != nil {
		return nil, err
	}
	return res.Txn, nil
}

func casCompare(key []byte, rev int64) []*storev1.Compare {
	return []*storev1.Compare{{
		Key:      key,
		Operator: storev1.CompareOperator_COMPARE_OPERATOR_EQUAL,
		Target:   &storev1.Compare_ModRevision{ModRevision: rev},
	}}
}

func getOp(key []byte) []*storev1.TxnOp {
	return []*storev1.TxnOp{{Op: &storev1.TxnOp_Get{Get: &storev1.TxnGet{Key: key}}}}
}

// casError explains a failed conditional write from the key's current state,
// read by the failure branch.
func casError(op, ns string, key []byte, expected int64, resp *storev1.TxnResponse) error {
	cur := resp.GetResults()[0].GetKv()
	found := "the key does not exist"
	if cur != nil {
		found = fmt.Sprintf("the key is at mod revision %d", cur.GetModRevision())
	}
	want := fmt.Sprintf("mod revision %d", expected)
	if expected == 0 {
		want = "a missing key"
	}
	return fmt.Errorf("%w: %s namespace %q key %s: expected %s, %s (revision %d)",
		ErrCASFailed, op, ns, quoteKey(key), want, found, resp.GetRevision())
}
