package local

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/fsm"
)

// The request kinds FuzzRequest sends, by the low bits of its kind byte.
const (
	fuzzGet = iota
	fuzzPut
	fuzzDelete
	fuzzDeleteRange
	fuzzList
	fuzzTxn
	fuzzWatch
	fuzzKinds
)

// fuzzBound is the kind bit that sends the request through a plugin's
// binding to namespace "app" instead of the agent's own store service.
const fuzzBound = 0x80

// fuzzSequence is the kind bit that makes the message a sequence of
// requests, each a kind byte, a two-byte length and the request, sent one
// after the other.
const fuzzSequence = 0x40

// FuzzRequest sends fuzzed store requests, as they come off the network, to
// a store that holds data in several namespaces, quotas on, through the
// agent's StoreService or through a plugin's binding, one request or a
// sequence of them. It checks that:
//   - a refused request gets a status that says what is wrong (never
//     INTERNAL or UNKNOWN: those would mean the state machine refused what
//     validation let through, or something broke), with a message;
//   - a request through a binding changes nothing outside its namespace;
//   - whatever is accepted leaves only valid namespaces, and namespace usage
//     (what quotas count) matching the keys held.
func FuzzRequest(f *testing.F) {
	var seq []byte // every seed in one sequence
	for _, s := range requestSeeds() {
		b, err := proto.Marshal(s.req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(s.kind, b)
		f.Add(s.kind|fuzzBound, b)
		if len(b) <= 0xffff {
			seq = append(seq, s.kind, byte(len(b)>>8), byte(len(b)))
			seq = append(seq, b...)
		}
	}
	f.Add(uint8(fuzzSequence), seq)
	f.Add(uint8(fuzzSequence|fuzzBound), seq)
	f.Fuzz(func(t *testing.T, kind uint8, msg []byte) {
		m, err := OpenMemory()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		m.cfg.Quota = func(ns string) fsm.Quota { return fsm.Quota{MaxKeys: 8, MaxBytes: 4 << 10} }
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, kv := range fuzzState {
			if _, err := m.Put(ctx, &storev1.PutRequest{Namespace: kv[0], Key: []byte(kv[1]), Value: []byte(kv[2])}); err != nil {
				t.Fatal(err)
			}
		}
		before := outside(t, m, "app")

		var srv storev1.StoreServiceServer = NewServer(m)
		bound := kind&fuzzBound != 0
		if bound {
			srv = Bind(srv, Binding{Namespace: "app"})
		}
		calls := [][]byte{msg}
		kinds := []uint8{kind}
		if kind&fuzzSequence != 0 {
			calls, kinds = nil, nil
			for len(msg) >= 3 && len(calls) < 16 {
				n := min(int(msg[1])<<8|int(msg[2]), len(msg)-3)
				kinds, calls = append(kinds, msg[0]), append(calls, msg[3:3+n])
				msg = msg[3+n:]
			}
		}
		for i, call := range calls {
			err := fuzzCall(ctx, srv, int(kinds[i]&^(fuzzBound|fuzzSequence))%fuzzKinds, call, m.Revision())
			if err == nil {
				continue
			}
			st, ok := status.FromError(err)
			switch {
			case !ok:
				t.Fatalf("request %d refused with %v, which is not a status", i, err)
			case st.Code() == codes.Internal || st.Code() == codes.Unknown:
				t.Fatalf("request %d refused with %v: a request the store cannot serve is the caller's mistake, and its status must say which", i, err)
			case strings.TrimSpace(st.Message()) == "":
				t.Fatalf("request %d refused with code %v and no message", i, st.Code())
			}
		}
		if bound {
			if after := outside(t, m, "app"); !bytes.Equal(before, after) {
				t.Fatal("a request through the binding to \"app\" changed another namespace")
			}
		}
		for ns := range m.fsm.Namespaces() {
			if ValidNamespace(ns) != nil {
				t.Fatalf("the store holds keys in namespace %q, which no request may name", ns)
			}
		}
		checkUsage(t, m.fsm)
	})
}

// fuzzState is what the store holds before each fuzzed request: namespace,
// key, value.
var fuzzState = [][3]string{
	{"app", "a", "1"}, {"app", "a/b", "2"}, {"app", "b", "3"},
	{"other", "a", "secret"}, {"_sys", "catalog/app", "x"},
}

type requestSeed struct {
	kind uint8
	req  proto.Message
}

// requestSeeds are the requests a plugin's store client and the CLI send,
// and the malformed ones the store's tests refuse.
func requestSeeds() []requestSeed {
	put := func(key string, ttl int64) *storev1.TxnOp {
		return &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: []byte(key), Value: []byte("v"), TtlMs: ttl}}}
	}
	del := func(key string) *storev1.TxnOp {
		return &storev1.TxnOp{Op: &storev1.TxnOp_Delete{Delete: &storev1.TxnDelete{Key: []byte(key)}}}
	}
	delRange := func(prefix string) *storev1.TxnOp {
		return &storev1.TxnOp{Op: &storev1.TxnOp_DeleteRange{DeleteRange: &storev1.TxnDeleteRange{Prefix: []byte(prefix)}}}
	}
	get := &storev1.TxnOp{Op: &storev1.TxnOp_Get{Get: &storev1.TxnGet{Key: []byte("a")}}}
	cmp := func(op storev1.CompareOperator, target any) *storev1.Compare {
		c := &storev1.Compare{Key: []byte("a"), Operator: op}
		switch v := target.(type) {
		case bool:
			c.Target = &storev1.Compare_Exists{Exists: v}
		case int64:
			c.Target = &storev1.Compare_ModRevision{ModRevision: v}
		case string:
			c.Target = &storev1.Compare_Value{Value: []byte(v)}
		}
		return c
	}
	rev := int64(1)
	long := strings.Repeat("k", MaxKeyBytes+1)
	return []requestSeed{
		{fuzzGet, &storev1.GetRequest{Namespace: "app", Key: []byte("a")}},
		{fuzzGet, &storev1.GetRequest{Namespace: "app", Key: []byte("a"), Consistency: storev1.Consistency_CONSISTENCY_SESSION, MinRevision: 99}},
		{fuzzGet, &storev1.GetRequest{Namespace: "other", Key: []byte("a")}},
		{fuzzGet, &storev1.GetRequest{Namespace: "app", Key: []byte(long)}},
		{fuzzGet, &storev1.GetRequest{Namespace: "App", Key: []byte("a"), Consistency: 42}},
		{fuzzPut, &storev1.PutRequest{Namespace: "app", Key: []byte("n"), Value: []byte("v"), TtlMs: 1000}},
		{fuzzPut, &storev1.PutRequest{Namespace: "app", Key: []byte("a"), Value: []byte("v"), ExpectedModRevision: &rev}},
		{fuzzPut, &storev1.PutRequest{Namespace: "_sys", Key: []byte("catalog/evil"), Value: []byte("v")}},
		{fuzzPut, &storev1.PutRequest{Namespace: "app", Key: []byte("big"), Value: make([]byte, DefaultMaxValueBytes+1)}},
		{fuzzPut, &storev1.PutRequest{Namespace: "app", Key: []byte("t"), Value: []byte("v"), TtlMs: -1}},
		{fuzzPut, &storev1.PutRequest{Namespace: "app\x00x", Key: []byte("k")}},
		{fuzzDelete, &storev1.DeleteRequest{Namespace: "app", Key: []byte("a"), ExpectedModRevision: &rev}},
		{fuzzDelete, &storev1.DeleteRequest{Namespace: "app"}},
		{fuzzDeleteRange, &storev1.DeleteRangeRequest{Namespace: "app", Prefix: []byte("a")}},
		{fuzzDeleteRange, &storev1.DeleteRangeRequest{Namespace: "app", Prefix: []byte{0xff, 0xff}}},
		{fuzzList, &storev1.ListRequest{Namespace: "app", Prefix: []byte("a"), Limit: 1}},
		{fuzzList, &storev1.ListRequest{Namespace: "app", Start: []byte("a"), End: []byte("b"), PageToken: []byte{pageTokenFormat, 'a'}}},
		{fuzzList, &storev1.ListRequest{Namespace: "app", Prefix: []byte("a"), Start: []byte("a")}},
		{fuzzList, &storev1.ListRequest{Namespace: "app", Limit: -1, PageToken: []byte{9}}},
		{fuzzList, &storev1.ListRequest{Namespace: "app", Start: []byte("b"), End: []byte("a")}},
		{fuzzTxn, &storev1.TxnRequest{Namespace: "app",
			Compares: []*storev1.Compare{cmp(storev1.CompareOperator_COMPARE_OPERATOR_EQUAL, true), cmp(storev1.CompareOperator_COMPARE_OPERATOR_GREATER, int64(0))},
			Success:  []*storev1.TxnOp{put("c", 0), del("b"), get, delRange("z")},
			Failure:  []*storev1.TxnOp{get}}},
		{fuzzTxn, &storev1.TxnRequest{Namespace: "app", Compares: []*storev1.Compare{cmp(storev1.CompareOperator_COMPARE_OPERATOR_LESS, "zz")}, Success: []*storev1.TxnOp{put("a", 5)}}},
		{fuzzTxn, &storev1.TxnRequest{Namespace: "app", Success: []*storev1.TxnOp{put("a", 0), del("a")}}},
		{fuzzTxn, &storev1.TxnRequest{Namespace: "app", Success: []*storev1.TxnOp{delRange("a"), delRange("a/")}}},
		{fuzzTxn, &storev1.TxnRequest{Namespace: "app", Success: []*storev1.TxnOp{put("a/c", 0), delRange("a")}}},
		{fuzzTxn, &storev1.TxnRequest{Namespace: "app", Compares: []*storev1.Compare{cmp(storev1.CompareOperator_COMPARE_OPERATOR_GREATER, true)}}},
		{fuzzTxn, &storev1.TxnRequest{Namespace: "app", Compares: []*storev1.Compare{cmp(99, int64(1))}}},
		{fuzzTxn, &storev1.TxnRequest{Namespace: "app", Compares: []*storev1.Compare{{Key: []byte("a")}}}},
		{fuzzTxn, &storev1.TxnRequest{Namespace: "app", Success: []*storev1.TxnOp{{}}}},
		{fuzzTxn, &storev1.TxnRequest{Namespace: "app", Success: []*storev1.TxnOp{put("q1", 0), put("q2", 0), put("q3", 0), put("q4", 0), put("q5", 0), put("q6", 0)}}},
		{fuzzWatch, &storev1.WatchRequest{Namespace: "app", Prefix: []byte("a"), StartRevision: 1}},
		{fuzzWatch, &storev1.WatchRequest{Namespace: "app", StartRevision: -1}},
		{fuzzWatch, &storev1.WatchRequest{Namespace: "other", Prefix: []byte(long)}},
	}
}

