// Package h2test is what tests of the agent's gRPC port share to talk to
// it: a raw HTTP/2 client made of a bare Framer, for frames a gRPC client
// would never send; grpc-go clients with small fixed windows and latency
// of calls from other callers, for relay flow control; and a process's
// resident memory, for bounds on what an abusive caller makes the agent
// hold.
package h2test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// Conn is an HTTP/2 client made of a bare Framer. Its Framer reads header
// blocks whole, as *http2.MetaHeadersFrame.
type Conn struct {
	NC     net.Conn
	Framer *http2.Framer

	t    testing.TB
	enc  *hpack.Encoder
	buf  bytes.Buffer
	auth []string // the fields that carry the ACL token (SetToken)
}

// Dial opens a connection to addr, sends the client preface and a SETTINGS
// frame of settings, and closes the connection when the test ends. Every
// read and write on it fails after 20s unless the test sets another
// deadline on NC.
func Dial(t testing.TB, addr string, settings ...http2.Setting) *Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := &Conn{t: t, NC: nc, Framer: http2.NewFramer(nc, nc), auth: authFields(addr)}
	c.Framer.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.Framer.MaxHeaderListSize = 1 << 20
	c.enc = hpack.NewEncoder(&c.buf)
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := c.Framer.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return c
}

// Block encodes the header block of a gRPC call to path, with the ACL
// token set for the agent (SetToken), followed by the extra fields, given
// as name, value pairs.
func (c *Conn) Block(path string, extra ...string) []byte {
	fields := append([]string{":method", "POST", ":scheme", "http", ":path", path, ":authority", "localhost",
		"content-type", "application/grpc", "te", "trailers"}, c.auth...)
	return c.fields(append(fields, extra...)...)
}

// fields encodes a header block of name, value pairs.
func (c *Conn) fields(fields ...string) []byte {
	c.buf.Reset()
	for i := 0; i < len(fields); i += 2 {
		_ = c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return slices.Clone(c.buf.Bytes())
}

// Request opens stream id with a gRPC call to path, with the extra header
// fields given as name, value pairs; end ends the stream.
func (c *Conn) Request(id uint32, path string, end bool, extra ...string) {
	c.t.Helper()
	if err := c.Framer.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.Block(path, extra...), EndStream: end, EndHeaders: true}); err != nil {
		c.t.Fatal(err)
	}
}

// Headers sends a header block of the given fields, name, value pairs, on
// stream id.
func (c *Conn) Headers(id uint32, end bool, fields ...string) {
	c.t.Helper()
	if err := c.Framer.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.fields(fields...), EndStream: end, EndHeaders: true}); err != nil {
		c.t.Fatal(err)
	}
}

// Message sends m as one length-prefixed gRPC message on stream id.
func (c *Conn) Message(id uint32, m proto.Message, end bool) {
	c.t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		c.t.Fatal(err)
	}
	msg := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(b)))
	if err := c.Framer.WriteData(id, end, append(msg, b...)); err != nil {
		c.t.Fatal(err)
	}
}

// Until reads frames until match says one is what the test waits for, and
// returns it; it fails the test, naming what, if the connection ends first.
func (c *Conn) Until(what string, match func(http2.Frame) bool) http2.Frame {
	c.t.Helper()
	for {
		f, err := c.Framer.ReadFrame()
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return f
		}
	}
}

// GoAway reads until the server's GOAWAY and returns it.
func (c *Conn) GoAway() *http2.GoAwayFrame {
	c.t.Helper()
	return c.Until("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
}

// RSTOn reads until RST_STREAM on stream id and returns its code; a GOAWAY
// before it fails the test.
func (c *Conn) RSTOn(id uint32) http2.ErrCode {
	c.t.Helper()
	f := c.Until(fmt.Sprintf("RST_STREAM on stream %d", id), func(f http2.Frame) bool {
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			c.t.Fatalf("GOAWAY %v while waiting for RST_STREAM on stream %d", ga.ErrCode, id)
		}
		rst, ok := f.(*http2.RSTStreamFrame)
		return ok && rst.StreamID == id
	})
	return f.(*http2.RSTStreamFrame).ErrCode
}

// Ended reads until the trailers that end stream id.
func (c *Conn) Ended(id uint32) {
	c.t.Helper()
	c.Until(fmt.Sprintf("the end of stream %d", id), func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == id && h.StreamEnded()
	})
}

// StreamErrorFlushed relays a connection to addr with a unary call to path
// that sends first, then opens a stream with an invalid header field name
// and waits for its RST_STREAM PROTOCOL_ERROR, sending nothing more: a
// relay that flushes its answer only with the client's next frame never
// sends it.
func StreamErrorFlushed(t testing.TB, addr, path string, first proto.Message) {
	t.Helper()
	c := Dial(t, addr)
	defer c.NC.Close()
	// A call on stream 1 makes the connection a relayed one.
	c.Request(1, path, false)
	c.Message(1, first, true)
	c.Ended(1)
	c.Request(3, path, true, "X-Bad", "1")
	_ = c.NC.SetReadDeadline(time.Now().Add(5 * time.Second))
	if code := c.RSTOn(3); code != http2.ErrCodeProtocol {
		t.Fatalf("RST_STREAM %v for an invalid header field name, want PROTOCOL_ERROR", code)
	}
}
