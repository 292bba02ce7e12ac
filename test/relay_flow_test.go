package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
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

// TestRelayFlowControl runs, against a real agent and echo plugin, the
// callers that used to take the plugin away from everyone: callers that
// cancel large streams, callers that stop reading, and a stream error the
// relay did not send until the client's next frame.
func TestRelayFlowControl(t *testing.T) {
	a := NewAgent(t, AgentOptions{})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")
	echo := echov1.NewEchoServiceClient(a.Conn())
	pid := a.cmd.Process.Pid

	// The unloaded latency of the other callers' calls, to compare with.
	unloaded := callFromOthers(t, a.API, 11, 6)
	t.Logf("11 callers × 6 calls, unloaded: p50 %v, max %v", unloaded[len(unloaded)/2], unloaded[len(unloaded)-1])

	t.Run("stream error flushed at once", func(t *testing.T) {
		rawStreamError(t, a.API)
		callEcho(t, echo)
	})

	// A grpc-go client reads one message of a 16 × 1 MiB stream and
	// cancels, 40 times: the data the relay held for each call used to
	// keep a MiB of the plugin connection's 16 MiB window, and after about
	// 15 of them the plugin answered nobody through the agent.
	t.Run("cancelled streams", func(t *testing.T) {
		client := echov1.NewEchoServiceClient(dialSmallWindows(t, a.API))
		for i := range 40 {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			s, err := client.EchoStream(ctx, bigStream)
			if err == nil {
				_, err = s.Recv()
			}
			cancel()
			if err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
		}
		callEcho(t, echo)
		lat := callFromOthers(t, a.API, 11, 6)
		t.Logf("11 callers × 6 calls after 40 cancelled streams: p50 %v, max %v", lat[len(lat)/2], lat[len(lat)-1])
	})

	// 32 server streams nobody reads: before, 9 of 11 other callers' calls
	// failed. Now each holds at most its stream's window in the agent, the
	// others' calls succeed, and the stalled streams are reset once they
	// have read nothing for the relay's StalledReadTimeout (20s).
	t.Run("slow readers", func(t *testing.T) {
		rss0 := rssBytes(t, pid)
		slow := echov1.NewEchoServiceClient(dialSmallWindows(t, a.API))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var streams []echov1.EchoService_EchoStreamClient
		// 256 KiB messages: the plugin holds a few of each stream's
		// messages while it waits for window, and echo's memory limit is
		// 256 MiB; four of them fill the relay's stream window.
		req := &echov1.EchoStreamRequest{Message: strings.Repeat("s", 256<<10), Count: 64}
		for i := range 32 {
			s, err := slow.EchoStream(ctx, req)
			if err != nil {
				t.Fatalf("slow stream %d: %v", i, err)
			}
			streams = append(streams, s)
		}
		// Calls from others for 3s at least, well inside the 20s the
		// stalled streams are held.
		var lat []time.Duration
		for start := time.Now(); time.Since(start) < 3*time.Second; {
			lat = append(lat, callFromOthers(t, a.API, 11, 6)...)
		}
		slices.Sort(lat)
		rss := rssBytes(t, pid)
		t.Logf("11 callers beside 32 stalled streams: %d calls, p50 %v (unloaded %v), max %v; agent RSS %d MiB (before the streams %d MiB)",
			len(lat), lat[len(lat)/2], unloaded[len(unloaded)/2], lat[len(lat)-1], rss>>20, rss0>>20)
		// 32 streams hold at most a MiB each in the relay; the bound leaves
		// room for the garbage collector's slack.
		if bound := rss0 + 128<<20; rss > bound {
			t.Fatalf("agent RSS %d MiB beside 32 stalled streams, above the bound of %d MiB", rss>>20, bound>>20)
		}

		testenv.WaitFor(t, time.Minute, "the 32 stalled streams to be reset", func() error {
			f, err := failures(a.HTTP, "echo")
			if err == nil && f["ResourceExhausted"] < 32 {
				err = fmt.Errorf("failed calls by code: %v", f)
			}
			return err
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
		callEcho(t, echo)
	})
}

// bigStream is a server stream of 16 messages of 1 MiB each.
var bigStream = &echov1.EchoStreamRequest{Message: strings.Repeat("x", 1<<20), Count: 16}

// dialSmallWindows is a gRPC client with static 64 KiB windows (gRPC's
// initial ones, without the BDP estimator growing them): data it has not
// read waits in the agent rather than in the client's buffers.
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

// callEcho makes one unary call, which must succeed within 20s.
func callEcho(t testing.TB, echo echov1.EchoServiceClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "still there"}); err != nil {
		t.Fatalf("echo through the agent: %v", err)
	}
}

// callFromOthers makes unary and streaming calls from n callers with
// connections of their own, each calls times, and returns their latencies,
// sorted. Every call must succeed within 20s.
func callFromOthers(t testing.TB, addr string, n, calls int) []time.Duration {
	t.Helper()
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs []error
		wg   sync.WaitGroup
	)
	for range n {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		client := echov1.NewEchoServiceClient(conn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			for j := range calls {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				start := time.Now()
				var err error
				if j%2 == 0 {
					_, err = client.Echo(ctx, &echov1.EchoRequest{Message: "other"})
				} else {
					var s echov1.EchoService_EchoStreamClient
					if s, err = client.EchoStream(ctx, &echov1.EchoStreamRequest{Message: strings.Repeat("y", 64<<10), Count: 4}); err == nil {
						for err == nil {
							_, err = s.Recv()
						}
						if errors.Is(err, io.EOF) {
							err = nil
						}
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

// rssBytes is the resident memory of process pid.
func rssBytes(t testing.TB, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// failures reads from the agent's /metrics how many of plugin's calls
// ended with each status code other than OK.
func failures(httpAddr, plugin string) (map[string]int, error) {
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	re := regexp.MustCompile(`(?m)^plughost_router_call_failures_total\{code="(\w+)",plugin="([^"]*)"\} (\S+)$`)
	out := make(map[string]int)
	for _, m := range re.FindAllSubmatch(body, -1) {
		if string(m[2]) == plugin {
			v, err := strconv.ParseFloat(string(m[3]), 64)
			if err != nil {
				return nil, err
			}
			out[string(m[1])] = int(v)
		}
	}
	return out, nil
}

// rawStreamError relays a connection with an echo call, then opens a
// stream with an invalid header field name and waits for its RST_STREAM
// PROTOCOL_ERROR, sending nothing more.
func rawStreamError(t testing.TB, addr string) {
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
			{Name: ":path", Value: "/echo.v1.EchoService/Echo"}, {Name: ":authority", Value: "localhost"},
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
	// The call on stream 1 makes the connection a relayed one; wait for
	// its trailers.
	_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	for ended := false; !ended; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer to the first call: %v", err)
		}
		if h, ok := f.(*http2.HeadersFrame); ok && h.StreamID == 1 && h.StreamEnded() {
			ended = true
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
