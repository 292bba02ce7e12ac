package test

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/h2test"
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
	unloaded := h2test.CallFromOthers(t, a.API, 11, 6, otherStream)
	t.Logf("11 callers × 6 calls, unloaded: p50 %v, max %v", unloaded[len(unloaded)/2], unloaded[len(unloaded)-1])

	t.Run("stream error flushed at once", func(t *testing.T) {
		h2test.StreamErrorFlushed(t, a.API, "/echo.v1.EchoService/Echo", &echov1.EchoRequest{Message: "raw"})
		callEcho(t, echo)
	})

	// A grpc-go client reads one message of a 16 × 1 MiB stream and
	// cancels, 40 times: the data the relay held for each call used to
	// keep a MiB of the plugin connection's 16 MiB window, and after about
	// 15 of them the plugin answered nobody through the agent.
	t.Run("cancelled streams", func(t *testing.T) {
		client := echov1.NewEchoServiceClient(h2test.DialSmallWindows(t, a.API))
		h2test.CancelAfterFirst(t, client, 40, h2test.BigStream)
		callEcho(t, echo)
		lat := h2test.CallFromOthers(t, a.API, 11, 6, otherStream)
		t.Logf("11 callers × 6 calls after 40 cancelled streams: p50 %v, max %v", lat[len(lat)/2], lat[len(lat)-1])
	})

	// 32 server streams nobody reads: before, 9 of 11 other callers' calls
	// failed. Now each holds at most its stream's window in the agent, the
	// others' calls succeed, and the stalled streams are reset once they
	// have read nothing for the relay's StalledReadTimeout (20s).
	t.Run("slow readers", func(t *testing.T) {
		rss0 := h2test.VmRSS(t, pid)
		slow := echov1.NewEchoServiceClient(h2test.DialSmallWindows(t, a.API))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// 256 KiB messages: the plugin holds a few of each stream's
		// messages while it waits for window, and echo's memory limit is
		// 256 MiB; four of them fill the relay's stream window.
		req := &echov1.EchoStreamRequest{Message: strings.Repeat("s", 256<<10), Count: 64}
		streams := h2test.OpenStreams(t, ctx, slow, 32, req)
		// Calls from others for 3s at least, well inside the 20s the
		// stalled streams are held.
		var lat []time.Duration
		for start := time.Now(); time.Since(start) < 3*time.Second; {
			lat = append(lat, h2test.CallFromOthers(t, a.API, 11, 6, otherStream)...)
		}
		slices.Sort(lat)
		rss := h2test.VmRSS(t, pid)
		t.Logf("11 callers beside 32 stalled streams: %d calls, p50 %v (unloaded %v), max %v; agent RSS %d MiB (before the streams %d MiB)",
			len(lat), lat[len(lat)/2], unloaded[len(unloaded)/2], lat[len(lat)-1], rss>>20, rss0>>20)
		// 32 streams hold at most a MiB each in the relay; the bound leaves
		// room for the garbage collector's slack.
		if bound := rss0 + 128<<20; rss > bound {
			t.Fatalf("agent RSS %d MiB beside 32 stalled streams, above the bound of %d MiB", rss>>20, bound>>20)
		}

		testenv.WaitFor(t, time.Minute, "the 32 stalled streams to be reset", func() error {
			f, err := failures(a, "echo")
			if err == nil && f["ResourceExhausted"] < 32 {
				err = fmt.Errorf("failed calls by code: %v", f)
			}
			return err
		})
		h2test.WantResourceExhausted(t, streams)
		callEcho(t, echo)
	})
}

// otherStream is the server stream other callers make: 4 messages of 64 KiB.
var otherStream = &echov1.EchoStreamRequest{Message: strings.Repeat("y", 64<<10), Count: 4}

// callEcho makes one unary call, which must succeed within 20s.
func callEcho(t testing.TB, echo echov1.EchoServiceClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "still there"}); err != nil {
		t.Fatalf("echo through the agent: %v", err)
	}
}

// failures reads from the agent's /metrics how many of plugin's calls
// ended with each status code other than OK.
func failures(a *Agent, plugin string) (map[string]int, error) {
	resp, err := a.HTTPGet("/metrics")
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
