package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/local"
)

func TestQuotaKeys(t *testing.T) {
	s := newMemStore(t, func(c *Config) {
		c.DefaultQuota = Quota{MaxKeys: 3}
		c.Quotas = map[string]Quota{"free": {}}
	})
	for _, k := range []string{"a", "b", "c"} {
		put(t, s, "app", k, "v")
	}
	_, err := s.Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte("d"), Value: []byte("v")})
	wantErr(t, err, ErrQuotaExceeded)
	if want := `store: namespace "app" quota exceeded: 4 keys > max 3 keys (raise quotas.app.max_keys, or default_quota.max_keys for every namespace, in the agent config)`; err.Error() != want {
		t.Errorf("quota error\n got %q\nwant %q", err, want)
	}
	if get(t, s, "app", "d") != nil {
		t.Fatal("the refused key was written")
	}
	put(t, s, "app", "a", "overwrite is not a new key")
	if _, err := s.Delete(testenv.Context(t, 20*time.Second), &storev1.DeleteRequest{Namespace: "app", Key: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	put(t, s, "app", "d", "room again")

	// Other namespaces have their own count; an override replaces the
	// default.
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		put(t, s, "free", k, "v")
	}
	for _, k := range []string{"a", "b", "c"} {
		put(t, s, "other", k, "v")
	}
}

func TestQuotaBytes(t *testing.T) {
	s := newMemStore(t, func(c *Config) { c.Quotas = map[string]Quota{"app": {MaxBytes: 100}} })
	put(t, s, "app", "k1", strings.Repeat("x", 58)) // 60 bytes
	_, err := s.Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte("k2"), Value: []byte(strings.Repeat("x", 48))})
	wantErr(t, err, ErrQuotaExceeded)
	if !strings.Contains(err.Error(), "110 bytes > max 100 bytes") {
		t.Errorf("quota error does not name the bytes: %v", err)
	}
	put(t, s, "app", "k1", "small")                 // shrinking is fine
	put(t, s, "app", "k2", strings.Repeat("x", 48)) // now it fits: 7 + 50
	_, err = s.Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte("k1"), Value: []byte(strings.Repeat("x", 60))})
	wantErr(t, err, ErrQuotaExceeded) // growing a value counts too
	if kv := get(t, s, "app", "k1"); string(kv.GetValue()) != "small" {
		t.Errorf("refused overwrite changed the value to %q", kv.GetValue())
	}
}

func TestQuotaRefusesTxnWhole(t *testing.T) {
	s := newMemStore(t, func(c *Config) { c.DefaultQuota = Quota{MaxKeys: 3} })
	put(t, s, "app", "a", "v")
	put(t, s, "app", "b", "v")
	w := startWatch(t, s, &storev1.WatchRequest{Namespace: "app", StartRevision: s.Revision() + 1})
	before := listAll(t, s, "app")

	// One delete and three puts: 2 - 1 + 3 = 4 keys > 3, refused whole.
	_, err := s.Txn(testenv.Context(t, 20*time.Second), &storev1.TxnRequest{Namespace: "app", Success: []*storev1.TxnOp{
		delTxnOp("a"), putTxnOp("c", "v", 0), putTxnOp("d", "v", 0), putTxnOp("e", "v", 0),
	}})
	wantErr(t, err, ErrQuotaExceeded)
	if after := listAll(t, s, "app"); !equalKVs(before, after) {
		t.Fatalf("a refused txn changed the namespace:\nbefore %v\nafter  %v", before, after)
	}

	// The same shape within the quota goes through, at one revision.
	resp, err := s.Txn(testenv.Context(t, 20*time.Second), &storev1.TxnRequest{Namespace: "app", Success: []*storev1.TxnOp{
		delTxnOp("a"), putTxnOp("c", "v", 0), putTxnOp("d", "v", 0),
	}})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the txn's events", func() bool { return len(w.responses()) == 1 })
	if r := w.responses()[0]; r.GetRevision() != resp.GetRevision() || len(r.GetEvents()) != 3 {
		t.Errorf("watcher saw %v; the refused txn must leave no events", w.responses())
	}
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.NodeID, good.Dir = "n1", "/tmp/x"
	if err := good.Validate(); err != nil {
		t.Fatalf("default config with node and dir: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no node id", func(c *Config) { c.NodeID = "" }, "NodeID"},
		{"no dir", func(c *Config) { c.Dir = "" }, "Dir"},
		{"no raft addr", func(c *Config) { c.RaftAddr = "" }, "RaftAddr"},
		{"negative value size", func(c *Config) { c.MaxValueBytes = -1 }, "MaxValueBytes"},
		{"huge value size", func(c *Config) { c.MaxValueBytes = 1 << 30 }, "MaxValueBytes"},
		{"negative history", func(c *Config) { c.WatchHistory = -1 }, "WatchHistory"},
		{"negative quota", func(c *Config) { c.DefaultQuota.MaxKeys = -1 }, "DefaultQuota"},
		{"quota for bad namespace", func(c *Config) { c.Quotas = map[string]Quota{"Bad!": {}} }, "Bad!"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error naming %s", err, tt.want)
			}
		})
	}
	mem := Config{InMemory: true}
	if err := mem.Validate(); err != nil {
		t.Errorf("zero in-memory config: %v", err)
	}
}

