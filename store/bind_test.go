package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// boundClient serves s bound to b and returns a client of it.
func boundClient(t *testing.T, s *Store, b Binding) storev1.StoreServiceClient {
	t.Helper()
	conn := serve(t, func(g *grpc.Server) { storev1.RegisterStoreServiceServer(g, Bind(NewServer(s), b)) })
	return storev1.NewStoreServiceClient(conn)
}

// everyCall issues each StoreService method in namespace ns.
func everyCall(ctx context.Context, c storev1.StoreServiceClient, ns string) map[string]error {
	errs := make(map[string]error)
	_, errs["Get"] = c.Get(ctx, &storev1.GetRequest{Namespace: ns, Key: []byte("secret")})
	_, errs["Put"] = c.Put(ctx, &storev1.PutRequest{Namespace: ns, Key: []byte("secret"), Value: []byte("pwned")})
	_, errs["Delete"] = c.Delete(ctx, &storev1.DeleteRequest{Namespace: ns, Key: []byte("secret")})
	_, errs["DeleteRange"] = c.DeleteRange(ctx, &storev1.DeleteRangeRequest{Namespace: ns, Prefix: []byte("s")})
	_, errs["List"] = c.List(ctx, &storev1.ListRequest{Namespace: ns})
	_, errs["Txn"] = c.Txn(ctx, &storev1.TxnRequest{Namespace: ns, Success: []*storev1.TxnOp{putTxnOp("secret", "pwned", 0)}})
	// A watch that was wrongly admitted would wait for events: bound it.
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	stream, err := c.Watch(wctx, &storev1.WatchRequest{Namespace: ns})
	if err == nil {
		_, err = stream.Recv()
	}
	errs["Watch"] = err
	return errs
}

func TestBindRefusesOtherNamespaces(t *testing.T) {
	s := newMemStore(t)
	put(t, s, "other", "secret", "theirs")
	put(t, s, SystemNamespace, "secret", "agent's")
	c := boundClient(t, s, Binding{Namespace: "counter"})

	hostile := []string{
		"other",
		SystemNamespace,
		"Counter",
		"counter ",
		" counter",
		"counter\x00other",
		"counter/other",
		"counter\x00",
		"\x00counter",
		"count",
		"counter-2",
		"../other",
	}
	for _, ns := range hostile {
		t.Run(fmt.Sprintf("%q", ns), func(t *testing.T) {
			ctx, cancel := context.WithCancel(testenv.Context(t, 20*time.Second))
			defer cancel()
			for method, err := range everyCall(ctx, c, ns) {
				t.Run(method, func(t *testing.T) {
					wantCode(t, err, codes.PermissionDenied, `"counter"`, fmt.Sprintf("%q", ns))
				})
			}
		})
	}
	if kv := get(t, s, "other", "secret"); string(kv.GetValue()) != "theirs" {
		t.Errorf("other's key is now %v", kv)
	}
	if kv := get(t, s, SystemNamespace, "secret"); string(kv.GetValue()) != "agent's" {
		t.Errorf("_sys key is now %v", kv)
	}
}

func TestBindKeysStayInTheNamespace(t *testing.T) {
	s := newMemStore(t)
	put(t, s, "other", "secret", "theirs")
	put(t, s, "counter-x", "secret", "neighbour's")
	c := boundClient(t, s, Binding{Namespace: "counter"})
	ctx := testenv.Context(t, 20*time.Second)

	// Key bytes that try to spell another namespace's key.
	escapes := [][]byte{
		[]byte("\x00other\x00secret"),
		[]byte("\x00secret"),
		[]byte("/../other/secret"),
		[]byte("-x\x00secret"),
		append([]byte{0xff, 0xff}, "secret"...),
		[]byte("\x01"),
	}
	for _, key := range escapes {
		if _, err := c.Put(ctx, &storev1.PutRequest{Key: key, Value: []byte("mine")}); err != nil {
			t.Fatalf("put %q: %v", key, err)
		}
		// Empty namespace means the bound one, and the key is there, as is.
		if kv := get(t, s, "counter", string(key)); string(kv.GetValue()) != "mine" {
			t.Errorf("key %q not in counter: %v", key, kv)
		}
		resp, err := c.Get(ctx, &storev1.GetRequest{Namespace: "counter", Key: []byte("secret")})
		if err != nil || resp.GetKv() != nil {
			t.Errorf("bound Get of secret: %v %v", resp, err)
		}
	}
	// The plugin sees only its own keys.
	list, err := c.List(ctx, &storev1.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetKvs()) != len(escapes) {
		t.Errorf("bound List shows %d keys, want its own %d: %v", len(list.GetKvs()), len(escapes), list.GetKvs())
	}
	// A prefix delete of everything stays inside.
	for _, p := range [][]byte{{0}, {0xff}, {0x01}, []byte("-")} {
		if _, err := c.DeleteRange(ctx, &storev1.DeleteRangeRequest{Prefix: p}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Txn(ctx, &storev1.TxnRequest{
		Compares: []*storev1.Compare{cmpOp("\x00other\x00secret", storev1.CompareOperator_COMPARE_OPERATOR_EQUAL, true)},
		Success:  []*storev1.TxnOp{delRangeTxnOp("/")},
	}); err != nil {
		t.Fatal(err)
	}
	if kv := get(t, s, "other", "secret"); string(kv.GetValue()) != "theirs" {
		t.Errorf("other's key is now %v", kv)
	}
	if kv := get(t, s, "counter-x", "secret"); string(kv.GetValue()) != "neighbour's" {
		t.Errorf("counter-x's key is now %v", kv)
	}
}

func TestBindRateLimit(t *testing.T) {
	s := newMemStore(t)
	c := boundClient(t, s, Binding{Namespace: "counter", Rate: 0.001, Burst: 3})
	ctx := testenv.Context(t, 20*time.Second)
	for i := range 3 {
		if _, err := c.Get(ctx, &storev1.GetRequest{Key: []byte("k")}); err != nil {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
	}
	_, err := c.Put(ctx, &storev1.PutRequest{Key: []byte("k")})
	wantCode(t, err, codes.ResourceExhausted, `"counter"`, "0.001 requests/s", "burst 3")
	if get(t, s, "counter", "k") != nil {
		t.Error("a rate-limited put was applied")
	}
	// Unlimited when Rate is 0.
	free := boundClient(t, s, Binding{Namespace: "free"})
	for range 50 {
		if _, err := free.Get(ctx, &storev1.GetRequest{Key: []byte("k")}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBindInvalidBindingRefusesAll(t *testing.T) {
	s := newMemStore(t)
	for _, ns := range []string{SystemNamespace, "", "Bad", "a\x00b"} {
		t.Run(fmt.Sprintf("%q", ns), func(t *testing.T) {
			c := boundClient(t, s, Binding{Namespace: ns})
			ctx, cancel := context.WithCancel(testenv.Context(t, 20*time.Second))
			defer cancel()
			for method, err := range everyCall(ctx, c, "") {
				t.Run(method, func(t *testing.T) { wantCode(t, err, codes.Internal, "binding is invalid") })
			}
		})
	}
	if get(t, s, SystemNamespace, "secret") != nil {
		t.Error("an invalid binding wrote to _sys")
	}
}
