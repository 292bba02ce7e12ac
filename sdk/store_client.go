package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"sync/atomic"
	"time"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
)

// storeClient is the Store over the agent's StoreService, reached through
// the go-plugin broker. The agent binds the connection to the plugin's
// namespace, so requests leave Namespace empty.
type storeClient struct {
	rpc         storev1.StoreServiceClient
	consistency Consistency
	// written is the highest revision this instance has written; shared by
	// every view of the same store.
	written *atomic.Int64
	// role is the instance's standing in its singleton, whose epoch every
	// write carries; nil carries none.
	role *roleState
}

var _ Store = (*storeClient)(nil)

// newStoreClient returns the Store over conn, whose writes carry role's
// epoch.
func newStoreClient(conn grpc.ClientConnInterface, role *roleState) *storeClient {
	return &storeClient{rpc: storev1.NewStoreServiceClient(conn), written: new(atomic.Int64), role: role}
}

// fence is what a write carries: the epoch the agent gave this instance as
// its singleton's active, or none. It is always set, which tells the agent
// this SDK sends its epoch (the agent stamps writes of older SDKs itself).
func (s *storeClient) fence() *storev1.Fence {
	if s.role == nil {
		return &storev1.Fence{}
	}
	return &storev1.Fence{Epoch: s.role.writeEpoch()}
}

