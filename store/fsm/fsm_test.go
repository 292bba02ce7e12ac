package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

func newFSM(t testing.TB) *FSM {
	t.Helper()
	f, err := New(Config{WatchHistory: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func logOf(t testing.TB, index uint64, c *Command) Entry {
	t.Helper()
	data, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return Entry{Index: index, Term: 1, Command: true, Data: data}
}

func txnPut(ns, key, value string, ttl int64) *Command {
	return &Command{Op: OpTxn, NowMs: 1000, Txn: &storev1.TxnRequest{Namespace: ns, Success: []*storev1.TxnOp{
		{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: []byte(key), Value: []byte(value), TtlMs: ttl}}},
	}}}
}

func TestCommandRoundTrip(t *testing.T) {
	cmds := []*Command{
		{Op: OpNoop},
		{Op: OpTxn, NowMs: 1234, Quota: Quota{MaxBytes: 10, MaxKeys: 2}, Txn: txnPut("app", "k", "v", 5).Txn},
		{Op: OpExpire, Expire: []ExpireKey{{Namespace: "a", Key: []byte{0, 1}, ModRevision: 7}, {Namespace: "b", Key: []byte("x"), ModRevision: 9}}},
		{Op: OpRestore, Snapshot: []byte("file")},
		restoreOf("app", "rollsnap/app/0000000001/", []byte("dump")),
	}
	for _, c := range cmds {
		data, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeCommand(data)
		if err != nil {
			t.Fatalf("decode op %d: %v", c.Op, err)
		}
		if got.Op != c.Op || got.NowMs != c.NowMs || got.Quota != c.Quota || !proto.Equal(got.Txn, c.Txn) ||
			!bytes.Equal(got.Snapshot, c.Snapshot) || fmt.Sprint(got.Expire) != fmt.Sprint(c.Expire) ||
			fmt.Sprint(got.Restore) != fmt.Sprint(c.Restore) {
			t.Errorf("round trip of %+v gave %+v", c, got)
		}
		// A cut-off command never decodes, or panics, when its last field
		// is what is cut.
		if c.Op == OpTxn || c.Op == OpRestore || c.Op == OpRestoreNamespace {
			for i := range len(data) {
				if _, err := DecodeCommand(data[:i]); err == nil {
					t.Errorf("op %d cut to %d of %d bytes decoded", c.Op, i, len(data))
				}
			}
		}
	}
	for name, data := range map[string][]byte{
		"empty":          nil,
		"unknown format": {9, 8, 1},
		"unknown op":     {commandFormat, 8, 99},
		"unknown field":  {commandFormat, 8, 1, 0x78, 1},
		"txn missing":    {commandFormat, 8, byte(OpTxn)},
	} {
		if _, err := DecodeCommand(data); !errors.Is(err, errBadCommand) {
			t.Errorf("%s: decode error %v", name, err)
		}
	}
}

func TestKeyEncodingKeepsOrderAndNamespaces(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	keys := make([][]byte, 500)
	for i := range keys {
		k := make([]byte, r.IntN(6))
		for j := range k {
			k[j] = []byte{0, 1, 0xfe, 0xff, 'a', '-'}[r.IntN(6)]
		}
		keys[i] = k
	}
	byBytes := slices.Clone(keys)
	slices.SortFunc(byBytes, bytes.Compare)
	byEncoding := slices.Clone(keys)
	sort.SliceStable(byEncoding, func(i, j int) bool { return dataKey("ns", byEncoding[i]) < dataKey("ns", byEncoding[j]) })
	for i := range keys {
		if !bytes.Equal(byBytes[i], byEncoding[i]) {
			t.Fatalf("order differs at %d: %q vs %q", i, byBytes[i], byEncoding[i])
		}
	}
	// No key of one namespace falls inside another's bounds.
	namespaces := []string{"a", "a-b", "ab", "a0", "_sys", "b"}
	for _, ns := range namespaces {
		lo, hi := namespaceBounds(ns)
		for _, other := range namespaces {
			for _, k := range keys {
				dk := dataKey(other, k)
				if inside := dk >= lo && dk < hi; inside != (ns == other) {
					t.Fatalf("key %q of %q inside bounds of %q: %v", k, other, ns, inside)
				}
				gotNS, gotKey, ok := splitDataKey(dk)
				if !ok || gotNS != other || gotKey != string(k) {
					t.Fatalf("split %q = %q %q %v", dk, gotNS, gotKey, ok)
				}
			}
		}
	}
	for _, ms := range []int64{0, 1, 255, 256, 1 << 40} {
		at, ns, key, ok := splitExpiryKey(expiryKey(ms, "app", "\x00k"))
		if !ok || at != ms || ns != "app" || key != "\x00k" {
			t.Errorf("expiry key %d round trip: %d %q %q %v", ms, at, ns, key, ok)
		}
		if expiryKey(ms, "z", "z") >= expiryKey(ms+1, "a", "a") {
			t.Errorf("expiry keys of %d and %d out of order", ms, ms+1)
		}
	}
	if PrefixEnd([]byte{'a', 0xff}) == nil || !bytes.Equal(PrefixEnd([]byte{'a', 0xff}), []byte{'b'}) || PrefixEnd([]byte{0xff, 0xff}) != nil {
		t.Error("PrefixEnd")
	}
}

// randomCommands is a seeded mix of every command over a few keys.
func randomCommands(t testing.TB, n int, seed uint64) []*Command {
	r := rand.New(rand.NewPCG(seed, seed))
	key := func() []byte { return []byte{byte('a' + r.IntN(6)), byte(r.IntN(3))} }
	var out []*Command
	for range n {
		ns := []string{"one", "two"}[r.IntN(2)]
		var ops []*storev1.TxnOp
		for range 1 + r.IntN(3) {
			switch r.IntN(5) {
			case 0, 1:
				ops = append(ops, &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: key(), Value: bytes.Repeat([]byte{'v'}, r.IntN(20)), TtlMs: int64(r.IntN(2) * 500)}}})
			case 2:
				ops = append(ops, &storev1.TxnOp{Op: &storev1.TxnOp_Delete{Delete: &storev1.TxnDelete{Key: key()}}})
			case 3:
				ops = append(ops, &storev1.TxnOp{Op: &storev1.TxnOp_Get{Get: &storev1.TxnGet{Key: key()}}})
			case 4:
				ops = append(ops, &storev1.TxnOp{Op: &storev1.TxnOp_DeleteRange{DeleteRange: &storev1.TxnDeleteRange{Prefix: key()[:1]}}})
			}
		}
		c := &Command{Op: OpTxn, NowMs: int64(1000 + len(out)), Quota: Quota{MaxKeys: int64(3 + r.IntN(6))}, Txn: &storev1.TxnRequest{
			Namespace: ns,
			Compares:  []*storev1.Compare{{Key: key(), Operator: storev1.CompareOperator(r.IntN(5)), Target: &storev1.Compare_Version{Version: int64(r.IntN(3))}}},
			Success:   ops,
			Failure:   ops[:1],
		}}
		if r.IntN(10) == 0 {
			c = &Command{Op: OpExpire, Expire: []ExpireKey{{Namespace: ns, Key: key(), ModRevision: int64(r.IntN(len(out) + 1))}}}
		}
		out = append(out, c)
	}
	return out
}

