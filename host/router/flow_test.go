package router

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// newEnvConfig is newEnv with the router built from cfg.
func newEnvConfig(t testing.TB, cfg Config) *env {
	t.Helper()
	e := &env{testRouter: startRouter(t, cfg), be: startBackend(t, "1.0.0", reflectBoth)}
	e.b = e.be.backend(t, echoService, dynService)
	if err := e.r.Declare("echo", []string{echoService, dynService, chatServiceDesc.ServiceName}); err != nil {
		t.Fatal(err)
	}
	e.r.SetBackend("echo", e.b)
	e.echo = echov1.NewEchoServiceClient(e.conn)
	return e
}

// bigStream is a server stream of 16 messages of 1 MiB each.
var bigStream = &echov1.EchoStreamRequest{Message: strings.Repeat("x", 1<<20), Count: 16}

// dialSmallWindows is a gRPC client with static 64 KiB windows (gRPC's
// initial ones, without the BDP estimator growing them): data it has not
// read stays in the relay rather than in the client's buffers.
func dialSmallWindows(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestCancelledStreamsReturnWindow cancels 40 streams after their first
// message, each leaving up to a stream window of data queued in the relay,
// which must give the plugin connection's window back for all of it: 16
// such calls used to use up the connection's 16 MiB, and every later call
// to the plugin hung.
func TestCancelledStreamsReturnWindow(t *testing.T) {
	e := newEnv(t)
	client := echov1.NewEchoServiceClient(dialSmallWindows(t, e.addr))
	for i := range 40 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := client.EchoStream(ctx, bigStream)
		if err == nil {
			_, err = s.Recv()
		}
		cancel()
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.echo.Echo(ctx, &echov1.EchoRequest{Message: "after"}); err != nil {
		t.Fatalf("a call after 40 cancelled streams: %v", err)
	}
	s, err := e.echo.EchoStream(ctx, bigStream)
	if err != nil {
		t.Fatalf("a stream after 40 cancelled ones: %v", err)
	}
	msgs, err := collect(s)
	if err != nil || len(msgs) != 16 {
		t.Fatalf("a whole stream after 40 cancelled ones: %d messages, %v", len(msgs), err)
	}
}

// TestSlowReaderStallsOnlyItself opens 32 server streams that are never
// read, on a connection of their own, then makes calls from 11 other
// callers: they all succeed, and the unread streams are reset with
// RESOURCE_EXHAUSTED once they have stalled for StalledReadTimeout.
func TestSlowReaderStallsOnlyItself(t *testing.T) {
	e := newEnvConfig(t, Config{StalledReadTimeout: 3 * time.Second})
	slow := echov1.NewEchoServiceClient(dialSmallWindows(t, e.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var streams []echov1.EchoService_EchoStreamClient
	for i := range 32 {
		s, err := slow.EchoStream(ctx, bigStream)
		if err != nil {
			t.Fatalf("slow stream %d: %v", i, err)
		}
		streams = append(streams, s)
	}
	// The plugin has sent each stream all the window it had.
	testenv.WaitFor(t, 20*time.Second, "32 streams to fill their windows", func() error {
		if q := e.r.relay.Load().queued.Load(); q < 30<<20 {
			return fmt.Errorf("the relay holds %d bytes", q)
		}
		return nil
	})

	lat := callFromOthers(t, e.addr, 11, 5)
	t.Logf("11 callers × 5 calls beside 32 stalled streams: p50 %v, max %v; stalled streams reset meanwhile: %d",
		lat[len(lat)/2], lat[len(lat)-1], e.r.Stats().Plugins[0].Failures[codes.ResourceExhausted])

	testenv.WaitFor(t, 20*time.Second, "the stalled streams to be reset", func() error {
		if n := e.r.Stats().Plugins[0].Failures[codes.ResourceExhausted]; n < 32 {
			return errors.New("not all reset yet")
		}
		return nil
	})
	for i, s := range streams {
		var err error
		for err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("stalled stream %d ended with %v, want RESOURCE_EXHAUSTED", i, err)
		}
	}
	if q := e.r.relay.Load().queued.Load(); q != 0 {
		t.Fatalf("the relay still holds %d bytes for reset streams", q)
	}
}

// TestUnreadDataBounded opens 32 unread server streams with the relay's
// bound on unread data at 16 MiB and a stall timeout far away: the streams
// past the bound are reset with RESOURCE_EXHAUSTED at once, and the relay
// holds no more than the bound. Other callers' calls, which can hold up to
// 11 MiB between them for a moment, succeed: the streams whose data waited
// longest are reset first.
func TestUnreadDataBounded(t *testing.T) {
	const bound = 16 << 20
	e := newEnvConfig(t, Config{MaxUnreadBytes: bound, StalledReadTimeout: time.Hour})
	slow := echov1.NewEchoServiceClient(dialSmallWindows(t, e.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var streams []echov1.EchoService_EchoStreamClient
	for i := range 32 {
		s, err := slow.EchoStream(ctx, bigStream)
		if err != nil {
			t.Fatalf("slow stream %d: %v", i, err)
		}
		streams = append(streams, s)
	}
	// A stream holds at most its window (1 MiB), so 16 or 17 stay.
	testenv.WaitFor(t, 20*time.Second, "the streams past the bound to be reset", func() error {
		if n := e.r.Stats().Plugins[0].Failures[codes.ResourceExhausted]; n < 32-17 {
			return fmt.Errorf("%d reset", n)
		}
		return nil
	})
	if q := e.r.relay.Load().queued.Load(); q > bound {
		t.Fatalf("the relay holds %d bytes, above its bound of %d", q, bound)
	}
	callFromOthers(t, e.addr, 11, 5)
	cancel()
	for _, s := range streams {
		for err := error(nil); err == nil; {
			_, err = s.Recv()
		}
	}
	testenv.WaitFor(t, 10*time.Second, "the relay to let go of the cancelled streams' data", func() error {
		if q := e.r.relay.Load().queued.Load(); q != 0 {
			return fmt.Errorf("it holds %d bytes", q)
		}
		return nil
	})
}

// callFromOthers makes calls unary and streaming calls from n callers of
// their own, each calls times, and returns their latencies, sorted. Every
// call must succeed within 20s.
func callFromOthers(t *testing.T, addr string, n, calls int) []time.Duration {
	t.Helper()
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs []error
		wg   sync.WaitGroup
	)
	for range n {
		client := echov1.NewEchoServiceClient(dialClient(t, addr))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range calls {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				start := time.Now()
				var err error
				if j%2 == 0 {
					_, err = client.Echo(ctx, &echov1.EchoRequest{Message: "other"})
				} else {
					var s echov1.EchoService_EchoStreamClient
					var msgs []*echov1.EchoStreamResponse
					if s, err = client.EchoStream(ctx, &echov1.EchoStreamRequest{Message: strings.Repeat("y", 256<<10), Count: 8}); err == nil {
						msgs, err = collect(s)
					}
					if err == nil && len(msgs) != 8 {
						err = fmt.Errorf("a stream of 8 messages brought %d", len(msgs))
					}
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
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d calls of other callers failed; first: %v", len(errs), n*calls, errs[0])
	}
	slices.Sort(lat)
	return lat
}

// TestStreamErrorFlushedAtOnce sends a HEADERS frame with an invalid field
// name on a relayed connection and then nothing: the RST_STREAM must come
// without the client sending anything else.
func TestStreamErrorFlushedAtOnce(t *testing.T) {
	e := newEnv(t)
	rawStreamError(t, e.addr, "/"+echoService+"/Echo")
}

// rawStreamError relays a connection with a unary call to path (an echo
// Echo method), then opens a stream with an invalid header field name and
// waits for its RST_STREAM PROTOCOL_ERROR, sending nothing more.
func rawStreamError(t testing.TB, addr, path string) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fr := http2.NewFramer(nc, nc)
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	headers := func(id uint32, extra ...hpack.HeaderField) {
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		for _, f := range append([]hpack.HeaderField{
			{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
			{Name: ":path", Value: path}, {Name: ":authority", Value: "localhost"},
			{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
		}, extra...) {
			_ = enc.WriteField(f)
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: buf.Bytes(), EndHeaders: true, EndStream: len(extra) > 0}); err != nil {
			t.Fatal(err)
		}
	}
	headers(1)
	msg, _ := proto.Marshal(&echov1.EchoRequest{Message: "raw"})
	body := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	if err := fr.WriteData(1, true, append(body, msg...)); err != nil {
		t.Fatal(err)
	}
	// A call on stream 1 relays the connection; wait for its trailers.
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for ended := false; !ended; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer to the first call: %v", err)
		}
		if f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagHeadersEndStream) {
			if _, ok := f.(*http2.HeadersFrame); ok {
				ended = true
			}
		}
	}
	headers(3, hpack.HeaderField{Name: "X-Bad", Value: "1"})
	// Nothing else is sent: a relay that waits for the client's next frame
	// to flush never answers, and the read times out.
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no RST_STREAM for stream 3 after an invalid header field name: %v", err)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == 3 {
			if rst.ErrCode != http2.ErrCodeProtocol {
				t.Fatalf("RST_STREAM %v, want PROTOCOL_ERROR", rst.ErrCode)
			}
			return
		}
	}
}
