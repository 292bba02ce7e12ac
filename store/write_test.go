package store

import (
	"time"

	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

func TestPut(t *testing.T) {
	s := newMemStore(t, func(c *Config) { c.MaxValueBytes = 1024 })
	base := put(t, s, "app", "existing", "v1")

	tests := []struct {
		name    string
		req     *storev1.PutRequest
		wantErr error
		check   func(t *testing.T, resp *storev1.PutResponse)
	}{
		{
			name: "create",
			req:  &storev1.PutRequest{Namespace: "app", Key: []byte("new"), Value: []byte("x")},
			check: func(t *testing.T, r *storev1.PutResponse) {
				kv := r.GetKv()
				if kv.GetVersion() != 1 || kv.GetCreateRevision() != r.GetRevision() || kv.GetModRevision() != r.GetRevision() {
					t.Errorf("new key = %v at revision %d, want version 1 and both revisions %d", kv, r.GetRevision(), r.GetRevision())
				}
			},
		},
		{
			name: "overwrite bumps version and mod revision",
			req:  &storev1.PutRequest{Namespace: "app", Key: []byte("existing"), Value: []byte("v2")},
			check: func(t *testing.T, r *storev1.PutResponse) {
				kv := r.GetKv()
				if kv.GetVersion() != 2 || kv.GetCreateRevision() != base.GetRevision() || kv.GetModRevision() != r.GetRevision() || r.GetRevision() <= base.GetRevision() {
					t.Errorf("overwritten key = %v at revision %d; created at %d", kv, r.GetRevision(), base.GetRevision())
				}
			},
		},
		{
			name: "binary key bytes round trip",
			req:  &storev1.PutRequest{Namespace: "app", Key: []byte{0, 0xff, '\r', '\n', 0}, Value: []byte{0, 1, 2}},
			check: func(t *testing.T, r *storev1.PutResponse) {
				kv := get(t, s, "app", string([]byte{0, 0xff, '\r', '\n', 0}))
				if !bytes.Equal(kv.GetValue(), []byte{0, 1, 2}) {
					t.Errorf("binary key read back %v", kv)
				}
			},
		},
		{name: "cas 0 on missing key", req: &storev1.PutRequest{Namespace: "app", Key: []byte("fresh"), Value: []byte("x"), ExpectedModRevision: rev(0)}},
		{name: "cas 0 on existing key", req: &storev1.PutRequest{Namespace: "app", Key: []byte("fixed"), Value: []byte("y"), ExpectedModRevision: rev(0)}, wantErr: ErrCASFailed},
		{name: "cas wrong revision", req: &storev1.PutRequest{Namespace: "app", Key: []byte("fixed"), Value: []byte("y"), ExpectedModRevision: rev(1)}, wantErr: ErrCASFailed},
		{name: "cas on missing key with revision", req: &storev1.PutRequest{Namespace: "app", Key: []byte("nope"), Value: []byte("y"), ExpectedModRevision: rev(5)}, wantErr: ErrCASFailed},
		{name: "empty key", req: &storev1.PutRequest{Namespace: "app", Value: []byte("x")}, wantErr: ErrInvalidRequest},
		{name: "key too long", req: &storev1.PutRequest{Namespace: "app", Key: bytes.Repeat([]byte("k"), MaxKeyBytes+1)}, wantErr: ErrInvalidRequest},
		{name: "negative ttl", req: &storev1.PutRequest{Namespace: "app", Key: []byte("k"), TtlMs: -1}, wantErr: ErrInvalidRequest},
		{name: "missing namespace", req: &storev1.PutRequest{Key: []byte("k")}, wantErr: ErrInvalidNamespace},
		{name: "uppercase namespace", req: &storev1.PutRequest{Namespace: "App", Key: []byte("k")}, wantErr: ErrInvalidNamespace},
		{name: "namespace with NUL", req: &storev1.PutRequest{Namespace: "app\x00x", Key: []byte("k")}, wantErr: ErrInvalidNamespace},
		{name: "system namespace", req: &storev1.PutRequest{Namespace: SystemNamespace, Key: []byte("k"), Value: []byte("sys")}},
		{name: "value at limit", req: &storev1.PutRequest{Namespace: "app", Key: []byte("big"), Value: make([]byte, 1024)}},
		{name: "value over limit", req: &storev1.PutRequest{Namespace: "app", Key: []byte("big2"), Value: make([]byte, 1025)}, wantErr: ErrValueTooLarge},
	}
	fixed := put(t, s, "app", "fixed", "unchanged")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.Revision()
			resp, err := s.Put(testenv.Context(t, 20*time.Second), tt.req)
			if tt.wantErr != nil {
				wantErr(t, err, tt.wantErr)
				if tt.wantErr != ErrCASFailed && s.Revision() != before {
					t.Errorf("a refused put moved the revision from %d to %d", before, s.Revision())
				}
				return
			}
			if err != nil {
				t.Fatalf("put: %v", err)
			}
			if tt.check != nil {
				tt.check(t, resp)
			}
		})
	}
	if kv := get(t, s, "app", "fixed"); string(kv.GetValue()) != "unchanged" || kv.GetModRevision() != fixed.GetRevision() {
		t.Errorf("failed CAS puts changed the key: %v", kv)
	}
}

