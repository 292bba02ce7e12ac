package store

import (
	"time"

	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// serve runs a gRPC server on loopback with register's services and returns
// a client connection to it.
func serve(t *testing.T, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-done
	})
	return conn
}

func wantCode(t *testing.T, err error, code codes.Code, mentions ...string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("status %v (%v), want %v", st.Code(), err, code)
	}
	for _, m := range mentions {
		if !strings.Contains(st.Message(), m) {
			t.Errorf("message %q does not mention %q", st.Message(), m)
		}
	}
}

func TestServerStatusCodes(t *testing.T) {
	s := newMemStore(t, func(c *Config) {
		c.MaxValueBytes = 16
		c.Quotas = map[string]Quota{"tiny": {MaxKeys: 1}}
		c.WatchHistory = 2
	})
	conn := serve(t, func(g *grpc.Server) {
		storev1.RegisterStoreServiceServer(g, NewServer(s))
	})
	c := storev1.NewStoreServiceClient(conn)
	ctx := testenv.Context(t, 20*time.Second)

	p, err := c.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("k"), Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("k"), Value: []byte("w"), ExpectedModRevision: rev(p.GetRevision() + 7)})
	wantCode(t, err, codes.FailedPrecondition, `"k"`, itoa(p.GetRevision()), itoa(p.GetRevision()+7))
	_, err = c.Delete(ctx, &storev1.DeleteRequest{Namespace: "app", Key: []byte("k"), ExpectedModRevision: rev(1)})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = c.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("big"), Value: make([]byte, 17)})
	wantCode(t, err, codes.ResourceExhausted, "17 bytes > max 16 bytes")
	if _, err := c.Put(ctx, &storev1.PutRequest{Namespace: "tiny", Key: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Put(ctx, &storev1.PutRequest{Namespace: "tiny", Key: []byte("b")})
	wantCode(t, err, codes.ResourceExhausted, `"tiny"`, "max 1 keys")
	_, err = c.Get(ctx, &storev1.GetRequest{Namespace: "app"})
	wantCode(t, err, codes.InvalidArgument, "key is empty")
	_, err = c.Get(ctx, &storev1.GetRequest{Key: []byte("k")})
	wantCode(t, err, codes.InvalidArgument, "namespace is required")
	_, err = c.List(ctx, &storev1.ListRequest{Namespace: "app", Prefix: []byte("a"), Start: []byte("a")})
	wantCode(t, err, codes.InvalidArgument)

	for range 5 {
		put(t, s, "app", "k", "v")
	}
	stream, err := c.Watch(ctx, &storev1.WatchRequest{Namespace: "app", StartRevision: p.GetRevision()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.OutOfRange, "list again")

	// A node that is not the leader answers Unavailable.
	cfg := DefaultConfig()
	cfg.InMemory = true
	follower, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer follower.Close()
	fc := storev1.NewStoreServiceClient(serve(t, func(g *grpc.Server) { storev1.RegisterStoreServiceServer(g, NewServer(follower)) }))
	_, err = fc.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("k")})
	wantCode(t, err, codes.Unavailable, "not the leader")
}

func TestServerBackupRestoreStreams(t *testing.T) {
	s := newMemStore(t)
	// More than one chunk of data.
	for i := range 3 {
		if _, err := s.Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte{byte('a' + i)}, Value: bytes.Repeat([]byte{byte(i)}, 500<<10)}); err != nil {
			t.Fatal(err)
		}
	}
	want := listAll(t, s, "app")
	conn := serve(t, func(g *grpc.Server) { storev1.RegisterStoreAdminServiceServer(g, NewServer(s)) })
	admin := storev1.NewStoreAdminServiceClient(conn)
	ctx := testenv.Context(t, 20*time.Second)

	bs, err := admin.Backup(ctx, &storev1.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var file []byte
	chunks := 0
	for {
		msg, err := bs.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		file = append(file, msg.GetChunk()...)
		chunks++
	}
	if chunks < 2 {
		t.Errorf("backup of 1.5 MB came in %d chunk(s)", chunks)
	}

	restore := func(file []byte, force bool) (*storev1.RestoreResponse, error) {
		rs, err := admin.Restore(ctx)
		if err != nil {
			return nil, err
		}
		if err := rs.Send(&storev1.RestoreRequest{Force: force}); err != nil {
			return nil, err
		}
		for len(file) > 0 {
			n := min(len(file), 64<<10)
			if err := rs.Send(&storev1.RestoreRequest{Chunk: file[:n]}); err != nil {
				return nil, err
			}
			file = file[n:]
		}
		return rs.CloseAndRecv()
	}
	if _, err := s.Delete(ctx, &storev1.DeleteRequest{Namespace: "app", Key: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	_, err = restore(file[:len(file)-10], true)
	wantCode(t, err, codes.InvalidArgument, "corrupt backup")
	if get(t, s, "app", "a") != nil {
		t.Fatal("a refused restore changed the data")
	}
	_, err = restore(file, false)
	wantCode(t, err, codes.FailedPrecondition, "force")
	if get(t, s, "app", "a") != nil {
		t.Fatal("a restore without force changed a store that holds data")
	}
	resp, err := restore(file, true)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetKeys() != 3 || !equalKVs(listAll(t, s, "app"), want) {
		t.Errorf("restore over gRPC: %v", resp)
	}
}
