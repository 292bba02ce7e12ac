package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/plughost/plughost/sdk"
	"github.com/plughost/plughost/sdk/sdktest"
	"google.golang.org/grpc"
)

// bare is a plugin with no services: these tests use only its Store.
type bare struct{}

func (bare) Register(grpc.ServiceRegistrar) {}

func testStore(t *testing.T) (context.Context, sdk.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	h := sdktest.Start(t, sdk.Info{Name: "storetest", Version: "1.0.0"}, bare{})
	return ctx, h.Store()
}

func TestStoreGetPut(t *testing.T) {
	ctx, st := testStore(t)
	kv, err := st.Get(ctx, "a")
	if !errors.Is(err, sdk.ErrNotFound) || kv.ModRevision != 0 {
		t.Fatalf("get missing: %+v, %v; want ErrNotFound", kv, err)
	}
	put, err := st.Put(ctx, "a", []byte("1"), sdk.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if put.Key != "a" || string(put.Value) != "1" || put.ModRevision == 0 || put.CreateRevision != put.ModRevision || put.Version != 1 {
		t.Fatalf("put returned %+v", put)
	}
	for _, c := range []sdk.Consistency{sdk.Linearizable, sdk.Session, sdk.Stale} {
		got, err := st.WithConsistency(c).Get(ctx, "a")
		if err != nil || string(got.Value) != "1" || got.ModRevision != put.ModRevision {
			t.Fatalf("%v get: %+v, %v", c, got, err)
		}
	}
	again, err := st.Put(ctx, "a", []byte("2"), sdk.PutOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if again.Version != 2 || again.CreateRevision != put.CreateRevision || again.ModRevision <= put.ModRevision {
		t.Fatalf("second put: %+v after %+v", again, put)
	}
	if until := time.Until(again.ExpiresAt); until < 59*time.Minute || until > time.Hour+time.Minute {
		t.Fatalf("TTL of an hour expires in %v", until)
	}
	if _, err := st.Put(ctx, "a", nil, sdk.PutOptions{TTL: -time.Second}); err == nil {
		t.Fatal("negative TTL accepted")
	}
}

func TestStoreConflict(t *testing.T) {
	ctx, st := testStore(t)
	var missing sdk.KV
	first, err := st.Put(ctx, "k", []byte("v1"), sdk.PutOptions{IfModRevision: &missing.ModRevision})
	if err != nil {
		t.Fatalf("create-only put of a missing key: %v", err)
	}
	if _, err := st.Put(ctx, "k", []byte("v2"), sdk.PutOptions{IfModRevision: &missing.ModRevision}); !errors.Is(err, sdk.ErrConflict) {
		t.Fatalf("create-only put of an existing key: %v, want ErrConflict", err)
	}
	second, err := st.Put(ctx, "k", []byte("v2"), sdk.PutOptions{IfModRevision: &first.ModRevision})
	if err != nil {
		t.Fatalf("put at the current revision: %v", err)
	}
	if _, err := st.Put(ctx, "k", []byte("v3"), sdk.PutOptions{IfModRevision: &first.ModRevision}); !errors.Is(err, sdk.ErrConflict) {
		t.Fatalf("put at a stale revision: %v, want ErrConflict", err)
	}
	if _, err := st.Delete(ctx, "k", sdk.DeleteOptions{IfModRevision: &first.ModRevision}); !errors.Is(err, sdk.ErrConflict) {
		t.Fatalf("delete at a stale revision: %v, want ErrConflict", err)
	}
	deleted, err := st.Delete(ctx, "k", sdk.DeleteOptions{IfModRevision: &second.ModRevision})
	if err != nil || !deleted {
		t.Fatalf("delete at the current revision: %v, %v", deleted, err)
	}
	if deleted, err := st.Delete(ctx, "k", sdk.DeleteOptions{}); err != nil || deleted {
		t.Fatalf("delete of a missing key: %v, %v", deleted, err)
	}
}

func TestStoreListAndDeleteRange(t *testing.T) {
	ctx, st := testStore(t)
	var want []string
	for i := range 25 {
		key := fmt.Sprintf("p/%02d", i)
		want = append(want, key)
		if _, err := st.Put(ctx, key, []byte(key), sdk.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Put(ctx, "q/other", []byte("x"), sdk.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	page, err := st.List(ctx, "p/", sdk.ListOptions{Limit: 10, KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.KVs) != 10 || page.Next == "" || page.KVs[0].Key != "p/00" || page.KVs[0].Value != nil {
		t.Fatalf("first page: %d keys, next %q, first %+v", len(page.KVs), page.Next, page.KVs[0])
	}
	page, err = st.List(ctx, "p/", sdk.ListOptions{Limit: 10, Page: page.Next})
	if err != nil || len(page.KVs) != 10 || page.KVs[0].Key != "p/10" || string(page.KVs[0].Value) != "p/10" {
		t.Fatalf("second page: %+v, %v", page, err)
	}

	var got []string
	for kv, err := range sdk.ListAll(ctx, st, "p/") {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, kv.Key)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ListAll: %v", got)
	}

	n, err := st.DeleteRange(ctx, "p/")
	if err != nil || n != 25 {
		t.Fatalf("delete range: %d, %v", n, err)
	}
	if _, err := st.DeleteRange(ctx, ""); err == nil {
		t.Fatal("delete range of everything accepted")
	}
	page, err = st.List(ctx, "", sdk.ListOptions{})
	if err != nil || len(page.KVs) != 1 || page.KVs[0].Key != "q/other" {
		t.Fatalf("after delete range: %+v, %v", page, err)
	}
}

func TestStoreTxn(t *testing.T) {
	ctx, st := testStore(t)
	a, err := st.Put(ctx, "a", []byte("1"), sdk.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.Txn(ctx, sdk.Txn{
		If:   []sdk.Compare{sdk.ValueEquals("a", []byte("1")), sdk.ModRevisionEquals("a", a.ModRevision), sdk.VersionEquals("a", 1), sdk.Exists("a"), sdk.Missing("b")},
		Then: []sdk.Op{sdk.PutOp("b", []byte("2")), sdk.GetOp("a"), sdk.DeleteOp("a")},
		Else: []sdk.Op{sdk.GetOp("a")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Succeeded || len(res.Results) != 3 || !res.Results[0].Found || string(res.Results[0].KV.Value) != "2" ||
		string(res.Results[1].KV.Value) != "1" || res.Results[2].Deleted != 1 || res.Revision <= a.ModRevision {
		t.Fatalf("then branch: %+v", res)
	}

	res, err = st.Txn(ctx, sdk.Txn{
		If:   []sdk.Compare{{Key: "b", Target: sdk.CompareVersion, Op: sdk.Greater, Number: 1}},
		Then: []sdk.Op{sdk.DeleteRangeOp("b")},
		Else: []sdk.Op{sdk.GetOp("b"), sdk.GetOp("a")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Succeeded || len(res.Results) != 2 || string(res.Results[0].KV.Value) != "2" || res.Results[1].Found {
		t.Fatalf("else branch: %+v", res)
	}
	if _, err := st.Txn(ctx, sdk.Txn{Then: []sdk.Op{{Kind: 99, Key: "x"}}}); err == nil {
		t.Fatal("unknown op accepted")
	}
}

func TestStoreWatch(t *testing.T) {
	ctx, st := testStore(t)
	first, err := st.Put(ctx, "w/a", []byte("1"), sdk.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, "other", []byte("x"), sdk.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Delete(ctx, "w/a", sdk.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, "w/b", []byte("2"), sdk.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var got []string
	var last int64
	for ev, err := range st.Watch(wctx, "w/", first.ModRevision) {
		if err != nil {
			t.Fatalf("after events %v: %v", got, err)
		}
		if ev.Revision <= last {
			t.Fatalf("revision %d after %d", ev.Revision, last)
		}
		last = ev.Revision
		got = append(got, ev.Type.String()+" "+ev.KV.Key)
		if len(got) == 3 {
			break
		}
	}
	if want := []string{"put w/a", "delete w/a", "put w/b"}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}

	// A watch ends with ctx's error.
	cancel()
	var errs []error
	for _, err := range st.Watch(wctx, "w/", 0) {
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
		t.Fatalf("watch after cancel yielded %v, want one context.Canceled", errs)
	}
}