func TestPutCASErrorNamesKeyAndRevisions(t *testing.T) {
	s := newMemStore(t)
	p := put(t, s, "app", "lock", "a")
	_, err := s.Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte("lock"), Value: []byte("b"), ExpectedModRevision: rev(p.GetRevision() - 1)})
	wantErr(t, err, ErrCASFailed)
	for _, want := range []string{`"lock"`, `"app"`, "expected mod revision", "mod revision " + itoa(p.GetRevision())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CAS error %q does not mention %s", err, want)
		}
	}
	// The CAS with the right revision then succeeds.
	if _, err := s.Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte("lock"), Value: []byte("b"), ExpectedModRevision: rev(p.GetRevision())}); err != nil {
		t.Fatalf("CAS with current revision: %v", err)
	}
}

func TestDelete(t *testing.T) {
	s := newMemStore(t)
	tests := []struct {
		name        string
		setup       bool // the key exists first
		expected    func(modRev int64) *int64
		wantErr     error
		wantDeleted bool
	}{
		{name: "missing key", wantDeleted: false},
		{name: "existing key", setup: true, wantDeleted: true},
		{name: "cas at current revision", setup: true, expected: func(r int64) *int64 { return rev(r) }, wantDeleted: true},
		{name: "cas at other revision", setup: true, expected: func(r int64) *int64 { return rev(r + 1) }, wantErr: ErrCASFailed},
		{name: "cas 0 on existing key", setup: true, expected: func(int64) *int64 { return rev(0) }, wantErr: ErrCASFailed},
		{name: "cas 0 on missing key", expected: func(int64) *int64 { return rev(0) }, wantDeleted: false},
		{name: "cas on missing key", expected: func(int64) *int64 { return rev(3) }, wantErr: ErrCASFailed},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "k" + itoa(int64(i))
			var modRev int64
			if tt.setup {
				modRev = put(t, s, "app", key, "v").GetRevision()
			}
			req := &storev1.DeleteRequest{Namespace: "app", Key: []byte(key)}
			if tt.expected != nil {
				req.ExpectedModRevision = tt.expected(modRev)
			}
			resp, err := s.Delete(testenv.Context(t, 20*time.Second), req)
			if tt.wantErr != nil {
				wantErr(t, err, tt.wantErr)
				if tt.setup && get(t, s, "app", key) == nil {
					t.Error("a failed conditional delete removed the key")
				}
				return
			}
			if err != nil {
				t.Fatalf("delete: %v", err)
			}
			if resp.GetDeleted() != tt.wantDeleted {
				t.Errorf("deleted = %v, want %v", resp.GetDeleted(), tt.wantDeleted)
			}
			if get(t, s, "app", key) != nil {
				t.Error("key still exists")
			}
		})
	}
	_, err := s.Delete(testenv.Context(t, 20*time.Second), &storev1.DeleteRequest{Namespace: "app"})
	wantErr(t, err, ErrInvalidRequest)
}

