package test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/plughost/plughost/internal/h2test"
	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// The agent's API port is an HTTP/2 server: these tests talk to it with
// bare frames, as gRPC's client never would, and check that it answers as
// RFC 9113 says and that one abusive connection neither grows the agent's
// memory nor slows other callers.

const echoStreamPath = "/echo.v1.EchoService/EchoStream"

// openEchoStream opens stream id on c: an EchoStream call that stays open
// for a minute once the agent's first response came (the caller has sent
// all it will, so the stream is half-closed on the agent's side).
func openEchoStream(c *h2test.Conn, id uint32) {
	c.Request(id, echoStreamPath, false)
	c.Message(id, &echov1.EchoStreamRequest{Message: "open", Count: 2, IntervalMs: 60_000}, true)
	c.Until("the first response", func(f http2.Frame) bool {
		d, ok := f.(*http2.DataFrame)
		return ok && d.StreamID == id
	})
}

// echoAgent starts an agent running echo 1.0.0.
func echoAgent(t *testing.T) *Agent {
	a := NewAgent(t, AgentOptions{})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")
	return a
}

// maxRSSGrowth is how much the agent's memory may grow while the memory
// tests attack it: they sent 256 MiB (one connection) and 300 MiB (20)
// before the first call, which it once held whole.
const maxRSSGrowth = 64 << 20

func TestRelayBoundsMemoryBeforeTheFirstCall(t *testing.T) {
	a := echoAgent(t)
	pid := a.cmd.Process.Pid
	base := h2test.VmRSS(t, pid)
	var peak int64
	sample := func() { peak = max(peak, h2test.VmRSS(t, pid)) }

	t.Run("unknown frames", func(t *testing.T) {
		c := h2test.Dial(t, a.API)
		payload := make([]byte, 16<<10)
		sent := 0
		for ; sent < 256<<20; sent += len(payload) {
			if err := c.Framer.WriteRawFrame(0xfa, 0, 0, payload); err != nil {
				break
			}
			if sent%(8<<20) == 0 {
				sample()
			}
		}
		sample()
		if sent >= 256<<20 {
			t.Errorf("the agent read 256 MiB of frames of an unknown type before any call")
		}
		if ga := c.GoAway(); ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
			t.Errorf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
		}
	})

	t.Run("unfinished header blocks", func(t *testing.T) {
		var wg sync.WaitGroup
		codes := make([]http2.ErrCode, 20)
		for i := range codes {
			c := h2test.Dial(t, a.API)
			wg.Go(func() {
				chunk := make([]byte, 16<<10)
				_ = c.Framer.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.Block(echoStreamPath)})
				for sent := 0; sent < 15<<20; sent += len(chunk) {
					if c.Framer.WriteContinuation(1, false, chunk) != nil {
						break
					}
				}
				codes[i] = http2.ErrCode(0xff)
				for {
					f, err := c.Framer.ReadFrame()
					if err != nil {
						return
					}
					if ga, ok := f.(*http2.GoAwayFrame); ok {
						codes[i] = ga.ErrCode
						return
					}
				}
			})
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		for waiting := true; waiting; {
			sample()
			select {
			case <-done:
				waiting = false
			case <-time.After(50 * time.Millisecond):
			}
		}
		sample()
		for i, code := range codes {
			if code != http2.ErrCodeProtocol && code != http2.ErrCodeEnhanceYourCalm {
				t.Errorf("connection %d: GOAWAY %v, want PROTOCOL_ERROR or ENHANCE_YOUR_CALM for a header block past the limit", i, code)
			}
		}
	})

	t.Logf("agent RSS %d MiB before, at most %d MiB during", base>>20, peak>>20)
	if peak > base+maxRSSGrowth {
		t.Errorf("agent RSS grew from %d to %d MiB, past the %d MiB bound", base>>20, peak>>20, maxRSSGrowth>>20)
	}
	// The agent still serves.
	if _, err := echov1.NewEchoServiceClient(a.Conn()).Echo(testenv.Context(t, 10*time.Second), &echov1.EchoRequest{Message: "after"}); err != nil {
		t.Fatal(err)
	}
}