func capture(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Capture()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.Write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestApplyIsDeterministic(t *testing.T) {
	cmds := randomCommands(t, 400, 7)
	logs := make([]Entry, len(cmds))
	for i, c := range cmds {
		logs[i] = logOf(t, uint64(i+1), c)
	}
	one, batched, restored := newFSM(t), newFSM(t), newFSM(t)
	var results []string
	kinds := make(map[string]int)
	for _, l := range logs[:200] {
		r := one.Apply(l)[0]
		results = append(results, fmt.Sprint(r.Txn, r.Err))
		switch {
		case r.Err != nil:
			kinds["refused"]++
		case r.Txn == nil:
			kinds["expire"]++
		case r.Txn.GetSucceeded():
			kinds["succeeded"]++
		default:
			kinds["failed"]++
		}
	}
	// The mix must cover quota refusals, both branches and expiries.
	for _, k := range []string{"refused", "expire", "succeeded", "failed"} {
		if kinds[k] == 0 {
			t.Fatalf("no %s commands in the mix: %v", k, kinds)
		}
	}
	// The same log in uneven batches gives the same state and results.
	r := rand.New(rand.NewPCG(3, 3))
	for i := 0; i < 200; {
		n := min(200-i, 1+r.IntN(40))
		for j, res := range batched.Apply(logs[i : i+n]...) {
			if got := fmt.Sprint(res.Txn, res.Err); got != results[i+j] {
				t.Fatalf("entry %d: batched result %s, single %s", i+j+1, got, results[i+j])
			}
		}
		i += n
	}
	if !bytes.Equal(capture(t, one), capture(t, batched)) {
		t.Fatal("batched apply diverged from single apply")
	}
	// A snapshot restored elsewhere continues identically.
	snap, err := one.Capture()
	if err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	if err := snap.Write(&file); err != nil {
		t.Fatal(err)
	}
	if err := restored.Restore(io.NopCloser(&file)); err != nil {
		t.Fatal(err)
	}
	for _, f := range []*FSM{one, batched, restored} {
		f.Apply(logs[200:]...)
	}
	want := capture(t, one)
	if !bytes.Equal(want, capture(t, batched)) || !bytes.Equal(want, capture(t, restored)) {
		t.Fatal("replicas diverged after the snapshot")
	}
	for _, ns := range []string{"one", "two"} {
		if one.Usage(ns) != restored.Usage(ns) {
			t.Errorf("usage of %s: %+v live, %+v restored", ns, one.Usage(ns), restored.Usage(ns))
		}
	}
	if one.Applied() != int64(len(logs)) {
		t.Errorf("applied %d, want %d", one.Applied(), len(logs))
	}
}

func TestExpireOnlyUnchangedKeys(t *testing.T) {
	f := newFSM(t)
	f.Apply(
		logOf(t, 1, txnPut("app", "k", "v", 100)),
		logOf(t, 2, txnPut("app", "k", "v2", 100)), // rewritten: its TTL now belongs to revision 2
		logOf(t, 3, txnPut("app", "j", "v", 100)),
	)
	due, err := f.DueExpiries(1100, 10)
	// Both are due at 1100; within one time they come in key order.
	if err != nil || len(due) != 2 || string(due[0].Key) != "j" || due[0].ModRevision != 3 || string(due[1].Key) != "k" || due[1].ModRevision != 2 {
		t.Fatalf("due = %+v, %v", due, err)
	}
	if due, _ := f.DueExpiries(1099, 10); len(due) != 0 {
		t.Errorf("keys due before their time: %+v", due)
	}
	res := f.Apply(logOf(t, 4, &Command{Op: OpExpire, Expire: []ExpireKey{
		{Namespace: "app", Key: []byte("k"), ModRevision: 1}, // stale: decided before the rewrite
		{Namespace: "app", Key: []byte("j"), ModRevision: 3},
		{Namespace: "app", Key: []byte("gone"), ModRevision: 3},
	}}))[0]
	if res.Err != nil || res.Keys != 1 {
		t.Fatalf("expire result %+v", res)
	}
	if kv, _, _ := f.Get("app", []byte("k")); kv == nil {
		t.Error("a key rewritten after its expiry was decided was expired")
	}
	if kv, _, _ := f.Get("app", []byte("j")); kv != nil {
		t.Error("due key survived")
	}
	if u := f.Usage("app"); u.Keys != 1 || u.Bytes != 3 {
		t.Errorf("usage %+v", u)
	}
}

func TestQuotaCheck(t *testing.T) {
	tests := []struct {
		q             Quota
		before, after Usage
		ok            bool
	}{
		{Quota{}, Usage{}, Usage{Keys: 1 << 40, Bytes: 1 << 50}, true},
		{Quota{MaxKeys: 2}, Usage{Keys: 2}, Usage{Keys: 3}, false},
		{Quota{MaxKeys: 2}, Usage{Keys: 2}, Usage{Keys: 2, Bytes: 99}, true},
		{Quota{MaxKeys: 2}, Usage{Keys: 5}, Usage{Keys: 4}, true},  // over a lowered quota, shrinking
		{Quota{MaxKeys: 2}, Usage{Keys: 5}, Usage{Keys: 5}, true},  // ... or staying
		{Quota{MaxKeys: 2}, Usage{Keys: 5}, Usage{Keys: 6}, false}, // ... not growing
		{Quota{MaxBytes: 10}, Usage{Bytes: 5}, Usage{Bytes: 11}, false},
		{Quota{MaxBytes: 10}, Usage{Bytes: 5}, Usage{Bytes: 10}, true},
	}
	for _, tt := range tests {
		err := checkQuota("ns", tt.q, tt.before, tt.after)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrQuotaExceeded)) {
			t.Errorf("checkQuota(%+v, %+v -> %+v) = %v", tt.q, tt.before, tt.after, err)
		}
	}
}

