package h2test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// DialSmallWindows is a gRPC client of addr with static 64 KiB windows
// (gRPC's initial ones, without the BDP estimator growing them): data it
// has not read waits in the server rather than in the client's buffers.
// It is closed when the test ends.
func DialSmallWindows(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()), tokenOption(addr),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// CallFromOthers makes echo calls from n callers with connections of their
// own, each calls times, alternating unary calls and the server stream
// stream, and returns their latencies, sorted. Every call must succeed
// within 20s, and every stream bring stream.Count messages.
func CallFromOthers(t testing.TB, addr string, n, calls int, stream *echov1.EchoStreamRequest) []time.Duration {
	t.Helper()
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs []error
		wg   sync.WaitGroup
	)
	for range n {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), tokenOption(addr),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
		if err != nil {
			t.Fatal(err)
		}
		client := echov1.NewEchoServiceClient(conn)
		wg.Go(func() {
			defer conn.Close()
			for j := range calls {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				start := time.Now()
				var err error
				if j%2 == 0 {
					_, err = client.Echo(ctx, &echov1.EchoRequest{Message: "other"})
				} else {
					err = readStream(ctx, client, stream)
				}
				d := time.Since(start)
				cancel()
				mu.Lock()
				lat = append(lat, d)
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d calls of other callers failed; first: %v", len(errs), n*calls, errs[0])
	}
	slices.Sort(lat)
	return lat
}

// readStream makes the server stream req and reads it to its end.
func readStream(ctx context.Context, client echov1.EchoServiceClient, req *echov1.EchoStreamRequest) error {
	s, err := client.EchoStream(ctx, req)
	if err != nil {
		return err
	}
	var got int32
	for {
		if _, err := s.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
		got++
	}
	if got != req.Count {
		return fmt.Errorf("a stream of %d messages brought %d", req.Count, got)
	}
	return nil
}

// BigStream is a server stream of 16 messages of 1 MiB each.
var BigStream = &echov1.EchoStreamRequest{Message: strings.Repeat("x", 1<<20), Count: 16}

// CancelAfterFirst makes the server stream req n times, reads each one's
// first message and cancels it; every first message must come within 20s.
func CancelAfterFirst(t testing.TB, client echov1.EchoServiceClient, n int, req *echov1.EchoStreamRequest) {
	t.Helper()
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		s, err := client.EchoStream(ctx, req)
		if err == nil {
			_, err = s.Recv()
		}
		cancel()
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
}

// OpenStreams makes the server stream req n times under ctx and returns
// the streams unread.
func OpenStreams(t testing.TB, ctx context.Context, client echov1.EchoServiceClient, n int, req *echov1.EchoStreamRequest) []echov1.EchoService_EchoStreamClient {
	t.Helper()
	streams := make([]echov1.EchoService_EchoStreamClient, 0, n)
	for i := range n {
		s, err := client.EchoStream(ctx, req)
		if err != nil {
			t.Fatalf("slow stream %d: %v", i, err)
		}
		streams = append(streams, s)
	}
	return streams
}

// WantResourceExhausted reads each of streams to its end, which must be
// RESOURCE_EXHAUSTED: the server reset a stream its caller stopped reading.
func WantResourceExhausted(t testing.TB, streams []echov1.EchoService_EchoStreamClient) {
	t.Helper()
	for i, s := range streams {
		var err error
		for err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("stalled stream %d ended with %v, want RESOURCE_EXHAUSTED", i, err)
		}
	}
}
