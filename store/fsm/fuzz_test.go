package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"testing"

	"google.golang.org/protobuf/proto"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// FuzzCommand decodes fuzzed log entries as every node decodes what its
// leader sends, and applies them to a state machine that holds data. A
// command that decodes encodes back to the same bytes' meaning, and again
// to the same bytes; applying any entry changes the state fully or, when
// refused, not at all; and the namespace usage the quotas are counted from
// always matches the keys the state holds.
func FuzzCommand(f *testing.F) {
	for _, c := range randomCommands(f, 40, 11) {
		f.Add(encoded(f, c))
	}
	f.Add(encoded(f, &Command{Op: OpNoop}))
	f.Add(encoded(f, &Command{Op: OpExpire, Expire: []ExpireKey{{Namespace: "one", Key: []byte("a\x00"), ModRevision: 1}}}))
	f.Add(encoded(f, &Command{Op: OpRestore, Snapshot: sealed(3, 0, nil)}))
	f.Add(encoded(f, &Command{Op: OpTxn, Txn: &storev1.TxnRequest{Namespace: "one", Compares: []*storev1.Compare{
		{Key: []byte("a\x00"), Operator: storev1.CompareOperator_COMPARE_OPERATOR_GREATER, Target: &storev1.Compare_Exists{Exists: true}},
	}}}))
	for _, data := range [][]byte{nil, {9, 8, 1}, {commandFormat, 8, 99}, {commandFormat, 8, 1, 0x78, 1}, {commandFormat, 8, byte(OpTxn)}} {
		f.Add(data)
	}
	// The state: a mix of every command, then a key with a TTL that holds
	// a NUL, the byte that ends a namespace in the key space, and a
	// namespace snapshot of "two" kept in chunks, which the seeds restore
	// into "two" (and, refused, into "one").
	state := append(randomCommands(f, 30, 5), txnPut("one", "k\x00x", "v", 500))
	dump := EncodeDump("two", []DumpEntry{{Key: []byte("a\x00"), Value: []byte("v1")}, {Key: []byte("b"), Value: []byte("v2"), ExpiresAtMs: 900}})
	state = append(state, chunkPuts("rollsnap/two/0000000001/", dump, 9))
	f.Add(encoded(f, restoreOf("two", "rollsnap/two/0000000001/", dump)))
	f.Add(encoded(f, restoreOf("one", "rollsnap/two/0000000001/", dump)))
	f.Add(encoded(f, restoreOf("two", "rollsnap/two/", dump)))
	base := newFSM(f)
	for i, c := range state {
		base.Apply(logOf(f, uint64(i+1), c))
	}
	baseFile := capture(f, base)
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := DecodeCommand(data)
		if err != nil {
			if !errors.Is(err, errBadCommand) {
				t.Fatalf("decode refused with %v, which is not errBadCommand", err)
			}
		} else {
			checkRoundTrip(t, cmd)
		}

		fsm := newFSM(t)
		if err := fsm.Restore(io.NopCloser(bytes.NewReader(baseFile))); err != nil {
			t.Fatal(err)
		}
		before := capture(t, fsm)
		index := uint64(len(state) + 1)
		res := fsm.Apply(Entry{Index: index, Term: 1, Command: true, Data: data})[0]
		if res.Index != int64(index) || fsm.Applied() != int64(index) {
			t.Fatalf("applied index %d (result %d), want %d", fsm.Applied(), res.Index, index)
		}
		if res.Err != nil {
			if !errors.Is(res.Err, errBadCommand) && !errors.Is(res.Err, ErrQuotaExceeded) && !errors.Is(res.Err, ErrCorrupt) {
				t.Fatalf("refused with %v: not a malformed command, a quota or a corrupt snapshot", res.Err)
			}
			if after := capture(t, fsm); !bytes.Equal(stateOf(before), stateOf(after)) {
				t.Fatalf("a refused command (%v) changed the state", res.Err)
			}
		}
		checkUsage(t, fsm)
	})
}