func TestTxnBytesLimit(t *testing.T) {
	s := newMemStore(t, func(c *Config) { c.MaxValueBytes, c.MaxTxnBytes = 1000, 4000 })
	ops := func(n int) []*storev1.TxnOp {
		var out []*storev1.TxnOp
		for i := range n {
			out = append(out, putTxnOp(fmt.Sprintf("k%d", i), strings.Repeat("v", 900), 0))
		}
		return out
	}
	// Four values of 900 bytes fit; five, each within max_value_bytes,
	// are over max_txn_bytes together.
	if _, err := s.Txn(testenv.Context(t, 20*time.Second), &storev1.TxnRequest{Namespace: "app", Success: ops(4)}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Txn(testenv.Context(t, 20*time.Second), &storev1.TxnRequest{Namespace: "app", Success: ops(5)})
	wantErr(t, err, ErrTxnTooLarge)
	if !strings.Contains(err.Error(), "> max 4000 bytes") || !strings.Contains(err.Error(), "max_txn_bytes") {
		t.Errorf("error does not name the limit and its config key: %v", err)
	}
	st := status.Convert(local.ToStatus(err))
	if st.Code() != codes.ResourceExhausted || storev1.ErrorReason(st.Err()) != storev1.ReasonTxnTooLarge || limitMetadata(st) != "max_txn_bytes" {
		t.Errorf("status %v: want RESOURCE_EXHAUSTED, reason %s, limit max_txn_bytes", st.Proto(), storev1.ReasonTxnTooLarge)
	}
	if got := s.cfg.MaxRequestBytes(); got < 4000 {
		t.Errorf("MaxRequestBytes %d is smaller than a legal transaction", got)
	}
}

func limitMetadata(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetMetadata()[storev1.MetadataLimit]
		}
	}
	return ""
}

