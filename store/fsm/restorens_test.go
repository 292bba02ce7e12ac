package fsm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// chunkPuts stores data as chunks of n bytes under prefix in _sys.
func chunkPuts(prefix string, data []byte, n int) *Command {
	txn := &storev1.TxnRequest{Namespace: SingletonNamespace}
	for i := 0; len(data) > 0; i++ {
		c := data[:min(n, len(data))]
		data = data[len(c):]
		txn.Success = append(txn.Success, &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{
			Key: fmt.Appendf(nil, "%s%06d", prefix, i), Value: c}}})
	}
	return &Command{Op: OpTxn, NowMs: 1000, Txn: txn}
}

func restoreOf(ns, prefix string, data []byte) *Command {
	sum := sha256.Sum256(data)
	return &Command{Op: OpRestoreNamespace, NowMs: 5000, Restore: &NamespaceRestore{Namespace: ns, Source: []byte(prefix), SHA256: sum[:]}}
}

// applyAll applies cmds from index next on and returns the next index.
func applyAll(t *testing.T, f *FSM, next uint64, cmds ...*Command) (uint64, []*Result) {
	t.Helper()
	var out []*Result
	for _, c := range cmds {
		out = append(out, f.Apply(logOf(t, next, c))[0])
		next++
	}
	return next, out
}

