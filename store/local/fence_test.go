package local

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// TestBindingFencesWrites: the agent refuses a standby's and a fenced
// instance's writes itself, stamps an old SDK's writes with the active's
// epoch, refuses an epoch it never gave, and marks every plugin write so
// that the store refuses one without an epoch to a singleton.
func TestBindingFencesWrites(t *testing.T) {
	m, err := OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	srv := NewServer(m)
	single := func(active string) int64 {
		t.Helper()
		r, err := srv.Put(ctx, &storev1.PutRequest{Namespace: SystemNamespace, Key: []byte("singleton/counter"), Value: []byte(`{"plugin":"counter","active":"` + active + `"}`)})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetRevision()
	}
	epoch := single("n1")

	var mu sync.Mutex
	role := Role{Kind: RoleActive, Epoch: epoch}
	bound := Bind(srv, Binding{Namespace: "counter", Role: func() Role {
		mu.Lock()
		defer mu.Unlock()
		return role
	}})
	setRole := func(r Role) {
		mu.Lock()
		role = r
		mu.Unlock()
	}
	put := func(f *storev1.Fence) error {
		_, err := bound.Put(ctx, &storev1.PutRequest{Key: []byte("n"), Value: []byte("1"), Fence: f})
		return err
	}
	want := func(err error, code codes.Code, reason, msg string) {
		t.Helper()
		if status.Code(err) != code || storev1.ErrorReason(err) != reason || !strings.Contains(status.Convert(err).Message(), msg) {
			t.Errorf("got %v (reason %q), want %v %s %q", err, storev1.ErrorReason(err), code, reason, msg)
		}
	}

	if err := put(nil); err != nil {
		t.Errorf("an old SDK's write from the active: %v", err)
	}
	if err := put(&storev1.Fence{Epoch: epoch}); err != nil {
		t.Errorf("the active's write at its epoch: %v", err)
	}
	// An epoch newer than the agent's is fenced like the store fences one
	// (the SDK's ErrFenced): the agent may hold the instance to an epoch
	// not stamped yet (0) after the singleton moved away and back.
	never := put(&storev1.Fence{Epoch: epoch + 100})
	want(never, codes.FailedPrecondition, storev1.ReasonUnknownEpoch, "epoch "+itoa(epoch+100)+" was never given to this instance")
	if md := storev1.ErrorInfo(never).GetMetadata(); md[storev1.MetadataEpoch] != itoa(epoch+100) || md[storev1.MetadataCurrentEpoch] != itoa(epoch) {
		t.Errorf("metadata %v, want both epochs", md)
	}

	// The singleton moves to n2: the agent has not heard yet, the store
	// refuses the old epoch all the same, old SDK or new.
	next := single("n2")
	msg := "write from epoch " + itoa(epoch) + " refused: singleton counter's current epoch is " + itoa(next) + " (active on n2)"
	want(put(nil), codes.FailedPrecondition, storev1.ReasonStaleEpoch, msg)
	want(put(&storev1.Fence{Epoch: epoch}), codes.FailedPrecondition, storev1.ReasonStaleEpoch, msg)
	if _, err := bound.Txn(ctx, &storev1.TxnRequest{Success: []*storev1.TxnOp{{Op: &storev1.TxnOp_Delete{Delete: &storev1.TxnDelete{Key: []byte("n")}}}}}); storev1.ErrorReason(err) != storev1.ReasonStaleEpoch {
		t.Errorf("txn at the old epoch: %v", err)
	}

	setRole(Role{Kind: RoleStandby, Why: "the active is n2"})
	want(put(nil), codes.FailedPrecondition, storev1.ReasonNotActive, "this instance of singleton counter is the standby (the active is n2)")
	_, err = bound.Delete(ctx, &storev1.DeleteRequest{Key: []byte("n")})
	want(err, codes.FailedPrecondition, storev1.ReasonNotActive, "only the active writes")
	_, err = bound.DeleteRange(ctx, &storev1.DeleteRangeRequest{Prefix: []byte("n")})
	want(err, codes.FailedPrecondition, storev1.ReasonNotActive, "")
	setRole(Role{Kind: RoleFenced, Why: "this node has not heard from a raft leader for 4s"})
	want(put(&storev1.Fence{Epoch: next}), codes.FailedPrecondition, storev1.ReasonNotActive, "is fenced (this node has not heard")

	// An instance the agent holds to be no singleton's writes without an
	// epoch, which the store refuses for a singleton.
	setRole(Role{})
	want(put(&storev1.Fence{Epoch: next}), codes.FailedPrecondition, storev1.ReasonStaleEpoch, "write without a singleton epoch refused")
	// Reads are not fenced.
	if _, err := bound.Get(ctx, &storev1.GetRequest{Key: []byte("n")}); err != nil {
		t.Errorf("read: %v", err)
	}

	setRole(Role{Kind: RoleActive, Epoch: next})
	if err := put(&storev1.Fence{Epoch: next}); err != nil {
		t.Errorf("the new active's write: %v", err)
	}
	// A plugin that is no singleton writes as ever.
	echo := Bind(srv, Binding{Namespace: "echo", Role: func() Role { return Role{} }})
	if _, err := echo.Put(ctx, &storev1.PutRequest{Key: []byte("k"), Fence: &storev1.Fence{Epoch: 5}}); err != nil {
		t.Errorf("write of a plugin that is no singleton: %v", err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