func TestDeleteRange(t *testing.T) {
	s := newMemStore(t)
	for _, k := range []string{"a", "job/1", "job/2", "job/2/x", "jobs", "joc", "\xff\xff", "\xff\xff\x01"} {
		put(t, s, "app", k, "v")
	}
	// A namespace whose name extends "app" must not be touched.
	put(t, s, "app-b", "job/1", "v")

	tests := []struct {
		prefix      string
		wantDeleted int64
		wantLeft    []string
	}{
		{prefix: "job/", wantDeleted: 3, wantLeft: []string{"a", "jobs", "joc", "\xff\xff", "\xff\xff\x01"}},
		{prefix: "nothing", wantDeleted: 0, wantLeft: []string{"a", "jobs", "joc", "\xff\xff", "\xff\xff\x01"}},
		{prefix: "\xff\xff", wantDeleted: 2, wantLeft: []string{"a", "jobs", "joc"}},
		{prefix: "j", wantDeleted: 2, wantLeft: []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			resp, err := s.DeleteRange(testenv.Context(t, 20*time.Second), &storev1.DeleteRangeRequest{Namespace: "app", Prefix: []byte(tt.prefix)})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetDeleted() != tt.wantDeleted {
				t.Errorf("deleted %d, want %d", resp.GetDeleted(), tt.wantDeleted)
			}
			var left []string
			for _, kv := range listAll(t, s, "app") {
				left = append(left, string(kv.GetKey()))
			}
			if strings.Join(left, ",") != strings.Join(tt.wantLeft, ",") {
				t.Errorf("left %q, want %q", left, tt.wantLeft)
			}
		})
	}
	if get(t, s, "app-b", "job/1") == nil {
		t.Error("DeleteRange in app removed a key of app-b")
	}
	_, err := s.DeleteRange(testenv.Context(t, 20*time.Second), &storev1.DeleteRangeRequest{Namespace: "app"})
	wantErr(t, err, ErrInvalidRequest)
}

func cmpOp(key string, op storev1.CompareOperator, target any) *storev1.Compare {
	c := &storev1.Compare{Key: []byte(key), Operator: op}
	switch v := target.(type) {
	case string:
		c.Target = &storev1.Compare_Value{Value: []byte(v)}
	case modRevision:
		c.Target = &storev1.Compare_ModRevision{ModRevision: int64(v)}
	case version:
		c.Target = &storev1.Compare_Version{Version: int64(v)}
	case bool:
		c.Target = &storev1.Compare_Exists{Exists: v}
	}
	return c
}

type (
	modRevision int64
	version     int64
)

func TestTxnCompares(t *testing.T) {
	s := newMemStore(t)
	put(t, s, "app", "k", "l")
	r := put(t, s, "app", "k", "m").GetRevision() // value "m", version 2, mod revision r

	const (
		unspec = storev1.CompareOperator_COMPARE_OPERATOR_UNSPECIFIED
		eq     = storev1.CompareOperator_COMPARE_OPERATOR_EQUAL
		ne     = storev1.CompareOperator_COMPARE_OPERATOR_NOT_EQUAL
		gt     = storev1.CompareOperator_COMPARE_OPERATOR_GREATER
		lt     = storev1.CompareOperator_COMPARE_OPERATOR_LESS
	)
	tests := []struct {
		name string
		cmp  *storev1.Compare
		want bool
	}{
		{"value equal", cmpOp("k", eq, "m"), true},
		{"value unspecified means equal", cmpOp("k", unspec, "m"), true},
		{"value unspecified unequal", cmpOp("k", unspec, "n"), false},
		{"value not equal", cmpOp("k", ne, "m"), false},
		{"value not equal other", cmpOp("k", ne, "z"), true},
		{"value greater", cmpOp("k", gt, "a"), true},
		{"value not greater", cmpOp("k", gt, "z"), false},
		{"value equal is not greater", cmpOp("k", gt, "m"), false},
		{"value less", cmpOp("k", lt, "z"), true},
		{"value not less", cmpOp("k", lt, "m"), false},
		{"value of missing key never equal", cmpOp("missing", eq, ""), false},
		{"value of missing key not equal", cmpOp("missing", ne, "x"), true},
		{"value of missing key not greater", cmpOp("missing", gt, ""), false},
		{"value of missing key not less", cmpOp("missing", lt, "z"), false},
		{"mod revision equal", cmpOp("k", eq, modRevision(r)), true},
		{"mod revision not equal", cmpOp("k", ne, modRevision(r)), false},
		{"mod revision greater", cmpOp("k", gt, modRevision(r-1)), true},
		{"mod revision equal is not greater", cmpOp("k", gt, modRevision(r)), false},
		{"mod revision less", cmpOp("k", lt, modRevision(r+1)), true},
		{"mod revision less fails", cmpOp("k", lt, modRevision(r)), false},
		{"mod revision of missing key is 0", cmpOp("missing", eq, modRevision(0)), true},
		{"version equal", cmpOp("k", eq, version(2)), true},
		{"version greater", cmpOp("k", gt, version(1)), true},
		{"version equal is not greater", cmpOp("k", gt, version(2)), false},
		{"version not equal", cmpOp("k", ne, version(2)), false},
		{"version less fails", cmpOp("k", lt, version(2)), false},
		{"version of missing key is 0", cmpOp("missing", eq, version(0)), true},
		{"exists", cmpOp("k", eq, true), true},
		{"exists on missing", cmpOp("missing", eq, true), false},
		{"not exists on missing", cmpOp("missing", eq, false), true},
		{"exists not equal", cmpOp("k", ne, false), true},
		{"exists unspecified", cmpOp("k", unspec, true), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.Txn(testenv.Context(t, 20*time.Second), &storev1.TxnRequest{
				Namespace: "app",
				Compares:  []*storev1.Compare{tt.cmp},
				Success:   []*storev1.TxnOp{getTxnOp("k")},
				Failure:   []*storev1.TxnOp{getTxnOp("k"), getTxnOp("k")},
			})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetSucceeded() != tt.want {
				t.Errorf("succeeded = %v, want %v", resp.GetSucceeded(), tt.want)
			}
			wantResults := 1
			if !tt.want {
				wantResults = 2
			}
			if len(resp.GetResults()) != wantResults {
				t.Errorf("%d results, want %d (the branch that ran)", len(resp.GetResults()), wantResults)
			}
		})
	}

	invalidCompares := []struct {
		name string
		cmp  *storev1.Compare
	}{
		{"no target", &storev1.Compare{Key: []byte("k")}},
		{"no key", cmpOp("", eq, "m")},
		{"exists greater", cmpOp("k", gt, true)},
		{"exists less", cmpOp("k", lt, true)},
		{"unknown operator", cmpOp("k", 42, "m")},
	}
	for _, tt := range invalidCompares {
		t.Run("invalid "+tt.name, func(t *testing.T) {
			_, err := s.Txn(testenv.Context(t, 20*time.Second), &storev1.TxnRequest{Namespace: "app", Compares: []*storev1.Compare{tt.cmp}})
			wantErr(t, err, ErrInvalidRequest)
		})
	}
}