// fuzzCall decodes msg as a request of kind and sends it to srv, whose
// store is at revision applied. A session read waits for its min_revision,
// as it should: the harness asks for one the store has reached.
func fuzzCall(ctx context.Context, srv storev1.StoreServiceServer, kind int, msg []byte, applied int64) error {
	unmarshal := func(m proto.Message) bool { return proto.Unmarshal(msg, m) == nil }
	var err error
	switch kind {
	case fuzzGet:
		if req := new(storev1.GetRequest); unmarshal(req) {
			req.MinRevision = min(req.MinRevision, applied)
			_, err = srv.Get(ctx, req)
		}
	case fuzzPut:
		if req := new(storev1.PutRequest); unmarshal(req) {
			_, err = srv.Put(ctx, req)
		}
	case fuzzDelete:
		if req := new(storev1.DeleteRequest); unmarshal(req) {
			_, err = srv.Delete(ctx, req)
		}
	case fuzzDeleteRange:
		if req := new(storev1.DeleteRangeRequest); unmarshal(req) {
			_, err = srv.DeleteRange(ctx, req)
		}
	case fuzzList:
		if req := new(storev1.ListRequest); unmarshal(req) {
			req.MinRevision = min(req.MinRevision, applied)
			_, err = srv.List(ctx, req)
		}
	case fuzzTxn:
		if req := new(storev1.TxnRequest); unmarshal(req) {
			_, err = srv.Txn(ctx, req)
		}
	case fuzzWatch:
		if req := new(storev1.WatchRequest); unmarshal(req) {
			// The watch ends when it has sent what history holds: its
			// context is already over, or its stream stops taking events.
			wctx, cancel := context.WithCancel(ctx)
			cancel()
			err = srv.Watch(req, &fuzzWatchStream{ctx: wctx})
			if status.Code(err) == codes.Canceled || errors.Is(err, errStreamFull) {
				err = nil
			}
		}
	}
	return err
}

