package store

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// A namespace dump kept in chunks by one leader is restored by the next:
// every replica ends holding the dump, at the same revision.
func TestNamespaceRestoreOnANewLeader(t *testing.T) {
	nodes := newCluster(t, 3, newFakeClock())
	leader := leaderOf(t, nodes)
	ctx := testenv.Context(t, time.Minute)
	for i := range 50 {
		put(t, leader, "app", fmt.Sprintf("k%03d", i), fmt.Sprint("v1-", i))
	}
	d, err := leader.CaptureNamespace(ctx, "app", 0)
	if err != nil {
		t.Fatal(err)
	}
	if d.Keys != 50 || d.Revision != leader.Revision() {
		t.Fatalf("captured %d keys at %d, want 50 at %d", d.Keys, d.Revision, leader.Revision())
	}
	txn := &storev1.TxnRequest{Namespace: SystemNamespace}
	for n, rest := 0, d.Data; len(rest) > 0; n++ {
		c := rest[:min(len(rest), 300)]
		rest = rest[len(c):]
		txn.Success = append(txn.Success, &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: fmt.Appendf(nil, "snap/app/%06d", n), Value: c}}})
	}
	if _, err := leader.Txn(ctx, txn); err != nil {
		t.Fatal(err)
	}
	// v2 rewrites the namespace.
	if _, err := leader.DeleteRange(ctx, &storev1.DeleteRangeRequest{Namespace: "app", Prefix: []byte("k")}); err != nil {
		t.Fatal(err)
	}
	put(t, leader, "app", "v2:all", "{}")

	// The leader goes; the next restores from the replicated chunks.
	if _, _, err := nodes[1+(indexOf(nodes, leader))%2].RestoreNamespace(ctx, "app", "snap/app/", make([]byte, 32)); err == nil {
		t.Fatal("a follower restored")
	}
	leader.Close()
	var rest []*Store
	for _, s := range nodes {
		if s != leader {
			rest = append(rest, s)
		}
	}
	next := leaderOf(t, rest)
	sum := sha256.Sum256(d.Data)
	rev, keys, err := next.RestoreNamespace(ctx, "app", "snap/app/", sum[:])
	if err != nil || keys != 50 {
		t.Fatalf("restore on the new leader: %d keys, %v", keys, err)
	}
	for _, s := range rest {
		sessionGet(t, s, "app", "k000", rev)
		got, err := s.fsm.CaptureNamespace("app", 0)
		if err != nil || !bytes.Equal(got.Data, d.Data) {
			t.Fatalf("%s holds %q after the restore (%v), want the dump", s.cfg.NodeID, got.Data, err)
		}
	}
}

func indexOf(nodes []*Store, s *Store) int {
	for i, n := range nodes {
		if n == s {
			return i
		}
	}
	return -1
}