func TestNamespaceDumpIsCanonical(t *testing.T) {
	f := newFSM(t)
	next, _ := applyAll(t, f, 1, txnPut("app", "b", "2", 0), txnPut("app", "a\x00", "1", 0), txnPut("app", "c", "", 700),
		txnPut("other", "a", "x", 0))
	d, err := f.CaptureNamespace("app", 0)
	if err != nil {
		t.Fatal(err)
	}
	if d.Keys != 3 || d.Revision != int64(next-1) || d.Bytes != f.Usage("app").Bytes {
		t.Fatalf("dump of %d keys, %d bytes at %d; want 3 keys, %d bytes at %d", d.Keys, d.Bytes, d.Revision, f.Usage("app").Bytes, next-1)
	}
	ns, entries, err := DecodeDump(d.Data)
	if err != nil {
		t.Fatal(err)
	}
	want := []DumpEntry{{Key: []byte("a\x00"), Value: []byte("1")}, {Key: []byte("b"), Value: []byte("2")}, {Key: []byte("c"), Value: []byte{}, ExpiresAtMs: 1700}}
	if ns != "app" || fmt.Sprint(entries) != fmt.Sprint(want) {
		t.Fatalf("decoded %s %v, want app %v", ns, entries, want)
	}
	if again := EncodeDump(ns, entries); !bytes.Equal(again, d.Data) {
		t.Fatalf("re-encoded %q, captured %q", again, d.Data)
	}
	for i := range len(d.Data) {
		if _, _, err := DecodeDump(d.Data[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("dump cut to %d of %d bytes: %v, want ErrCorrupt", i, len(d.Data), err)
		}
	}
	bad := map[string][]byte{
		"trailing bytes":  append(append([]byte(nil), d.Data...), 0),
		"overlong number": append(append([]byte(nil), d.Data[:8]...), append([]byte{0x81, 0x00}, d.Data[9:]...)...),
		"out of order":    EncodeDump("app", []DumpEntry{want[1], want[0]}),
		"empty key":       EncodeDump("app", []DumpEntry{{Key: nil, Value: []byte("v")}}),
		"nul namespace":   EncodeDump("a\x00b", nil),
		"claims more":     binary.AppendUvarint(EncodeDump("app", nil)[:len(EncodeDump("app", nil))-1], 1<<40),
	}
	for name, b := range bad {
		if _, _, err := DecodeDump(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
	// Over the limit, nothing is read.
	if d, err := f.CaptureNamespace("app", d.Bytes-1); err != nil || d.Data != nil || d.Keys != 3 {
		t.Fatalf("capture over the limit: %+v, %v; want counts without data", d, err)
	}
}

func TestRestoreNamespace(t *testing.T) {
	f := newFSM(t)
	next, _ := applyAll(t, f, 1, txnPut("app", "a", "1", 0), txnPut("app", "b", "2", 0), txnPut("app", "c", "3", 900),
		txnPut("other", "a", "x", 0))
	d, err := f.CaptureNamespace("app", 0)
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "rollsnap/app/0000000001/"
	next, res := applyAll(t, f, next, chunkPuts(prefix, d.Data, 7))
	if res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	cBefore, _, _ := f.Get("app", []byte("c"))
	// v2 rewrites a, deletes b, adds d; c and other stay.
	next, _ = applyAll(t, f, next, txnPut("app", "a", "one", 0), txnPut("app", "d", "4", 0),
		&Command{Op: OpTxn, Txn: &storev1.TxnRequest{Namespace: "app", Success: []*storev1.TxnOp{{Op: &storev1.TxnOp_Delete{Delete: &storev1.TxnDelete{Key: []byte("b")}}}}}})
	otherBefore, _ := f.CaptureNamespace("other", 0)

	// Corrupt chunks, a wrong checksum or another namespace's dump change
	// nothing.
	sum := sha256.Sum256(d.Data)
	for name, c := range map[string]*Command{
		"wrong checksum": {Op: OpRestoreNamespace, Restore: &NamespaceRestore{Namespace: "app", Source: []byte(prefix), SHA256: make([]byte, 32)}},
		"no chunks":      {Op: OpRestoreNamespace, Restore: &NamespaceRestore{Namespace: "app", Source: []byte("rollsnap/app/0000000009/"), SHA256: sum[:]}},
		"other ns":       restoreOf("other", prefix, d.Data),
	} {
		before := capture(t, f)
		var r []*Result
		next, r = applyAll(t, f, next, c)
		if !errors.Is(r[0].Err, ErrCorrupt) {
			t.Fatalf("%s: %v, want ErrCorrupt", name, r[0].Err)
		}
		if !bytes.Equal(stateOf(before), stateOf(capture(t, f))) {
			t.Fatalf("%s: a refused restore changed the state", name)
		}
	}
	// A chunk altered in the store: refused, as a whole.
	altered := append([]byte(nil), d.Data...)
	altered[len(altered)-3] ^= 1
	next, _ = applyAll(t, f, next, chunkPuts("rollsnap/app/0000000002/", altered, 1000))
	before := capture(t, f)
	next, res = applyAll(t, f, next, restoreOf("app", "rollsnap/app/0000000002/", d.Data))
	if !errors.Is(res[0].Err, ErrCorrupt) || !bytes.Equal(stateOf(before), stateOf(capture(t, f))) {
		t.Fatalf("restore of altered chunks: %v; want ErrCorrupt and no change", res[0].Err)
	}

	events, cancel := watchAll(t, f, "app", int64(next))
	defer cancel()
	next, res = applyAll(t, f, next, restoreOf("app", prefix, d.Data))
	if res[0].Err != nil || res[0].Keys != 3 {
		t.Fatalf("restore: %v, %d keys; want 3 keys", res[0].Err, res[0].Keys)
	}
	after, err := f.CaptureNamespace("app", 0)
	if err != nil || !bytes.Equal(after.Data, d.Data) {
		t.Fatalf("after the restore the namespace dumps as %q (%v), the snapshot is %q", after.Data, err, d.Data)
	}
	if o, _ := f.CaptureNamespace("other", 0); !bytes.Equal(o.Data, otherBefore.Data) {
		t.Fatal("the restore changed another namespace")
	}
	if c, _, _ := f.Get("app", []byte("c")); c.GetModRevision() != cBefore.GetModRevision() {
		t.Fatalf("unchanged key c rewritten: mod revision %d, was %d", c.GetModRevision(), cBefore.GetModRevision())
	}
	checkUsage(t, f)
	// One revision, with every change: a put of a and b, a delete of d.
	resp := <-events
	var got []string
	for _, ev := range resp.GetEvents() {
		got = append(got, fmt.Sprintf("%s %s", ev.GetType(), ev.GetKv().GetKey()))
	}
	if resp.GetRevision() != int64(next-1) || fmt.Sprint(got) != "[EVENT_TYPE_PUT a EVENT_TYPE_PUT b EVENT_TYPE_DELETE d]" {
		t.Fatalf("watch saw revision %d: %v", resp.GetRevision(), got)
	}
	// Again: nothing left to change.
	_, res = applyAll(t, f, next, restoreOf("app", prefix, d.Data))
	if res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if again, _ := f.CaptureNamespace("app", 0); !bytes.Equal(again.Data, d.Data) {
		t.Fatal("a second restore changed the data")
	}
}

func TestRestoreNamespaceCommandChecks(t *testing.T) {
	sum := make([]byte, 32)
	for name, r := range map[string]*NamespaceRestore{
		"no namespace":   {Source: []byte("p/"), SHA256: sum},
		"_sys":           {Namespace: SingletonNamespace, Source: []byte("p/"), SHA256: sum},
		"nul namespace":  {Namespace: "a\x00", Source: []byte("p/"), SHA256: sum},
		"no source":      {Namespace: "app", SHA256: sum},
		"short checksum": {Namespace: "app", Source: []byte("p/"), SHA256: sum[:31]},
	} {
		data, err := (&Command{Op: OpRestoreNamespace, Restore: r}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeCommand(data); !errors.Is(err, errBadCommand) {
			t.Errorf("%s: decoded (%v)", name, err)
		}
	}
	if _, err := DecodeCommand([]byte{commandFormat, 8, byte(OpRestoreNamespace)}); !errors.Is(err, errBadCommand) {
		t.Errorf("restore op without a restore decoded (%v)", err)
	}
}

// watchAll returns the watch responses of ns from revision from.
func watchAll(t *testing.T, f *FSM, ns string, from int64) (<-chan *storev1.WatchResponse, func()) {
	t.Helper()
	ch := make(chan *storev1.WatchResponse, 16)
	ctx, cancel := context.WithCancel(context.Background())
	go f.Hub().Watch(ctx, ns, nil, from, func(r *storev1.WatchResponse) error {
		ch <- r
		return nil
	})
	return ch, cancel
}
