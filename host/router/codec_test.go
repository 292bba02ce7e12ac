package router

import (
	"time"

	"net"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// countingPool is a mem.BufferPool that counts the buffers out of it.
type countingPool struct {
	mem.BufferPool
	out atomic.Int64
}

func (p *countingPool) Get(n int) *[]byte { p.out.Add(1); return p.BufferPool.Get(n) }
func (p *countingPool) Put(b *[]byte)     { p.out.Add(-1); p.BufferPool.Put(b) }

// TestFramesReturnBuffers checks the raw frames give back every pooled
// buffer they take, on both hops and in every call shape: a missing Free
// leaves buffers out of the pool, a double one panics.
func TestFramesReturnBuffers(t *testing.T) {
	be := startBackend(t, "1.0.0", reflectBoth)
	serverPool := &countingPool{BufferPool: mem.DefaultBufferPool()}
	backendPool := &countingPool{BufferPool: mem.DefaultBufferPool()}

	r := New(Config{})
	srv := grpc.NewServer(append(r.ServerOptions(), experimental.BufferPool(serverPool))...)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient(be.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		experimental.WithBufferPool(backendPool))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	b := be.backend(t, echoService)
	b.Conn = conn
	if err := r.Declare("echo", []string{echoService, chatServiceDesc.ServiceName}); err != nil {
		t.Fatal(err)
	}
	r.SetBackend("echo", b)

	client := dialClient(t, lis.Addr().String())
	echo := echov1.NewEchoServiceClient(client)
	for _, size := range []int{10, 3000, 64 << 10, 1 << 20} {
		msg := strings.Repeat("x", size)
		if _, err := echo.Echo(testCtx(t), &echov1.EchoRequest{Message: msg}); err != nil {
			t.Fatal(err)
		}
		s, err := echo.EchoStream(testCtx(t), &echov1.EchoStreamRequest{Message: msg, Count: 3})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := collect(s); err != nil || len(got) != 3 {
			t.Fatalf("stream: %d, %v", len(got), err)
		}
		cs, err := client.NewStream(testCtx(t), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/test.v1.ChatService/Chat")
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := cs.SendMsg(wrapperspb.String(msg)); err != nil {
				t.Fatal(err)
			}
			if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != nil {
				t.Fatal(err)
			}
		}
		_ = cs.CloseSend()
		if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, "every pooled buffer back", func() bool {
		return serverPool.out.Load() == 0 && backendPool.out.Load() == 0
	})
}
