package rollout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

func openStore(t *testing.T, quotas map[string]store.Quota) *store.Store {
	t.Helper()
	cfg := store.DefaultConfig()
	cfg.InMemory, cfg.Bootstrap, cfg.Quotas = true, true, quotas
	st, err := store.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.WaitForLeader(testenv.Context(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	return st
}

func rolloutOf(plugin string, seq int64) *intent.Rollout {
	return &intent.Rollout{ID: intent.RolloutID(plugin, seq), Plugin: plugin, Seq: seq, From: "1.0.0", To: "2.0.0"}
}

// put writes keys in ns, 100 a transaction.
func put(t *testing.T, st *store.Store, ns string, kv map[string]string) {
	t.Helper()
	txn := &storev1.TxnRequest{Namespace: ns}
	flush := func() {
		if _, err := st.Txn(testenv.Context(t, time.Minute), txn); err != nil {
			t.Fatal(err)
		}
		txn = &storev1.TxnRequest{Namespace: ns}
	}
	for k, v := range kv {
		txn.Success = append(txn.Success, &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: []byte(k), Value: []byte(v)}}})
		if len(txn.Success) == 100 {
			flush()
		}
	}
	flush()
}

// rewrite replaces v1's keys (count/) of ns with kv, as a new version that
// rewrites its keys in its own format does.
func rewrite(t *testing.T, st *store.Store, ns string, kv map[string]string) {
	t.Helper()
	if _, err := st.DeleteRange(testenv.Context(t, time.Minute), &storev1.DeleteRangeRequest{Namespace: ns, Prefix: []byte("count/")}); err != nil {
		t.Fatal(err)
	}
	put(t, st, ns, kv)
}

func dumpOf(t *testing.T, st *store.Store, ns string) []byte {
	t.Helper()
	d, err := st.CaptureNamespace(testenv.Context(t, time.Minute), ns, 0)
	if err != nil {
		t.Fatal(err)
	}
	return d.Data
}

// v1Data is a namespace in v1's format: n counters with values of size
// bytes.
func v1Data(n, size int) map[string]string {
	kv := map[string]string{}
	for i := range n {
		kv[fmt.Sprintf("count/%04d", i)] = strings.Repeat(fmt.Sprint(i%10), size)
	}
	return kv
}

func v2Data(n int) map[string]string {
	kv := map[string]string{}
	for i := range n {
		kv[fmt.Sprintf("v2:count:%04d", i)] = fmt.Sprintf(`{"n":%d}`, i)
	}
	return kv
}

