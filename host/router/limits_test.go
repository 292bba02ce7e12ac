package router

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/plughost/plughost/internal/h2test"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

func TestConnectionWithoutACallIsClosed(t *testing.T) {
	tr := startRouter(t, Config{FirstCallTimeout: 300 * time.Millisecond})
	fr := h2test.Dial(t, tr.addr).Framer
	start := time.Now()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY before the connection ended: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 0 {
				t.Errorf("GOAWAY %v, last stream %d; want NO_ERROR, 0", ga.ErrCode, ga.LastStreamID)
			}
			break
		}
	}
	if _, err := fr.ReadFrame(); err == nil {
		t.Error("the connection stays open after GOAWAY")
	}
	t.Logf("closed %v after opening", time.Since(start).Round(time.Millisecond))
}

func TestReplayConnDropsAcknowledgedSettings(t *testing.T) {
	var server bytes.Buffer // what the agent's server writes
	fr := http2.NewFramer(&server, nil)
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 14})
	_ = fr.WriteWindowUpdate(0, 1<<20)
	_ = fr.WriteSettingsAck()
	_ = fr.WritePing(true, [8]byte{1})
	_ = fr.WriteSettingsAck()
	_ = fr.WriteData(1, true, []byte("hello"))
	all := server.Bytes()
	first := bytes.Index(all, []byte{0, 0, 0, 4, 1, 0, 0, 0, 0}) // the first SETTINGS ACK
	want := append(append([]byte{}, all[:first]...), all[first+9:]...)

	for _, chunk := range []int{1, 2, 5, 9, 10, len(all)} {
		a, b := net.Pipe()
		rc := &replayConn{Conn: a, skipAcks: 1}
		got := make(chan []byte)
		go func() {
			var out bytes.Buffer
			buf := make([]byte, 64)
			for out.Len() < len(want) {
				n, err := b.Read(buf)
				out.Write(buf[:n])
				if err != nil {
					break
				}
			}
			got <- out.Bytes()
		}()
		for off := 0; off < len(all); off += chunk {
			if n, err := rc.Write(all[off:min(off+chunk, len(all))]); err != nil || n != min(chunk, len(all)-off) {
				t.Fatalf("chunks of %d: Write = %d, %v", chunk, n, err)
			}
		}
		if g := <-got; !bytes.Equal(g, want) {
			t.Errorf("chunks of %d: wrote\n%x\nwant\n%x", chunk, g, want)
		}
		_ = a.Close()
		_ = b.Close()
	}
}

func TestWithoutPings(t *testing.T) {
	var in, want bytes.Buffer
	in.WriteString(http2.ClientPreface)
	want.WriteString(http2.ClientPreface)
	both := func(w func(fr *http2.Framer)) { w(http2.NewFramer(&in, nil)); w(http2.NewFramer(&want, nil)) }
	only := func(w func(fr *http2.Framer)) { w(http2.NewFramer(&in, nil)) }
	both(func(fr *http2.Framer) { _ = fr.WriteSettings() })
	only(func(fr *http2.Framer) { _ = fr.WritePing(false, [8]byte{1}) })
	both(func(fr *http2.Framer) { _ = fr.WritePing(true, [8]byte{2}) }) // an ACK stays
	only(func(fr *http2.Framer) { _ = fr.WritePing(false, [8]byte{3}) })
	both(func(fr *http2.Framer) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82}, EndHeaders: true})
	})
	both(func(fr *http2.Framer) { _ = fr.WritePing(false, [8]byte{4}) }) // read after the call: not answered
	both(func(fr *http2.Framer) { _ = fr.WriteData(1, false, []byte("partial")) })
	cut := in.Len() - 3 // the read stopped inside a frame
	if got := withoutPings(in.Bytes()[:cut], 2); !bytes.Equal(got, want.Bytes()[:want.Len()-3]) {
		t.Errorf("got\n%x\nwant\n%x", got, want.Bytes()[:want.Len()-3])
	}
}

func TestRelayOpensAnotherLocalConnectionPastTheServersLimit(t *testing.T) {
	e := newEnv(t)
	// Two relayed connections, each with more than half the agent's
	// server's limit of calls open to a service of its own (health), which
	// the relay passes to that server over its in-memory connection.
	ctx := testCtx(t)
	var watches []grpc.ServerStreamingClient[healthpb.HealthCheckResponse]
	for range 2 {
		conn := dialClient(t, e.addr)
		if _, err := echov1.NewEchoServiceClient(conn).Echo(ctx, &echov1.EchoRequest{Message: "first"}); err != nil {
			t.Fatal(err)
		}
		hc := healthpb.NewHealthClient(conn)
		for range maxConcurrentStreams * 3 / 5 {
			w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatal(err)
			}
			watches = append(watches, w)
		}
	}
	for i, w := range watches {
		if _, err := w.Recv(); err != nil {
			t.Fatalf("watch %d of %d: %v", i+1, len(watches), err)
		}
	}
}
