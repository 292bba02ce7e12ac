package acl

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

func memStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestBootstrapOnceAndTokenLifecycle(t *testing.T) {
	ctx := context.Background()
	st := memStore(t)
	r := NewResolver(st, nil)

	tok, secret, err := Bootstrap(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Bootstrap(ctx, st); !errors.Is(err, ErrBootstrapped) {
		t.Fatalf("second bootstrap: %v, want ErrBootstrapped", err)
	}
	r.Reload(ctx)
	id, err := r.Resolve(secret)
	if err != nil || !id.Authz.Management() || id.AccessorID != tok.AccessorID {
		t.Fatalf("bootstrap token resolves to %+v, %v", id, err)
	}
	// Only a hash of the secret is kept.
	kvs, _, err := listSys(ctx, st, prefixACL)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		if bytes.Contains(kv.GetValue(), []byte(secret)) {
			t.Fatalf("%s holds the secret", kv.GetKey())
		}
	}

	if err := createPolicy(ctx, st, &Policy{Name: "counter-op", Rules: `plugin "counter" { policy = "write" }`}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := createToken(ctx, st, "ci", []string{"no-such-policy"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("token with a missing policy: %v", err)
	}
	op, opSecret, err := createToken(ctx, st, "ci", []string{"counter-op"})
	if err != nil {
		t.Fatal(err)
	}
	r.Reload(ctx)
	id, err = r.Resolve(opSecret)
	if err != nil || id.Authz.Plugin("counter") != Write || id.Authz.Plugin("echo") != Deny || id.Actor() != "ci ("+op.AccessorID[:8]+")" {
		t.Fatalf("policy token: %+v %v", id, err)
	}
	if err := deletePolicy(ctx, st, r.state.Load(), "counter-op"); !errors.Is(err, ErrInUse) {
		t.Fatalf("deleting a policy in use: %v", err)
	}
	if err := deleteToken(ctx, st, op); err != nil {
		t.Fatal(err)
	}
	r.Reload(ctx)
	if _, err := r.Resolve(opSecret); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("deleted token resolves: %v", err)
	}
	if _, err := r.Resolve(""); !errors.Is(err, ErrNoToken) {
		t.Fatalf("no token: %v", err)
	}
}

// Hostile records in _sys are ignored: they neither crash the resolver nor
// stand for a token or a policy.
func TestHostileRecordsAreIgnored(t *testing.T) {
	ctx := context.Background()
	st := memStore(t)
	_, secret, err := Bootstrap(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	evil := "11111111-2222-4333-8444-555555555555"
	good := hashHex(evil)
	for key, val := range map[string]string{
		prefixToken + "not-a-uuid":      `{"accessor_id":"not-a-uuid","secret_sha256":"` + good + `","policies":["global-management"]}`,
		prefixToken + "x":               `{"accessor_id":"` + evil + `","secret_sha256":"` + good + `","policies":["global-management"]}`,
		prefixToken + evil:              `{"accessor_id":"` + evil + `","secret_sha256":"zz","policies":["global-management"]}`,
		prefixToken + "bad-json":        `{"accessor_id":`,
		prefixPolicy + "../x":           `{"name":"../x","rules":"acl = \"write\""}`,
		prefixPolicy + "p":              `{"name":"p","rules":"acl = \"root\""}`,
		prefixPolicy + GlobalManagement: `{"name":"global-management","rules":""}`,
		keyServerToken:                  `{"secret_id":42}`,
		prefixSecret + good:             `"` + evil + `"`,
	} {
		if _, err := st.Put(ctx, &storev1.PutRequest{Namespace: SystemNamespace, Key: []byte(key), Value: []byte(val)}); err != nil {
			t.Fatal(err)
		}
	}
	r := NewResolver(st, nil)
	r.Reload(ctx)
	if _, err := r.Resolve(evil); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("a hostile record stands for a token: %v", err)
	}
	if id, err := r.Resolve(secret); err != nil || !id.Authz.Management() {
		t.Fatalf("the real token no longer resolves: %v", err)
	}
	if _, ok := r.state.Load().policies["p"]; ok {
		t.Fatal("a policy with invalid rules was taken")
	}
}

// A revoked token stops resolving as soon as the watch sees the delete.
func TestRevocationReachesTheCopy(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := memStore(t)
	r := NewResolver(st, nil)
	go r.Run(ctx)
	tok, secret, err := Bootstrap(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the token to resolve", func() bool { _, err := r.Resolve(secret); return err == nil })
	if err := deleteToken(ctx, st, tok); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the revoked token to stop resolving", func() bool { _, err := r.Resolve(secret); return errors.Is(err, ErrTokenNotFound) })
}

// A node whose store holds no ACL records yet (restarted without a
// leader, its log past the last snapshot not applied) resolves tokens from
// the records it last read.
func TestCacheFileStandsInForAnEmptyStore(t *testing.T) {
	ctx := context.Background()
	cache := filepath.Join(t.TempDir(), "acl-cache.json")
	st := memStore(t)
	r := NewResolver(st, nil)
	r.SetCacheFile(cache)
	_, secret, err := Bootstrap(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	r.Reload(ctx)
	if fi, err := os.Stat(cache); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v", err)
	}
	empty := NewResolver(memStore(t), nil)
	empty.SetCacheFile(cache)
	empty.Reload(ctx)
	if id, err := empty.Resolve(secret); err != nil || !id.Authz.Management() {
		t.Fatalf("from the cache: %v", err)
	}
}

// A token the store holds but the copy has not caught up with yet (no
// watch event, no Reload) resolves: the miss reads the records again.
func TestNewTokenResolvesBeforeTheWatchBringsIt(t *testing.T) {
	ctx := context.Background()
	st := memStore(t)
	r := NewResolver(st, nil)
	r.Reload(ctx)
	tok, secret, err := Bootstrap(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	id, err := r.Resolve(secret)
	if err != nil || id.AccessorID != tok.AccessorID {
		t.Fatalf("a token made a moment ago resolves to %+v, %v", id, err)
	}
	if _, err := r.Resolve("not-a-token"); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("unknown token: %v", err)
	}
}

// Once the store held ACL records, the cache never stands in for them
// again: records deleted from the store (every token, here) are gone, from
// the copy and from the cache file.
func TestCacheFileKeepsNoDeletedToken(t *testing.T) {
	ctx := context.Background()
	cache := filepath.Join(t.TempDir(), "acl-cache.json")
	st := memStore(t)
	r := NewResolver(st, nil)
	r.SetCacheFile(cache)
	_, secret, err := Bootstrap(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	r.Reload(ctx)
	if _, err := r.Resolve(secret); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Txn(ctx, &storev1.TxnRequest{Namespace: SystemNamespace, Success: []*storev1.TxnOp{
		{Op: &storev1.TxnOp_DeleteRange{DeleteRange: &storev1.TxnDeleteRange{Prefix: []byte(prefixACL)}}}}}); err != nil {
		t.Fatal(err)
	}
	r.Reload(ctx)
	if _, err := r.Resolve(secret); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("a token deleted from the store still resolves: %v", err)
	}
	b, err := os.ReadFile(cache)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(hashHex(secret))) {
		t.Fatalf("the cache file still holds the deleted token:\n%s", b)
	}
}