func TestTakeAndRestore(t *testing.T) {
	st := openStore(t, nil)
	ctx := testenv.Context(t, time.Minute)
	// Small chunks and transactions: the snapshot spans many of each.
	snaps := NewSnapshots(st, SnapshotConfig{ChunkBytes: 1000, TxnBytes: 16 << 10})

	if s, err := snaps.Take(ctx, rolloutOf("counter", 1)); s != nil || err != nil {
		t.Fatalf("take of an empty namespace: %+v, %v; want nil, nil", s, err)
	}
	put(t, st, "counter", v1Data(200, 300))
	put(t, st, "other", map[string]string{"k": "v"})
	before := dumpOf(t, st, "counter")
	r := rolloutOf("counter", 2)
	snap, err := snaps.Take(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if snap == nil || snap.Skipped != "" || snap.Keys != 200 || snap.Namespace != "counter" || len(snap.SHA256) != 64 || snap.Revision == 0 {
		t.Fatalf("snapshot %+v", snap)
	}
	chunks := listKeys(t, st, SnapshotPrefix("counter", 2))
	if want := (len(before) + 999) / 1000; len(chunks) != want {
		t.Fatalf("%d chunks, want %d of 1000 bytes for %d bytes", len(chunks), want, len(before))
	}
	r.Snapshot = snap

	rewrite(t, st, "counter", v2Data(150))
	otherBefore := dumpOf(t, st, "other")
	if err := snaps.Restore(ctx, r); err != nil {
		t.Fatal(err)
	}
	if got := dumpOf(t, st, "counter"); !bytes.Equal(got, before) {
		t.Fatalf("restored namespace differs from the snapshot (%d bytes, want %d)", len(got), len(before))
	}
	if !bytes.Equal(dumpOf(t, st, "other"), otherBefore) {
		t.Fatal("restore changed another namespace")
	}
	// Restoring again changes nothing.
	rev := st.Revision()
	if err := snaps.Restore(ctx, r); err != nil {
		t.Fatal(err)
	}
	if got := dumpOf(t, st, "counter"); !bytes.Equal(got, before) {
		t.Fatal("a second restore changed the data")
	}
	if st.Revision() != rev+1 {
		t.Fatalf("a second restore took %d revisions, want one", st.Revision()-rev)
	}
}

func listKeys(t *testing.T, st *store.Store, prefix string) []string {
	t.Helper()
	resp, err := st.List(testenv.Context(t, time.Minute), &storev1.ListRequest{Namespace: store.SystemNamespace, Prefix: []byte(prefix), KeysOnly: true, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.GetKvs() {
		out = append(out, string(kv.GetKey()))
	}
	return out
}

func TestRestoreRefusesACorruptSnapshot(t *testing.T) {
	st := openStore(t, nil)
	ctx := testenv.Context(t, time.Minute)
	snaps := NewSnapshots(st, SnapshotConfig{ChunkBytes: 512})
	put(t, st, "counter", v1Data(20, 100))
	r := rolloutOf("counter", 1)
	snap, err := snaps.Take(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	r.Snapshot = snap
	rewrite(t, st, "counter", v2Data(10))
	v2 := dumpOf(t, st, "counter")

	// A chunk altered in the store.
	chunks := listKeys(t, st, SnapshotPrefix("counter", 1))
	resp, err := st.Get(ctx, &storev1.GetRequest{Namespace: store.SystemNamespace, Key: []byte(chunks[1])})
	if err != nil {
		t.Fatal(err)
	}
	altered := bytes.Clone(resp.GetKv().GetValue())
	altered[10] ^= 0x20
	if _, err := st.Put(ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(chunks[1]), Value: altered}); err != nil {
		t.Fatal(err)
	}
	rev := st.Revision()
	err = snaps.Restore(ctx, r)
	if !errors.Is(err, ErrSnapshotCorrupt) || !strings.Contains(err.Error(), "nothing was restored") {
		t.Fatalf("restore of an altered snapshot: %v; want ErrSnapshotCorrupt saying nothing was restored", err)
	}
	if !bytes.Equal(dumpOf(t, st, "counter"), v2) || st.Revision() != rev {
		t.Fatal("a refused restore changed the store")
	}

	// The store refuses it too, whoever asks: the check is in the log.
	if _, _, err := st.RestoreNamespace(ctx, "counter", SnapshotPrefix("counter", 1), mustHex(t, snap.SHA256)); !errors.Is(err, store.ErrCorruptBackup) {
		t.Fatalf("store restore of altered chunks: %v, want ErrCorruptBackup", err)
	}
	if !bytes.Equal(dumpOf(t, st, "counter"), v2) {
		t.Fatal("a refused store restore changed the namespace")
	}

	// A record whose checksum is not the snapshot's.
	r2 := *r
	r2.Snapshot = &intent.RolloutSnapshot{Namespace: "counter", Keys: 20, SHA256: strings.Repeat("ab", 32)}
	if err := snaps.Restore(ctx, &r2); !errors.Is(err, ErrSnapshotCorrupt) {
		t.Fatalf("restore with another checksum: %v, want ErrSnapshotCorrupt", err)
	}
	if !bytes.Equal(dumpOf(t, st, "counter"), v2) {
		t.Fatal("a refused restore changed the namespace")
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	var b []byte
	if _, err := fmt.Sscanf(s, "%x", &b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSnapshotRetention(t *testing.T) {
	st := openStore(t, nil)
	ctx := testenv.Context(t, time.Minute)
	snaps := NewSnapshots(st, SnapshotConfig{Keep: 2})
	put(t, st, "counter", v1Data(5, 10))
	put(t, st, "other", v1Data(5, 10))
	other := rolloutOf("other", 1)
	if _, err := snaps.Take(ctx, other); err != nil {
		t.Fatal(err)
	}
	var rs []*intent.Rollout
	for seq := int64(1); seq <= 4; seq++ {
		r := rolloutOf("counter", seq)
		s, err := snaps.Take(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		r.Snapshot = s
		rs = append(rs, r)
	}
	seqs, err := snaps.kept(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs) != "[3 4]" {
		t.Fatalf("kept snapshots of rollouts %v, want [3 4]", seqs)
	}
	if seqs, _ := snaps.kept(ctx, "other"); fmt.Sprint(seqs) != "[1]" {
		t.Fatalf("another plugin's snapshots %v, want [1]: retention is per plugin", seqs)
	}
	err = snaps.Restore(ctx, rs[0])
	if !errors.Is(err, ErrSnapshotGone) || !strings.Contains(err.Error(), "rollout_snapshot_keep") {
		t.Fatalf("restore of a pruned snapshot: %v; want ErrSnapshotGone naming rollout_snapshot_keep", err)
	}
	if err := snaps.Restore(ctx, rs[2]); err != nil {
		t.Fatalf("restore of a kept snapshot: %v", err)
	}
}

func TestSnapshotMaxBytes(t *testing.T) {
	st := openStore(t, nil)
	ctx := testenv.Context(t, time.Minute)
	put(t, st, "counter", v1Data(10, 100))
	snaps := NewSnapshots(st, SnapshotConfig{MaxBytes: 500})
	r := rolloutOf("counter", 1)
	snap, err := snaps.Take(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if snap == nil || snap.Skipped == "" || snap.SHA256 != "" || !strings.Contains(snap.Skipped, "rollout_snapshot_max_bytes") {
		t.Fatalf("snapshot over max bytes: %+v; want Skipped naming rollout_snapshot_max_bytes", snap)
	}
	if err := r.Validate(); err != nil && strings.Contains(err.Error(), "snapshot") {
		t.Fatalf("the skipped snapshot does not fit the rollout record: %v", err)
	}
	if keys := listKeys(t, st, PrefixSnapshot); len(keys) != 0 {
		t.Fatalf("a skipped snapshot kept %v", keys)
	}
	r.Snapshot = snap
	if err := snaps.Restore(ctx, r); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("restore without a snapshot: %v, want ErrNoSnapshot", err)
	}
	r.Snapshot = nil
	if err := snaps.Restore(ctx, r); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("restore of a rollout without data: %v, want ErrNoSnapshot", err)
	}
}

// Snapshots fill at most half of _sys's quota: the catalog and placement
// records keep room.
func TestSnapshotLeavesRoomInSys(t *testing.T) {
	st := openStore(t, map[string]store.Quota{store.SystemNamespace: {MaxBytes: 64 << 10}})
	ctx := testenv.Context(t, time.Minute)
	snaps := NewSnapshots(st, SnapshotConfig{})
	put(t, st, "counter", v1Data(20, 1000))
	r := rolloutOf("counter", 1)
	snap, err := snaps.Take(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if snap == nil || snap.SHA256 == "" {
		t.Fatalf("a 20 KiB snapshot with 64 KiB of quota: %+v", snap)
	}
	snap, err = snaps.Take(ctx, rolloutOf("counter", 2))
	if err != nil {
		t.Fatal(err)
	}
	if snap == nil || snap.SHA256 != "" || !strings.Contains(snap.Skipped, "quotas._sys.max_bytes") {
		t.Fatalf("a second snapshot past half the quota: %+v; want skipped, naming quotas._sys.max_bytes", snap)
	}
	if keys := listKeys(t, st, SnapshotPrefix("counter", 2)); len(keys) != 0 {
		t.Fatalf("a skipped snapshot kept %v", keys)
	}
}

// The namespace is restored whatever its quota: the data fit in it before.
func TestRestoreIgnoresTheQuota(t *testing.T) {
	st := openStore(t, map[string]store.Quota{"counter": {MaxKeys: 12}})
	ctx := testenv.Context(t, time.Minute)
	snaps := NewSnapshots(st, SnapshotConfig{})
	put(t, st, "counter", v1Data(10, 10))
	before := dumpOf(t, st, "counter")
	r := rolloutOf("counter", 1)
	s, err := snaps.Take(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	r.Snapshot = s
	// v2 adds keys of its own beside v1's, up to the quota.
	put(t, st, "counter", map[string]string{"v2:a": "1", "v2:b": "2"})
	if err := snaps.Restore(ctx, r); err != nil {
		t.Fatalf("restore at the quota: %v", err)
	}
	if !bytes.Equal(dumpOf(t, st, "counter"), before) {
		t.Fatal("restored data differs from the snapshot")
	}
}

// A reader never sees a half-restored namespace: every list (one revision)
// and every watch response holds the namespace wholly before or wholly
// after the restore.
func TestRestoreIsAtomic(t *testing.T) {
	st := openStore(t, nil)
	ctx := testenv.Context(t, time.Minute)
	snaps := NewSnapshots(st, SnapshotConfig{ChunkBytes: 4096})
	const n = 400
	v1 := map[string]string{}
	for i := range n {
		v1[fmt.Sprintf("k%04d", i)] = "v1"
	}
	put(t, st, "counter", v1)
	r := rolloutOf("counter", 1)
	s, err := snaps.Take(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	r.Snapshot = s
	v2 := map[string]string{}
	for i := range n {
		v2[fmt.Sprintf("k%04d", i)] = "v2"
	}
	put(t, st, "counter", v2)
	from := st.Revision() + 1

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watched := make(chan *storev1.WatchResponse, 16)
	go st.Watch(wctx, &storev1.WatchRequest{Namespace: "counter", StartRevision: from}, func(resp *storev1.WatchResponse) error {
		watched <- resp
		return nil
	})

	var wg sync.WaitGroup
	var mixed, reads, sawV1 int
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			resp, err := st.List(ctx, &storev1.ListRequest{Namespace: "counter", Limit: 2 * n,
				Consistency: storev1.Consistency_CONSISTENCY_STALE})
			if err != nil || len(resp.GetKvs()) != n || resp.GetNextPageToken() != nil {
				mixed++
				return
			}
			counts := map[string]int{}
			for _, kv := range resp.GetKvs() {
				counts[string(kv.GetValue())]++
			}
			reads++
			if len(counts) != 1 {
				mixed++
			}
			if counts["v1"] == n {
				sawV1++
				select {
				case <-done:
					return
				default:
				}
			}
		}
	}()
	if err := snaps.Restore(ctx, r); err != nil {
		t.Fatal(err)
	}
	close(done)
	wg.Wait()
	if mixed > 0 || sawV1 == 0 {
		t.Fatalf("%d of %d reads saw a namespace neither wholly v1 nor wholly v2 (%d saw v1)", mixed, reads, sawV1)
	}
	select {
	case resp := <-watched:
		if len(resp.GetEvents()) != n {
			t.Fatalf("the restore reached watchers as %d events at revision %d, want all %d at once", len(resp.GetEvents()), resp.GetRevision(), n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch saw no restore")
	}
}

// BenchmarkSnapshot takes and restores the snapshot of a namespace of
// 16 MiB (4096 keys of 4 KiB) in an in-memory store, the restore after a
// quarter of the keys were deleted and one added: MB/s is of the
// namespace's bytes.
func BenchmarkSnapshot(b *testing.B) {
	cfg := store.DefaultConfig()
	cfg.InMemory, cfg.Bootstrap = true, true
	st, err := store.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := st.WaitForLeader(ctx); err != nil {
		b.Fatal(err)
	}
	const keys, size = 4096, 4 << 10
	for i := 0; i < keys; i += 100 {
		txn := &storev1.TxnRequest{Namespace: "counter"}
		for j := i; j < min(i+100, keys); j++ {
			txn.Success = append(txn.Success, &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{
				Key: fmt.Appendf(nil, "k%06d", j), Value: bytes.Repeat([]byte{byte(j)}, size)}}})
		}
		if _, err := st.Txn(ctx, txn); err != nil {
			b.Fatal(err)
		}
	}
	snaps := NewSnapshots(st, SnapshotConfig{})
	for _, op := range []string{"take", "restore"} {
		b.Run(op, func(b *testing.B) {
			b.SetBytes(keys * (size + 7))
			r := rolloutOf("counter", 1)
			s, err := snaps.Take(ctx, r)
			if err != nil {
				b.Fatal(err)
			}
			r.Snapshot = s
			for b.Loop() {
				if op == "take" {
					_, err = snaps.Take(ctx, r)
				} else {
					// A new version rewrote a quarter of the keys.
					b.StopTimer()
					if _, err := st.DeleteRange(ctx, &storev1.DeleteRangeRequest{Namespace: "counter", Prefix: []byte("k000")}); err != nil {
						b.Fatal(err)
					}
					if _, err := st.Put(ctx, &storev1.PutRequest{Namespace: "counter", Key: []byte("v2"), Value: []byte("{}")}); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					err = snaps.Restore(ctx, r)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