func TestRelayAcknowledgesBeforeTheFirstCall(t *testing.T) {
	a := echoAgent(t)
	for _, path := range []string{"/echo.v1.EchoService/Echo", "/plughost.operator.v1.OperatorService/ListPlugins"} {
		t.Run(path, func(t *testing.T) {
			c := h2test.Dial(t, a.API, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
			_ = c.Framer.WritePing(false, [8]byte{1, 2, 3})
			var acks, pings int
			count := func(f http2.Frame) {
				switch f := f.(type) {
				case *http2.SettingsFrame:
					if f.IsAck() {
						acks++
					} else {
						_ = c.Framer.WriteSettingsAck()
					}
				case *http2.PingFrame:
					if f.IsAck() && f.Data == [8]byte{1, 2, 3} {
						pings++
					}
				}
			}
			// No call yet: both answers come.
			c.Until("SETTINGS ACK and PING ACK", func(f http2.Frame) bool {
				count(f)
				return acks == 1 && pings == 1
			})
			// A call now; the agent's own server (which takes a connection
			// whose first call is to the operator API) does not answer
			// them again.
			c.Request(1, path, false)
			c.Message(1, &echov1.EchoRequest{Message: "x"}, true)
			_ = c.Framer.WritePing(false, [8]byte{9})
			c.Until("the PING sent after the call", func(f http2.Frame) bool {
				count(f)
				p, ok := f.(*http2.PingFrame)
				return ok && p.IsAck() && p.Data == [8]byte{9}
			})
			if acks != 1 || pings != 1 {
				t.Errorf("%d SETTINGS ACKs and %d PING ACKs for one each", acks, pings)
			}
		})
	}
}

func TestRelayKeepsAnIdleKeepaliveConnection(t *testing.T) {
	a := echoAgent(t)
	// gRPC pings no more often than every 10s, whatever Time says.
	conn, err := grpc.NewClient(a.API, grpc.WithTransportCredentials(insecure.NewCredentials()), a.TokenOption(),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: time.Second, Timeout: time.Second, PermitWithoutStream: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			t.Fatalf("connection %v, not READY", s)
		}
	}
	idle, cancel := context.WithTimeout(context.Background(), 14*time.Second)
	defer cancel()
	if conn.WaitForStateChange(idle, connectivity.Ready) {
		t.Fatalf("the idle connection went from READY to %v: its keepalive ping got no answer", conn.GetState())
	}
	if _, err := echov1.NewEchoServiceClient(conn).Echo(testenv.Context(t, 10*time.Second), &echov1.EchoRequest{Message: "x"}); err != nil {
		t.Fatal(err)
	}
}

func TestRelayRejectsWhatRFC9113Rejects(t *testing.T) {
	a := echoAgent(t)
	c := h2test.Dial(t, a.API)

	// HEADERS on a half-closed (remote) stream: STREAM_CLOSED.
	openEchoStream(c, 1)
	c.Headers(1, false, "x-after-end", "1")
	if code := c.RSTOn(1); code != http2.ErrCodeStreamClosed {
		t.Errorf("HEADERS after END_STREAM: RST_STREAM %v, want STREAM_CLOSED", code)
	}

	// A second HEADERS without END_STREAM: PROTOCOL_ERROR.
	c.Request(3, echoStreamPath, false)
	c.Message(3, &echov1.EchoStreamRequest{Message: "open", Count: 2, IntervalMs: 60_000}, false)
	c.Headers(3, false, "x-more", "1")
	if code := c.RSTOn(3); code != http2.ErrCodeProtocol {
		t.Errorf("trailers without END_STREAM: RST_STREAM %v, want PROTOCOL_ERROR", code)
	}

	// A pseudo-header in trailers: PROTOCOL_ERROR.
	c.Request(5, echoStreamPath, false)
	c.Message(5, &echov1.EchoStreamRequest{Message: "open", Count: 2, IntervalMs: 60_000}, false)
	c.Headers(5, true, ":path", "/x")
	if code := c.RSTOn(5); code != http2.ErrCodeProtocol {
		t.Errorf("pseudo-header in trailers: RST_STREAM %v, want PROTOCOL_ERROR", code)
	}

	// The connection goes on.
	c.Request(7, "/echo.v1.EchoService/Echo", false)
	c.Message(7, &echov1.EchoRequest{Message: "x"}, true)
	c.Until("the answer on stream 7", func(f http2.Frame) bool {
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == 7 {
			t.Fatalf("RST_STREAM %v on a good call", rst.ErrCode)
		}
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == 7 && h.StreamEnded()
	})
}

