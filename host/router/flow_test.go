package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/plughost/plughost/internal/h2test"
	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// otherStream is the server stream other callers make: 8 messages of 256 KiB.
var otherStream = &echov1.EchoStreamRequest{Message: strings.Repeat("y", 256<<10), Count: 8}

// TestCancelledStreamsReturnWindow cancels 40 streams after their first
// message, each leaving up to a stream window of data queued in the relay,
// which must give the plugin connection's window back for all of it: 16
// such calls used to use up the connection's 16 MiB, and every later call
// to the plugin hung.
func TestCancelledStreamsReturnWindow(t *testing.T) {
	e := newEnv(t)
	client := echov1.NewEchoServiceClient(h2test.DialSmallWindows(t, e.addr))
	h2test.CancelAfterFirst(t, client, 40, h2test.BigStream)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.echo.Echo(ctx, &echov1.EchoRequest{Message: "after"}); err != nil {
		t.Fatalf("a call after 40 cancelled streams: %v", err)
	}
	s, err := e.echo.EchoStream(ctx, h2test.BigStream)
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
	slow := echov1.NewEchoServiceClient(h2test.DialSmallWindows(t, e.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	streams := h2test.OpenStreams(t, ctx, slow, 32, h2test.BigStream)
	// The plugin has sent each stream all the window it had, or (on a
	// machine so loaded that filling them all takes longer than the
	// stall timeout) the first have stalled long enough to be reset.
	testenv.WaitFor(t, 20*time.Second, "32 streams to fill their windows", func() error {
		q := e.r.relay.Load().queued.Load()
		if q < 30<<20 && e.r.Stats().Plugins[0].Failures[codes.ResourceExhausted] == 0 {
			return fmt.Errorf("the relay holds %d bytes", q)
		}
		return nil
	})

	lat := h2test.CallFromOthers(t, e.addr, 11, 5, otherStream)
	t.Logf("11 callers × 5 calls beside 32 stalled streams: p50 %v, max %v; stalled streams reset meanwhile: %d",
		lat[len(lat)/2], lat[len(lat)-1], e.r.Stats().Plugins[0].Failures[codes.ResourceExhausted])

	testenv.WaitFor(t, 20*time.Second, "the stalled streams to be reset", func() error {
		if n := e.r.Stats().Plugins[0].Failures[codes.ResourceExhausted]; n < 32 {
			return errors.New("not all reset yet")
		}
		return nil
	})
	h2test.WantResourceExhausted(t, streams)
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
	slow := echov1.NewEchoServiceClient(h2test.DialSmallWindows(t, e.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	streams := h2test.OpenStreams(t, ctx, slow, 32, h2test.BigStream)
	// A stream holds at most its window (1 MiB), so 16 or 17 stay, and
	// those fill the relay up to the bound before the others call.
	testenv.WaitFor(t, 20*time.Second, "the streams past the bound to be reset and the rest to fill", func() error {
		if n := e.r.Stats().Plugins[0].Failures[codes.ResourceExhausted]; n < 32-17 {
			return fmt.Errorf("%d reset", n)
		}
		if q := e.r.relay.Load().queued.Load(); q < bound-relayStreamWindow {
			return fmt.Errorf("the relay holds %d bytes", q)
		}
		return nil
	})
	if q := e.r.relay.Load().queued.Load(); q > bound {
		t.Fatalf("the relay holds %d bytes, above its bound of %d", q, bound)
	}
	h2test.CallFromOthers(t, e.addr, 11, 5, otherStream)
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

// TestStreamErrorFlushedAtOnce sends a HEADERS frame with an invalid field
// name on a relayed connection and then nothing: the RST_STREAM must come
// without the client sending anything else.
func TestStreamErrorFlushedAtOnce(t *testing.T) {
	e := newEnv(t)
	h2test.StreamErrorFlushed(t, e.addr, "/"+echoService+"/Echo", &echov1.EchoRequest{Message: "raw"})
}
