package sdk

import (
	"context"
	"testing"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"google.golang.org/grpc"
)

// recordingClient answers writes with a fixed revision and records the
// reads it is sent; it checks what the client puts on the wire.
type recordingClient struct {
	storev1.StoreServiceClient // nil: other calls panic
	rev                        int64
	gets                       []*storev1.GetRequest
	lists                      []*storev1.ListRequest
}

func (c *recordingClient) Put(_ context.Context, _ *storev1.PutRequest, _ ...grpc.CallOption) (*storev1.PutResponse, error) {
	return &storev1.PutResponse{Revision: c.rev}, nil
}

func (c *recordingClient) Txn(_ context.Context, _ *storev1.TxnRequest, _ ...grpc.CallOption) (*storev1.TxnResponse, error) {
	return &storev1.TxnResponse{Revision: c.rev}, nil
}

func (c *recordingClient) Get(_ context.Context, req *storev1.GetRequest, _ ...grpc.CallOption) (*storev1.GetResponse, error) {
	c.gets = append(c.gets, req)
	return &storev1.GetResponse{Kv: &storev1.KeyValue{Key: req.GetKey(), ModRevision: 1}}, nil
}

func (c *recordingClient) List(_ context.Context, req *storev1.ListRequest, _ ...grpc.CallOption) (*storev1.ListResponse, error) {
	c.lists = append(c.lists, req)
	return &storev1.ListResponse{}, nil
}

// TestReadYourWrites checks that session reads wait for the highest revision
// the plugin wrote, in every view, and that other reads do not.
func TestReadYourWrites(t *testing.T) {
	ctx := context.Background()
	rpc := &recordingClient{}
	base := newStoreClient(nil)
	base.rpc = rpc
	session := base.WithConsistency(Session)

	rpc.rev = 40
	if _, err := base.Put(ctx, "a", nil, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	rpc.rev = 42
	if _, err := session.Txn(ctx, Txn{}); err != nil {
		t.Fatal(err)
	}
	rpc.rev = 41 // an older revision must not lower the mark
	if _, err := base.Put(ctx, "b", nil, PutOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, st := range []Store{session, base.WithConsistency(Stale), base} {
		if _, err := st.Get(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if _, err := st.List(ctx, "", ListOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	want := []struct {
		c   storev1.Consistency
		min int64
	}{
		{storev1.Consistency_CONSISTENCY_SESSION, 42},
		{storev1.Consistency_CONSISTENCY_STALE, 0},
		{storev1.Consistency_CONSISTENCY_LINEARIZABLE, 0},
	}
	for i, w := range want {
		g, l := rpc.gets[i], rpc.lists[i]
		if g.GetConsistency() != w.c || g.GetMinRevision() != w.min || l.GetConsistency() != w.c || l.GetMinRevision() != w.min {
			t.Errorf("read %d: get %v/%d, list %v/%d; want %v/%d", i,
				g.GetConsistency(), g.GetMinRevision(), l.GetConsistency(), l.GetMinRevision(), w.c, w.min)
		}
	}
}
