package store

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/fsm"
)

// TestFencedWritesOverGRPC: every kind of write a plugin instance makes
// to its singleton's namespace is refused at an old epoch with
// FAILED_PRECONDITION and an ErrorInfo naming both epochs, and applied at
// the current one; an operator's unfenced write is applied.
func TestFencedWritesOverGRPC(t *testing.T) {
	s := newMemStore(t)
	conn := serve(t, func(g *grpc.Server) { storev1.RegisterStoreServiceServer(g, NewServer(s)) })
	c := storev1.NewStoreServiceClient(conn)
	ctx := testenv.Context(t, 20*time.Second)

	old := put(t, s, SystemNamespace, string(fsm.SingletonKey("counter")), `{"plugin":"counter","active":"n2"}`).GetRevision()
	cur := put(t, s, SystemNamespace, string(fsm.SingletonKey("counter")), `{"plugin":"counter","active":"n3"}`).GetRevision()
	stale := &storev1.Fence{Epoch: old}
	fresh := 0
	writes := map[string]func(*storev1.Fence) error{
		"put": func(f *storev1.Fence) error {
			_, err := c.Put(ctx, &storev1.PutRequest{Namespace: "counter", Key: []byte("n"), Value: []byte("1"), Fence: f})
			return err
		},
		"conditional put": func(f *storev1.Fence) error {
			fresh++
			_, err := c.Put(ctx, &storev1.PutRequest{Namespace: "counter", Key: []byte("new" + itoa(int64(fresh))), Value: []byte("1"), ExpectedModRevision: rev(0), Fence: f})
			return err
		},
		"delete": func(f *storev1.Fence) error {
			_, err := c.Delete(ctx, &storev1.DeleteRequest{Namespace: "counter", Key: []byte("n"), Fence: f})
			return err
		},
		"delete range": func(f *storev1.Fence) error {
			_, err := c.DeleteRange(ctx, &storev1.DeleteRangeRequest{Namespace: "counter", Prefix: []byte("n"), Fence: f})
			return err
		},
		"txn": func(f *storev1.Fence) error {
			_, err := c.Txn(ctx, &storev1.TxnRequest{Namespace: "counter", Fence: f, Success: []*storev1.TxnOp{
				{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: []byte("n"), Value: []byte("2")}}},
			}})
			return err
		},
	}
	for name, write := range writes {
		t.Run(name, func(t *testing.T) {
			before, kvs := s.Revision(), listAll(t, s, "counter")
			err := write(stale)
			wantCode(t, err, codes.FailedPrecondition, "write from epoch "+itoa(old)+" refused: singleton counter's current epoch is "+itoa(cur)+" (active on n3)")
			info := storev1.ErrorInfo(err)
			if info.GetReason() != storev1.ReasonStaleEpoch || info.GetMetadata()[storev1.MetadataEpoch] != itoa(old) ||
				info.GetMetadata()[storev1.MetadataCurrentEpoch] != itoa(cur) {
				t.Errorf("error info %v", info)
			}
			// The refusal is a decision of the leader's: a follower that
			// forwarded the write gives back the same error.
			if back := fromStatus(err); !errors.Is(back, ErrStaleEpoch) || storev1.ErrorReason(back) != storev1.ReasonStaleEpoch {
				t.Errorf("forwarded refusal reads back as %v", back)
			}
			if after := listAll(t, s, "counter"); !equalKVs(after, kvs) {
				t.Errorf("refused write changed the namespace: %v, was %v", after, kvs)
			}
			if err := write(&storev1.Fence{Epoch: cur}); err != nil {
				t.Errorf("write at the current epoch: %v", err)
			}
			if err := write(nil); err != nil {
				t.Errorf("unfenced write: %v", err)
			}
			if s.Revision() < before+2 {
				t.Errorf("revision %d after two writes from %d", s.Revision(), before)
			}
		})
	}
	_, err := c.Put(ctx, &storev1.PutRequest{Namespace: "counter", Key: []byte("n"), Fence: &storev1.Fence{Epoch: -1}})
	wantCode(t, err, codes.InvalidArgument, "fence epoch -1 is negative")
}