// sealed builds a snapshot file around payload with a valid checksum, so
// the payload checks themselves are exercised.
func sealed(rev, keys int64, payload []byte) []byte {
	var hdr [snapshotHeaderLen]byte
	copy(hdr[:], snapshotMagic[:])
	binary.BigEndian.PutUint32(hdr[8:], snapshotVersion)
	binary.BigEndian.PutUint64(hdr[16:], uint64(rev))
	binary.BigEndian.PutUint64(hdr[24:], uint64(keys))
	binary.BigEndian.PutUint64(hdr[32:], uint64(len(payload)))
	file := append(hdr[:], payload...)
	sum := sha256.Sum256(file)
	return append(file, sum[:]...)
}

func TestDecodeSnapshotChecksPayload(t *testing.T) {
	rec := (&record{createRev: 1, modRev: 1, version: 1, value: "v"}).encode()
	good := appendSet(appendSet(nil, dataKey("a", []byte("1")), rec), dataKey("a", []byte("2")), rec)
	if snap, err := DecodeSnapshot(sealed(5, 2, good)); err != nil || len(snap.Items) != 2 || snap.Revision != 5 {
		t.Fatalf("good payload: %v %v", snap, err)
	}
	tests := map[string][]byte{
		"key count":      sealed(5, 3, good),
		"out of order":   sealed(5, 2, appendSet(appendSet(nil, dataKey("a", []byte("2")), rec), dataKey("a", []byte("1")), rec)),
		"duplicate":      sealed(5, 2, appendSet(appendSet(nil, dataKey("a", []byte("1")), rec), dataKey("a", []byte("1")), rec)),
		"not a data key": sealed(5, 1, appendSet(nil, "zzz", rec)),
		"bad record":     sealed(5, 1, appendSet(nil, dataKey("a", []byte("1")), "\x07junk")),
		"not set":        sealed(5, 1, []byte("*2\r\n$3\r\ndel\r\n$1\r\nx\r\n")),
		"bulk overrun":   sealed(5, 1, []byte("*3\r\n$3\r\nset\r\n$99\r\nabc\r\n")),
		"bad length":     sealed(5, 1, []byte("*3\r\n$3\r\nset\r\n$-1\r\n")),
	}
	for name, file := range tests {
		if _, err := DecodeSnapshot(file); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}