// wrote records the revision of a write for read-your-writes.
func (s *storeClient) wrote(rev int64) {
	for {
		cur := s.written.Load()
		if rev <= cur || s.written.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// readMode returns the consistency and min revision of a read.
func (s *storeClient) readMode() (storev1.Consistency, int64) {
	switch s.consistency {
	case Session:
		return storev1.Consistency_CONSISTENCY_SESSION, s.written.Load()
	case Stale:
		return storev1.Consistency_CONSISTENCY_STALE, 0
	default:
		return storev1.Consistency_CONSISTENCY_LINEARIZABLE, 0
	}
}

func (s *storeClient) WithConsistency(c Consistency) Store {
	v := *s
	v.consistency = c
	return &v
}

func (s *storeClient) Get(ctx context.Context, key string) (KV, error) {
	c, minRev := s.readMode()
	resp, err := s.rpc.Get(ctx, &storev1.GetRequest{Key: []byte(key), Consistency: c, MinRevision: minRev})
	if err != nil {
		return KV{}, fromRPC("get "+key, err)
	}
	if resp.GetKv() == nil {
		return KV{}, fmt.Errorf("store get %s: %w", key, ErrNotFound)
	}
	return fromKV(resp.GetKv()), nil
}

func (s *storeClient) Put(ctx context.Context, key string, value []byte, opts PutOptions) (KV, error) {
	ttl, err := ttlMillis(opts.TTL)
	if err != nil {
		return KV{}, fmt.Errorf("store put %s: %w", key, err)
	}
	var p peer.Peer
	resp, err := s.rpc.Put(ctx, &storev1.PutRequest{
		Key: []byte(key), Value: value, TtlMs: ttl, ExpectedModRevision: opts.IfModRevision, Fence: s.fence(),
	}, grpc.Peer(&p))
	if err != nil {
		return KV{}, fromWrite("put "+key, err, &p)
	}
	s.wrote(resp.GetRevision())
	return fromKV(resp.GetKv()), nil
}

func (s *storeClient) Delete(ctx context.Context, key string, opts DeleteOptions) (bool, error) {
	var p peer.Peer
	resp, err := s.rpc.Delete(ctx, &storev1.DeleteRequest{Key: []byte(key), ExpectedModRevision: opts.IfModRevision, Fence: s.fence()}, grpc.Peer(&p))
	if err != nil {
		return false, fromWrite("delete "+key, err, &p)
	}
	s.wrote(resp.GetRevision())
	return resp.GetDeleted(), nil
}

func (s *storeClient) DeleteRange(ctx context.Context, prefix string) (int64, error) {
	if prefix == "" {
		return 0, errors.New("store delete range: the prefix must not be empty")
	}
	var p peer.Peer
	resp, err := s.rpc.DeleteRange(ctx, &storev1.DeleteRangeRequest{Prefix: []byte(prefix), Fence: s.fence()}, grpc.Peer(&p))
	if err != nil {
		return 0, fromWrite("delete range "+prefix, err, &p)
	}
	s.wrote(resp.GetRevision())
	return resp.GetDeleted(), nil
}

func (s *storeClient) List(ctx context.Context, prefix string, opts ListOptions) (Page, error) {
	if opts.Limit < 0 {
		return Page{}, fmt.Errorf("store list %s: negative limit %d", prefix, opts.Limit)
	}
	c, minRev := s.readMode()
	req := &storev1.ListRequest{
		Prefix:      []byte(prefix),
		Limit:       int32(min(opts.Limit, math.MaxInt32)),
		KeysOnly:    opts.KeysOnly,
		Consistency: c,
		MinRevision: minRev,
	}
	if opts.Page != "" {
		req.PageToken = []byte(opts.Page)
	}
	resp, err := s.rpc.List(ctx, req)
	if err != nil {
		return Page{}, fromRPC("list "+prefix, err)
	}
	page := Page{KVs: make([]KV, 0, len(resp.GetKvs())), Next: string(resp.GetNextPageToken()), Revision: resp.GetRevision()}
	for _, kv := range resp.GetKvs() {
		page.KVs = append(page.KVs, fromKV(kv))
	}
	return page, nil
}

func (s *storeClient) Txn(ctx context.Context, t Txn) (TxnResult, error) {
	req, err := toTxnRequest(t)
	if err != nil {
		return TxnResult{}, fmt.Errorf("store txn: %w", err)
	}
	req.Fence = s.fence()
	var p peer.Peer
	resp, err := s.rpc.Txn(ctx, req, grpc.Peer(&p))
	if err != nil {
		return TxnResult{}, fromWrite("txn", err, &p)
	}
	s.wrote(resp.GetRevision())
	res := TxnResult{Succeeded: resp.GetSucceeded(), Revision: resp.GetRevision(), Results: make([]OpResult, 0, len(resp.GetResults()))}
	for _, r := range resp.GetResults() {
		or := OpResult{Deleted: r.GetDeleted()}
		if r.GetKv() != nil {
			or.KV, or.Found = fromKV(r.GetKv()), true
		}
		res.Results = append(res.Results, or)
	}
	return res, nil
}

func (s *storeClient) Watch(ctx context.Context, prefix string, fromRevision int64) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		if fromRevision < 0 {
			yield(Event{}, fmt.Errorf("store watch %s: negative revision %d", prefix, fromRevision))
			return
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // ends the stream when the caller stops ranging
		stream, err := s.rpc.Watch(ctx, &storev1.WatchRequest{Prefix: []byte(prefix), StartRevision: fromRevision})
		if err != nil {
			yield(Event{}, fromRPC("watch "+prefix, err))
			return
		}
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				yield(Event{}, fmt.Errorf("store watch %s: %w: the agent ended the stream", prefix, ErrUnavailable))
				return
			}
			if err != nil {
				if ctx.Err() != nil {
					err = ctx.Err()
				} else {
					err = fromRPC("watch "+prefix, err)
				}
				yield(Event{}, err)
				return
			}
			for _, ev := range resp.GetEvents() {
				if !yield(Event{Type: fromEventType(ev.GetType()), KV: fromKV(ev.GetKv()), Revision: resp.GetRevision()}, nil) {
					return
				}
			}
		}
	}
}

// ttlMillis converts a TTL to the wire's milliseconds, rounding a positive
// TTL below a millisecond up so that it still expires.
func ttlMillis(ttl time.Duration) (int64, error) {
	switch {
	case ttl < 0:
		return 0, fmt.Errorf("negative TTL %s", ttl)
	case ttl == 0:
		return 0, nil
	}
	return max(ttl.Milliseconds(), 1), nil
}