var errStreamFull = status.Error(codes.Aborted, "the fuzz watch stream took all it takes")

// fuzzWatchStream is a watch stream that takes a few responses.
type fuzzWatchStream struct {
	grpc.ServerStreamingServer[storev1.WatchResponse]
	ctx  context.Context
	sent int
}

func (s *fuzzWatchStream) Context() context.Context { return s.ctx }

func (s *fuzzWatchStream) Send(*storev1.WatchResponse) error {
	if s.sent++; s.sent > 16 {
		return errStreamFull
	}
	return nil
}

// outside is the store's data outside namespace ns.
func outside(t *testing.T, m *Memory, ns string) []byte {
	t.Helper()
	snap, err := m.fsm.Capture()
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	for _, it := range snap.Items {
		if it.Namespace() != ns {
			b = append(b, it.Key...)
			b = append(b, 0)
			b = append(b, it.Value...)
			b = append(b, 0)
		}
	}
	return b
}

// checkUsage checks that the usage of every namespace is what its keys add
// up to.
func checkUsage(t *testing.T, f *fsm.FSM) {
	t.Helper()
	snap, err := f.Capture()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]fsm.Usage{}
	for _, it := range snap.Items {
		ns := it.Namespace()
		kv, _, err := f.Get(ns, []byte(it.Key[len(ns)+2:]))
		if err != nil || kv == nil {
			t.Fatalf("key %q does not read back: %v", it.Key, err)
		}
		u := want[ns]
		u.Keys++
		u.Bytes += int64(len(kv.GetKey()) + len(kv.GetValue()))
		want[ns] = u
	}
	got := f.Namespaces()
	if len(got) != len(want) {
		t.Fatalf("namespace usage %v, the keys add up to %v", got, want)
	}
	for ns, u := range want {
		if got[ns] != u {
			t.Fatalf("namespace usage %v, the keys add up to %v", got, want)
		}
	}
}