// FuzzSnapshot decodes fuzzed snapshot files, as a node installs its
// leader's snapshot and an operator's restore installs a backup. With seal
// set the input is a payload that the harness wraps in a header and
// checksum, so the fuzzer reaches past the checksum. A file that decodes
// writes back to the same bytes and restores to a state that captures to
// it again; a refused one is ErrCorrupt; and decoding never takes memory
// out of proportion to the file.
func FuzzSnapshot(f *testing.F) {
	live := newFSM(f)
	for i, c := range randomCommands(f, 60, 3) {
		live.Apply(logOf(f, uint64(i+1), c))
	}
	snap, err := live.Capture()
	if err != nil {
		f.Fatal(err)
	}
	var file bytes.Buffer
	if err := snap.Write(&file); err != nil {
		f.Fatal(err)
	}
	whole := file.Bytes()
	f.Add(whole, int64(0), int64(0), false)
	f.Add(whole[snapshotHeaderLen:len(whole)-snapshotTrailerLen], snap.Revision, int64(len(snap.Items)), true)
	rec := (&record{createRev: 1, modRev: 1, version: 1, value: "v"}).encode()
	for _, p := range [][]byte{
		appendSet(appendSet(nil, dataKey("a", []byte("2")), rec), dataKey("a", []byte("1")), rec),
		appendSet(nil, "zzz", rec),
		appendSet(nil, dataKey("a", []byte("1")), "\x07junk"),
		[]byte("*2\r\n$3\r\ndel\r\n$1\r\nx\r\n"),
		[]byte("*3\r\n$3\r\nset\r\n$99\r\nabc\r\n"),
		[]byte("*3\r\n$3\r\nset\r\n$-1\r\n"),
		nil,
	} {
		f.Add(p, int64(5), int64(1), true)
	}
	f.Add([]byte{}, int64(1), int64(1)<<40, true) // a header that claims many keys
	f.Fuzz(func(t *testing.T, data []byte, rev, keys int64, seal bool) {
		if seal {
			data = sealed(rev, keys, data)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		allocated := ms.TotalAlloc
		snap, err := DecodeSnapshot(data)
		runtime.ReadMemStats(&ms)
		if used := ms.TotalAlloc - allocated; used > uint64(8*len(data))+64<<10 {
			t.Fatalf("decoding a %d-byte file allocated %d bytes", len(data), used)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("refused with %v, which is not ErrCorrupt", err)
			}
			return
		}
		var out bytes.Buffer
		if err := snap.Write(&out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("the snapshot decoded from %q writes back as %q", data, out.Bytes())
		}
		fsm := newFSM(t)
		if err := fsm.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			t.Fatalf("a snapshot that decodes does not restore: %v", err)
		}
		if got := capture(t, fsm); !bytes.Equal(got, data) {
			t.Fatalf("restored %q, captured %q", data, got)
		}
		checkUsage(t, fsm)
	})
}

func encoded(t testing.TB, c *Command) []byte {
	t.Helper()
	data, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// checkRoundTrip checks that cmd encodes to a command that decodes to the
// same, and encodes to the same bytes again.
func checkRoundTrip(t *testing.T, cmd *Command) {
	t.Helper()
	data, err := cmd.Encode()
	if err != nil {
		t.Fatalf("a decoded command does not encode: %v", err)
	}
	again, err := DecodeCommand(data)
	if err != nil {
		t.Fatalf("an encoded command does not decode: %v", err)
	}
	if again.Op != cmd.Op || again.NowMs != cmd.NowMs || again.Quota != cmd.Quota || !proto.Equal(again.Txn, cmd.Txn) ||
		!bytes.Equal(again.Snapshot, cmd.Snapshot) || fmt.Sprint(again.Expire) != fmt.Sprint(cmd.Expire) ||
		fmt.Sprint(again.Restore) != fmt.Sprint(cmd.Restore) {
		t.Fatalf("%+v encodes and decodes as %+v", cmd, again)
	}
	if data2, err := again.Encode(); err != nil || !bytes.Equal(data, data2) {
		t.Fatalf("encoding is not stable: %x, then %x (%v)", data, data2, err)
	}
}

// stateOf is a snapshot file without its revision, which advances on every
// entry, and the checksum over it.
func stateOf(file []byte) []byte {
	return file[snapshotHeaderLen : len(file)-snapshotTrailerLen]
}

// checkUsage checks that the usage of every namespace is what its keys add
// up to.
func checkUsage(t *testing.T, f *FSM) {
	t.Helper()
	snap, err := f.Capture()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Usage{}
	for _, it := range snap.Items {
		ns, key, _ := splitDataKey(it.Key)
		rec, err := decodeRecord(it.Value)
		if err != nil {
			t.Fatalf("key %q holds a malformed record", it.Key)
		}
		u := want[ns]
		u.Keys++
		u.Bytes += size(key, rec.value)
		want[ns] = u
	}
	f.mu.RLock()
	got := maps.Clone(f.usage)
	f.mu.RUnlock()
	maps.DeleteFunc(got, func(_ string, u Usage) bool { return u == Usage{} })
	if !maps.Equal(got, want) {
		t.Fatalf("namespace usage %v, the keys add up to %v", got, want)
	}
}