func putTxnOp(key, value string, ttl int64) *storev1.TxnOp {
	return &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: []byte(key), Value: []byte(value), TtlMs: ttl}}}
}
func getTxnOp(key string) *storev1.TxnOp {
	return &storev1.TxnOp{Op: &storev1.TxnOp_Get{Get: &storev1.TxnGet{Key: []byte(key)}}}
}
func delTxnOp(key string) *storev1.TxnOp {
	return &storev1.TxnOp{Op: &storev1.TxnOp_Delete{Delete: &storev1.TxnDelete{Key: []byte(key)}}}
}
func delRangeTxnOp(prefix string) *storev1.TxnOp {
	return &storev1.TxnOp{Op: &storev1.TxnOp_DeleteRange{DeleteRange: &storev1.TxnDeleteRange{Prefix: []byte(prefix)}}}
}

func TestTxnBranches(t *testing.T) {
	s := newMemStore(t)
	put(t, s, "app", "old", "o")
	put(t, s, "app", "tmp/1", "t")
	put(t, s, "app", "tmp/2", "t")

	ops := []*storev1.TxnOp{
		putTxnOp("a", "1", 0),
		getTxnOp("a"), // sees the put before it
		delTxnOp("old"),
		delRangeTxnOp("tmp/"),
		getTxnOp("old"), // sees the delete before it
		delTxnOp("never"),
	}
	resp, err := s.Txn(testenv.Context(t, 20*time.Second), &storev1.TxnRequest{
		Namespace: "app",
		Compares:  []*storev1.Compare{cmpOp("old", storev1.CompareOperator_COMPARE_OPERATOR_EQUAL, "o")},
		Success:   ops,
		Failure:   []*storev1.TxnOp{putTxnOp("failure-ran", "x", 0)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetSucceeded() {
		t.Fatal("compare on old=o failed")
	}
	res := resp.GetResults()
	if len(res) != len(ops) {
		t.Fatalf("%d results for %d ops", len(res), len(ops))
	}
	rv := resp.GetRevision()
	if kv := res[0].GetKv(); string(kv.GetValue()) != "1" || kv.GetModRevision() != rv {
		t.Errorf("put result %v, want value 1 at revision %d", kv, rv)
	}
	if kv := res[1].GetKv(); string(kv.GetValue()) != "1" {
		t.Errorf("get after put in the same txn = %v", kv)
	}
	if res[2].GetDeleted() != 1 || res[3].GetDeleted() != 2 || res[4].GetKv() != nil || res[5].GetDeleted() != 0 {
		t.Errorf("results = %v", res)
	}
	if get(t, s, "app", "failure-ran") != nil {
		t.Error("failure branch ran too")
	}
	if got := listAll(t, s, "app"); len(got) != 1 || string(got[0].GetKey()) != "a" {
		t.Errorf("namespace after txn = %v, want only a", got)
	}

	// Now the compare fails: only the failure branch runs.
	resp, err = s.Txn(testenv.Context(t, 20*time.Second), &storev1.TxnRequest{
		Namespace: "app",
		Compares:  []*storev1.Compare{cmpOp("old", storev1.CompareOperator_COMPARE_OPERATOR_EQUAL, true)},
		Success:   []*storev1.TxnOp{putTxnOp("success-ran", "x", 0)},
		Failure:   []*storev1.TxnOp{putTxnOp("failure-ran", "x", 0)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetSucceeded() || get(t, s, "app", "failure-ran") == nil || get(t, s, "app", "success-ran") != nil {
		t.Errorf("failed compare: succeeded=%v", resp.GetSucceeded())
	}

	// The first failing compare decides; all must hold.
	resp, err = s.Txn(testenv.Context(t, 20*time.Second), &storev1.TxnRequest{
		Namespace: "app",
		Compares: []*storev1.Compare{
			cmpOp("a", storev1.CompareOperator_COMPARE_OPERATOR_EQUAL, true),
			cmpOp("a", storev1.CompareOperator_COMPARE_OPERATOR_EQUAL, "wrong"),
		},
	})
	if err != nil || resp.GetSucceeded() {
		t.Errorf("two compares, second false: succeeded=%v err=%v", resp.GetSucceeded(), err)
	}
}

func TestTxnInvalidWritesNothing(t *testing.T) {
	s := newMemStore(t, func(c *Config) { c.MaxValueBytes = 10 })
	tests := []struct {
		name    string
		ops     []*storev1.TxnOp
		wantErr error
	}{
		{"key written twice", []*storev1.TxnOp{putTxnOp("k", "1", 0), putTxnOp("k", "2", 0)}, ErrInvalidRequest},
		{"put and delete of one key", []*storev1.TxnOp{putTxnOp("k", "1", 0), delTxnOp("k")}, ErrInvalidRequest},
		{"put under a deleted prefix", []*storev1.TxnOp{delRangeTxnOp("k"), putTxnOp("k/1", "1", 0)}, ErrInvalidRequest},
		{"overlapping prefixes", []*storev1.TxnOp{delRangeTxnOp("a"), delRangeTxnOp("ab")}, ErrInvalidRequest},
		{"empty prefix", []*storev1.TxnOp{putTxnOp("z", "1", 0), delRangeTxnOp("")}, ErrInvalidRequest},
		{"empty op", []*storev1.TxnOp{putTxnOp("z", "1", 0), {}}, ErrInvalidRequest},
		{"empty key", []*storev1.TxnOp{putTxnOp("z", "1", 0), putTxnOp("", "1", 0)}, ErrInvalidRequest},
		{"negative ttl", []*storev1.TxnOp{putTxnOp("z", "1", -5)}, ErrInvalidRequest},
		{"value too large", []*storev1.TxnOp{putTxnOp("z", "1", 0), putTxnOp("y", "01234567890", 0)}, ErrValueTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.Revision()
			_, err := s.Txn(testenv.Context(t, 20*time.Second), &storev1.TxnRequest{Namespace: "app", Success: tt.ops})
			wantErr(t, err, tt.wantErr)
			if s.Revision() != before || len(listAll(t, s, "app")) != 0 {
				t.Errorf("refused txn changed the store")
			}
		})
	}
	// Gets may repeat a key, and read a key a write touches.
	if _, err := s.Txn(testenv.Context(t, 20*time.Second), &storev1.TxnRequest{Namespace: "app", Success: []*storev1.TxnOp{getTxnOp("k"), putTxnOp("k", "1", 0), getTxnOp("k")}}); err != nil {
		t.Errorf("gets around a put: %v", err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