func TestWatchLimits(t *testing.T) {
	s := newMemStore(t, func(c *Config) { c.MaxWatches, c.MaxWatchesPerClient = 3, 2 })
	ctx, cancel := context.WithCancel(testenv.Context(t, 20*time.Second))
	defer cancel()
	errs := make(chan error, 10)
	watch := func(client string) (stop func()) {
		wctx, wcancel := context.WithCancel(local.WithClient(ctx, client))
		go func() {
			errs <- s.Watch(wctx, &storev1.WatchRequest{Namespace: "app"}, func(*storev1.WatchResponse) error { return nil })
		}()
		return wcancel
	}
	waitWatchers := func(n int) {
		testenv.Eventually(t, 10*time.Second, fmt.Sprintf("%d watchers", n), func() bool { return s.fsm.Hub().Watchers() == n })
	}
	stopA1 := watch("a")
	watch("a")
	waitWatchers(2)
	refused := func(client, limit string) {
		t.Helper()
		err := s.Watch(local.WithClient(ctx, client), &storev1.WatchRequest{Namespace: "app"}, func(*storev1.WatchResponse) error { return nil })
		wantErr(t, err, ErrTooManyWatches)
		st := status.Convert(local.ToStatus(err))
		if st.Code() != codes.ResourceExhausted || limitMetadata(st) != limit || !strings.Contains(st.Message(), limit) {
			t.Errorf("status %v: want RESOURCE_EXHAUSTED naming %s", st.Proto(), limit)
		}
	}
	refused("a", "max_watches_per_client")
	watch("b")
	waitWatchers(3)
	refused("c", "max_watches")
	// An ended watch frees its place.
	stopA1()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled watch ended with %v", err)
	}
	watch("a")
	waitWatchers(3)
}

func TestExplainMessageSize(t *testing.T) {
	refused := status.Error(codes.ResourceExhausted, "grpc: received message larger than max (66060288 vs. 4259840)")
	err := ExplainMessageSize(refused)
	if status.Code(err) != codes.ResourceExhausted || storev1.ErrorReason(err) != storev1.ReasonMessageTooLarge ||
		!strings.Contains(err.Error(), "4259840") || !strings.Contains(err.Error(), "raise max_txn_bytes") {
		t.Fatalf("explained: %v", err)
	}
	if again := ExplainMessageSize(err); again.Error() != err.Error() {
		t.Errorf("explained twice: %v", again)
	}
	for _, other := range []error{nil, status.Error(codes.ResourceExhausted, "store: quota exceeded"), errors.New("plain")} {
		if got := ExplainMessageSize(other); got != other {
			t.Errorf("ExplainMessageSize(%v) = %v, want it unchanged", other, got)
		}
	}
}

// Clients other than plugins together stop short of the watches kept for
// plugins; plugins may take them.
func TestWatchReserveForPlugins(t *testing.T) {
	s := newMemStore(t, func(c *Config) { c.MaxWatches, c.MaxWatchesPerClient, c.PluginWatchReserve = 4, 10, 2 })
	ctx, cancel := context.WithCancel(testenv.Context(t, 20*time.Second))
	defer cancel()
	watch := func(wctx context.Context) {
		go func() {
			_ = s.Watch(wctx, &storev1.WatchRequest{Namespace: "app"}, func(*storev1.WatchResponse) error { return nil })
		}()
	}
	waitWatchers := func(n int) {
		testenv.Eventually(t, 10*time.Second, fmt.Sprintf("%d watchers", n), func() bool { return s.fsm.Hub().Watchers() == n })
	}
	refused := func(wctx context.Context, limit, says string) {
		t.Helper()
		err := s.Watch(wctx, &storev1.WatchRequest{Namespace: "app"}, func(*storev1.WatchResponse) error { return nil })
		wantErr(t, err, ErrTooManyWatches)
		st := status.Convert(local.ToStatus(err))
		if st.Code() != codes.ResourceExhausted || limitMetadata(st) != limit || !strings.Contains(st.Message(), says) {
			t.Errorf("status %v: want RESOURCE_EXHAUSTED naming %s and saying %q", st.Proto(), limit, says)
		}
	}
	watch(local.WithClient(ctx, "a"))
	watch(local.WithClient(ctx, "b"))
	waitWatchers(2)
	refused(local.WithClient(ctx, "c"), "max_watches", "plugin_watch_reserve")
	watch(local.WithPlugin(ctx, "p1"))
	watch(local.WithPlugin(ctx, "p2"))
	waitWatchers(4)
	refused(local.WithPlugin(ctx, "p3"), "max_watches", "the most max_watches allows")
}