func fromKV(kv *storev1.KeyValue) KV {
	if kv == nil {
		return KV{}
	}
	out := KV{
		Key:            string(kv.GetKey()),
		Value:          kv.GetValue(),
		CreateRevision: kv.GetCreateRevision(),
		ModRevision:    kv.GetModRevision(),
		Version:        kv.GetVersion(),
	}
	if ms := kv.GetExpiresAtUnixMs(); ms != 0 {
		out.ExpiresAt = time.UnixMilli(ms)
	}
	return out
}

func fromEventType(t storev1.EventType) EventType {
	switch t {
	case storev1.EventType_EVENT_TYPE_PUT:
		return EventPut
	case storev1.EventType_EVENT_TYPE_DELETE:
		return EventDelete
	case storev1.EventType_EVENT_TYPE_EXPIRE:
		return EventExpire
	}
	return 0
}

func toTxnRequest(t Txn) (*storev1.TxnRequest, error) {
	req := &storev1.TxnRequest{}
	for i, c := range t.If {
		pc, err := toCompare(c)
		if err != nil {
			return nil, fmt.Errorf("compare %d: %w", i, err)
		}
		req.Compares = append(req.Compares, pc)
	}
	var err error
	if req.Success, err = toOps(t.Then); err != nil {
		return nil, fmt.Errorf("then: %w", err)
	}
	if req.Failure, err = toOps(t.Else); err != nil {
		return nil, fmt.Errorf("else: %w", err)
	}
	return req, nil
}

func toCompare(c Compare) (*storev1.Compare, error) {
	pc := &storev1.Compare{Key: []byte(c.Key)}
	switch c.Op {
	case Equal:
		pc.Operator = storev1.CompareOperator_COMPARE_OPERATOR_EQUAL
	case NotEqual:
		pc.Operator = storev1.CompareOperator_COMPARE_OPERATOR_NOT_EQUAL
	case Greater:
		pc.Operator = storev1.CompareOperator_COMPARE_OPERATOR_GREATER
	case Less:
		pc.Operator = storev1.CompareOperator_COMPARE_OPERATOR_LESS
	default:
		return nil, fmt.Errorf("key %s: unknown operator %d", c.Key, c.Op)
	}
	switch c.Target {
	case CompareValue:
		pc.Target = &storev1.Compare_Value{Value: c.Value}
	case CompareModRevision:
		pc.Target = &storev1.Compare_ModRevision{ModRevision: c.Number}
	case CompareVersion:
		pc.Target = &storev1.Compare_Version{Version: c.Number}
	case CompareExists:
		pc.Target = &storev1.Compare_Exists{Exists: c.Exists}
	default:
		return nil, fmt.Errorf("key %s: unknown target %d", c.Key, c.Target)
	}
	return pc, nil
}

func toOps(ops []Op) ([]*storev1.TxnOp, error) {
	out := make([]*storev1.TxnOp, 0, len(ops))
	for i, op := range ops {
		var p *storev1.TxnOp
		switch op.Kind {
		case OpPut:
			ttl, err := ttlMillis(op.TTL)
			if err != nil {
				return nil, fmt.Errorf("op %d (put %s): %w", i, op.Key, err)
			}
			p = &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: []byte(op.Key), Value: op.Value, TtlMs: ttl}}}
		case OpDelete:
			p = &storev1.TxnOp{Op: &storev1.TxnOp_Delete{Delete: &storev1.TxnDelete{Key: []byte(op.Key)}}}
		case OpGet:
			p = &storev1.TxnOp{Op: &storev1.TxnOp_Get{Get: &storev1.TxnGet{Key: []byte(op.Key)}}}
		case OpDeleteRange:
			if op.Key == "" {
				return nil, fmt.Errorf("op %d (delete range): the prefix must not be empty", i)
			}
			p = &storev1.TxnOp{Op: &storev1.TxnOp_DeleteRange{DeleteRange: &storev1.TxnDeleteRange{Prefix: []byte(op.Key)}}}
		default:
			return nil, fmt.Errorf("op %d: unknown kind %d", i, op.Kind)
		}
		out = append(out, p)
	}
	return out, nil
}
