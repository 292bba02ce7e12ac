package router

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestAcksWhenAnAckArrivesWithTheirFrame: a client's SETTINGS and PING are
// acknowledged before its first call even when the same read brings its own
// SETTINGS and PING acknowledgements after them, as h2spec's handshake
// does (its SETTINGS ACK follows the agent's SETTINGS at once).
func TestAcksWhenAnAckArrivesWithTheirFrame(t *testing.T) {
	tr := startRouter(t, Config{})
	nc, err := net.Dial("tcp", tr.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))

	var burst bytes.Buffer
	burst.WriteString(http2.ClientPreface)
	w := http2.NewFramer(&burst, nil)
	_ = w.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
	_ = w.WriteSettingsAck()
	_ = w.WritePing(false, [8]byte{7})
	_ = w.WritePing(true, [8]byte{8})
	if _, err := nc.Write(burst.Bytes()); err != nil {
		t.Fatal(err)
	}

	fr := http2.NewFramer(nil, nc)
	var settingsAck, pingAck bool
	for !settingsAck || !pingAck {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("SETTINGS ACK %v, PING ACK %v before the read failed: %v", settingsAck, pingAck, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			settingsAck = settingsAck || f.IsAck()
		case *http2.PingFrame:
			if f.IsAck() && f.Data == [8]byte{7} {
				pingAck = true
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v %q before the acknowledgements", f.ErrCode, f.DebugData())
		}
	}
}