func TestRelayRefusesStreamsPastTheLimit(t *testing.T) {
	a := echoAgent(t)
	c := h2test.Dial(t, a.API)
	var limit uint32
	c.Until("the agent's SETTINGS", func(f http2.Frame) bool {
		s, ok := f.(*http2.SettingsFrame)
		if ok && !s.IsAck() {
			limit, _ = s.Value(http2.SettingMaxConcurrentStreams)
		}
		return ok && !s.IsAck()
	})
	if limit == 0 || limit > 10_000 {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want a limit", limit)
	}
	// limit calls that wait for their request, then one more.
	for i := range limit + 1 {
		c.Request(2*i+1, echoStreamPath, false)
	}
	last := 2*limit + 1
	if code := c.RSTOn(last); code != http2.ErrCodeRefusedStream {
		t.Errorf("call %d of %d: RST_STREAM %v, want REFUSED_STREAM", limit+1, limit, code)
	}
}

func TestRelayRapidResetFlood(t *testing.T) {
	a := echoAgent(t)
	normal := echov1.NewEchoServiceClient(a.Conn())
	// latencies makes calls one after another for d and returns their
	// durations, sorted.
	latencies := func(d time.Duration) ([]time.Duration, error) {
		var out []time.Duration
		for end := time.Now().Add(d); time.Now().Before(end); {
			start := time.Now()
			if _, err := normal.Echo(testenv.Context(t, 10*time.Second), &echov1.EchoRequest{Message: "normal"}); err != nil {
				return out, err
			}
			out = append(out, time.Since(start))
		}
		slices.Sort(out)
		return out, nil
	}
	unloaded, err := latencies(time.Second)
	if err != nil {
		t.Fatal(err)
	}

	c := h2test.Dial(t, a.API)
	flooded := make(chan error, 1)
	var sent int
	go func() {
		defer close(flooded)
		block := c.Block("/echo.v1.EchoService/Echo")
		for id := uint32(1); id < 400_000; id += 2 {
			// The block is encoded once: it only holds indexed fields the
			// second time on, which leave the HPACK table alone.
			if err := c.Framer.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true}); err != nil {
				return
			}
			if err := c.Framer.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
				return
			}
			sent++
		}
		flooded <- errors.New("the agent took 200k reset calls on one connection")
	}()
	loaded, err := latencies(time.Second)
	if err != nil {
		t.Errorf("a normal caller's call failed during the flood: %v", err)
	}
	ga := c.GoAway()
	if ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
	}
	_ = c.NC.Close()
	if err := <-flooded; err != nil {
		t.Error(err)
	}
	p50 := func(d []time.Duration) time.Duration {
		if len(d) == 0 {
			return 0
		}
		return d[len(d)/2]
	}
	t.Logf("normal caller: p50 %v unloaded (%d calls), %v while one connection reset calls (%d calls); the flood sent %d before GOAWAY",
		p50(unloaded), len(unloaded), p50(loaded), len(loaded), sent)
}

func TestRelayClosesConnectionsThatMakeNoCall(t *testing.T) {
	a := echoAgent(t)
	// 60 connections that open HTTP/2 and never call: each is closed with
	// GOAWAY once router.DefaultFirstCallTimeout (20 s) has passed. (They
	// stay within the 64 connections without a call that one client
	// address may hold, max_pending_conns_per_client: past it the oldest
	// is closed at once, which TestIdleFloodLeavesRoomForNewClients tests.)
	conns := make([]*h2test.Conn, 60)
	for i := range conns {
		conns[i] = h2test.Dial(t, a.API)
		_ = conns[i].NC.SetDeadline(time.Now().Add(40 * time.Second))
	}
	start := time.Now()
	var wg sync.WaitGroup
	codes := make([]error, len(conns))
	for i, c := range conns {
		wg.Go(func() {
			for {
				f, err := c.Framer.ReadFrame()
				if err != nil {
					codes[i] = fmt.Errorf("no GOAWAY: %v", err)
					return
				}
				if ga, ok := f.(*http2.GoAwayFrame); ok {
					if ga.ErrCode != http2.ErrCodeNo {
						codes[i] = fmt.Errorf("GOAWAY %v, want NO_ERROR", ga.ErrCode)
					}
					return
				}
			}
		})
	}
	wg.Wait()
	for i, err := range codes {
		if err != nil {
			t.Errorf("connection %d: %v", i, err)
		}
	}
	t.Logf("%d connections without a call closed within %v", len(conns), time.Since(start).Round(time.Second))
	if _, err := echov1.NewEchoServiceClient(a.Conn()).Echo(testenv.Context(t, 10*time.Second), &echov1.EchoRequest{Message: "x"}); err != nil {
		t.Fatal(err)
	}
}
