package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// FuzzHeaderBlocks reads a fuzzed connection with the relay's header
// reader, and the same frames with a plain HPACK decoder that never caches,
// and checks that the relay:
//   - never panics, and refuses a block with an error of the block's stream,
//     or of the connection when its HPACK state is lost;
//   - passes on a block only when it is well formed (RFC 9113 8.2 and 8.3:
//     lower-case token names, valid values, known pseudo-headers once each,
//     before the others, not a request's with a response's) and within the
//     header list limit, and then exactly as the plain decoder reads it,
//     whatever its cache holds;
//   - refuses as a stream error only a block the plain decoder could read, so
//     the connection's HPACK state stays in step with its peer's.
//
// With raw set the input is the frames themselves; otherwise it is a list of
// header blocks that the harness splits into HEADERS and CONTINUATION
// frames (see fuzzFrames), so the fuzzer works on HPACK, not framing.
func FuzzHeaderBlocks(f *testing.F) {
	for _, s := range grpcWireSeeds(f) {
		f.Add(s, true)
	}
	for _, s := range headerBlockSeeds(f) {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, data []byte, raw bool) {
		if !raw {
			data = fuzzFrames(t, data)
		}
		checkHeaderReader(t, data)
	})
}

// checkHeaderReader reads frames until an error, comparing the relay's
// header reader with a plain decoder.
func checkHeaderReader(t *testing.T, wire []byte) {
	fr := http2.NewFramer(nil, bytes.NewReader(wire))
	fr.SetMaxReadFrameSize(maxFrameBytes)
	hr := newHeaderReader()

	ref := http2.NewFramer(nil, bytes.NewReader(wire))
	ref.SetMaxReadFrameSize(maxFrameBytes)
	var decoded []hpack.HeaderField
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) { decoded = append(decoded, f) })
	dec.SetMaxStringLength(maxHeaderListBytes)

	for n := 0; ; n++ {
		got, err := hr.readFrame(fr)
		block, stream, want, rerr := refReadFrame(ref)
		if rerr != nil {
			// Framing errors are the framer's, which both read with: the
			// relay must stop where the plain reading stops.
			if err == nil {
				t.Fatalf("frame %d: the relay read %v where the frames end or are malformed (%v)", n, got, rerr)
			}
			return
		}
		if block == nil {
			if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("frame %d: the relay read %v (%v), want %v", n, got, err, want)
			}
			continue
		}
		decoded = decoded[:0]
		_, derr := dec.Write(block)
		if derr == nil {
			derr = dec.Close()
		}
		var se http2.StreamError
		var ce http2.ConnectionError
		switch {
		case len(block) > maxHeaderListBytes:
			if !errors.As(err, &ce) {
				t.Fatalf("block %d: %d bytes, over the %d-byte limit, gave %v, want a connection error", n, len(block), maxHeaderListBytes, err)
			}
			return
		case derr != nil:
			if !errors.As(err, &ce) || http2.ErrCode(ce) != http2.ErrCodeCompression {
				t.Fatalf("block %d (% x) does not decode (%v) but the relay gave %v, want COMPRESSION_ERROR", n, block, derr, err)
			}
			return
		case errors.As(err, &se):
			if se.StreamID != stream || se.Code != http2.ErrCodeProtocol || se.Cause == nil {
				t.Fatalf("block %d on stream %d: stream error %+v", n, stream, se)
			}
			if wellFormed(decoded) == nil {
				t.Fatalf("block %d: the relay refused a well-formed block (%v): %v", n, se.Cause, decoded)
			}
			continue
		case err != nil:
			t.Fatalf("block %d: the relay failed the connection (%v) on a block that decodes: %v", n, err, decoded)
		}
		mh, ok := got.(*http2.MetaHeadersFrame)
		if !ok || mh.StreamID != stream {
			t.Fatalf("block %d on stream %d: the relay read %v", n, stream, got)
		}
		if werr := wellFormed(decoded); werr != nil {
			t.Fatalf("block %d: the relay passed on a malformed block (%v): %v", n, werr, mh.Fields)
		}
		if !slices.Equal(mh.Fields, decoded) {
			t.Fatalf("block %d (% x): the relay read\n%v\nthe block holds\n%v", n, block, mh.Fields, decoded)
		}
	}
}

// refReadFrame reads the next frame, or the next whole header block and
// its stream, with the framer alone.
func refReadFrame(fr *http2.Framer) (block []byte, stream uint32, f http2.Frame, err error) {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, 0, nil, err
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			block, stream = append([]byte{}, f.HeaderBlockFragment()...), f.StreamID
			if f.HeadersEnded() {
				return block, stream, nil, nil
			}
		case *http2.ContinuationFrame:
			block = append(block, f.HeaderBlockFragment()...)
			if len(block) > maxHeaderListBytes || f.HeadersEnded() {
				return block, stream, nil, nil
			}
		default:
			return nil, 0, f, nil
		}
	}
}

// wellFormed checks a decoded header list as RFC 9113 8.2 and 8.3 say,
// within the relay's header list limit.
func wellFormed(fields []hpack.HeaderField) error {
	var size uint32
	var regular, request, response bool
	seen := map[string]bool{}
	for _, f := range fields {
		size += uint32(len(f.Name) + len(f.Value) + 32)
		if size > maxHeaderListBytes {
			return errors.New("over the header list limit")
		}
		if !httpguts.ValidHeaderFieldValue(f.Value) {
			return fmt.Errorf("value of %q", f.Name)
		}
		if name, ok := strings.CutPrefix(f.Name, ":"); ok {
			switch {
			case regular:
				return fmt.Errorf("pseudo-header %q after a regular field", f.Name)
			case seen[f.Name]:
				return fmt.Errorf("pseudo-header %q twice", f.Name)
			}
			seen[f.Name] = true
			switch name {
			case "method", "path", "scheme", "authority", "protocol":
				request = true
			case "status":
				response = true
			default:
				return fmt.Errorf("unknown pseudo-header %q", f.Name)
			}
			continue
		}
		regular = true
		if f.Name == "" || strings.ToLower(f.Name) != f.Name || !httpguts.ValidHeaderFieldName(f.Name) {
			return fmt.Errorf("field name %q", f.Name)
		}
	}
	if request && response {
		return errors.New("request and response pseudo-headers")
	}
	return nil
}

// fuzzFrames turns a fuzzed list of header blocks into frames. Each block
// is spelled as: a control byte, a two-byte length, the block. In the
// control byte, bits 0-2 are how many CONTINUATIONs it is split into, bit 3
// ends the stream, bit 4 puts a PING before it, bit 5 keeps the stream of
// the block before and bit 6 puts a PING between its HEADERS and first
// CONTINUATION, which the framer must refuse, and bit 7 repeats the block
// 64 times, so that a small input can reach the header list limit.
func fuzzFrames(t *testing.T, data []byte) []byte {
	var out bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	fr.AllowIllegalWrites = true
	stream := uint32(1)
	for len(data) >= 3 {
		ctl := data[0]
		n := min(int(data[1])<<8|int(data[2]), len(data)-3)
		block := data[3 : 3+n]
		data = data[3+n:]
		if ctl&0x80 != 0 {
			block = bytes.Repeat(block, 64)
		}
		if ctl&0x10 != 0 {
			_ = fr.WritePing(false, [8]byte{1})
		}
		if ctl&0x20 == 0 {
			stream += 2
		}
		parts := splitBlock(block, int(ctl&0x07)+1)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{
			StreamID: stream, BlockFragment: parts[0], EndStream: ctl&0x08 != 0, EndHeaders: len(parts) == 1,
		}); err != nil {
			t.Fatal(err)
		}
		for i, p := range parts[1:] {
			if i == 0 && ctl&0x40 != 0 {
				_ = fr.WritePing(false, [8]byte{2})
			}
			if err := fr.WriteContinuation(stream, i == len(parts)-2, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out.Bytes()
}

// splitBlock cuts block into n nearly equal fragments, each at most a
// frame long.
func splitBlock(block []byte, n int) [][]byte {
	n = max(n, (len(block)+maxFrameBytes-1)/maxFrameBytes)
	parts := make([][]byte, 0, n)
	for i := range n {
		parts = append(parts, block[i*len(block)/n:(i+1)*len(block)/n])
	}
	return parts
}

// blockSeed spells blocks as fuzzFrames reads them, each with control byte
// ctl.
func blockSeed(ctl byte, blocks ...[]byte) []byte {
	var b []byte
	for _, block := range blocks {
		b = append(b, ctl, byte(len(block)>>8), byte(len(block)))
		b = append(b, block...)
	}
	return b
}

// headerBlockSeeds are blocks a gRPC client and server send, repeated so
// the second ones are only indexes (the relay's cache), a table eviction,
// the malformed blocks the relay's tests refuse, and a list just over the
// limit.
func headerBlockSeeds(f *testing.F) [][]byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	block := func(fields ...string) []byte {
		buf.Reset()
		for i := 0; i < len(fields); i += 2 {
			if err := enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}); err != nil {
				f.Fatal(err)
			}
		}
		return bytes.Clone(buf.Bytes())
	}
	req := []string{":method", "POST", ":scheme", "http", ":path", "/echo.v1.EchoService/Echo", ":authority", "127.0.0.1:7000",
		"content-type", "application/grpc", "user-agent", "grpc-go/1.79.0", "te", "trailers", "grpc-timeout", "4999m", "x-k", "v"}
	resp := []string{":status", "200", "content-type", "application/grpc"}
	trailers := []string{"grpc-status", "0", "grpc-message", ""}
	sizeUpdate := append([]byte{0x3f, 0xe1, 0x1f}, block(req...)...) // table size 4096, then literals
	seeds := [][]byte{
		blockSeed(0x00, block(req...), block(req...), block(req...)),
		blockSeed(0x01, block(req...), block(req...)),
		blockSeed(0x28, block(resp...), block(trailers...), block(resp...), block(trailers...)),
		blockSeed(0x03, block(req...), block("x-big", strings.Repeat("b", 4000)), block(req...)),
		blockSeed(0x00, sizeUpdate, []byte{0x20}, block(req...)),
		blockSeed(0x10, block(req...)),
		blockSeed(0x41, block(req...)),
		blockSeed(0x00, []byte{0xff, 0xff, 0xff, 0x7f}),
		blockSeed(0x00, []byte{0x82, 0x86, 0x84}, []byte{0x82, 0x86, 0x84}),
	}
	for _, fields := range [][]string{
		{"x-a", "1", ":path", "/s/m"},
		{":path", "/s/m", "X-A", "1"},
		{":nope", "1"},
		{":path", "/a", ":path", "/b"},
		{":path", "/a", ":status", "200"},
		{"x-a", "a\x00b"},
		{"", "empty name"},
		{"x a", "space in name"},
	} {
		seeds = append(seeds, blockSeed(0x00, block(req...), block(fields...), block(req...)))
	}
	// Repeated 64 times, fields the encoder does not index: a block within
	// the limit whose list is over it, and a block over the limit.
	for _, n := range []int{1000, 1100} {
		buf.Reset()
		_ = enc.WriteField(hpack.HeaderField{Name: "x-big", Value: strings.Repeat("~", n), Sensitive: true})
		seeds = append(seeds, blockSeed(0x87, buf.Bytes()))
	}
	return seeds
}

// grpcWireSeeds are the frames a real gRPC client and server sent each
// other for unary and streaming calls with metadata, and a failed call with
// status details in its trailers: what the relay reads from callers and
// from plugins.
func grpcWireSeeds(f *testing.F) [][]byte {
	be := startBackend(f, "1.0.0", reflectNone)
	var mu sync.Mutex
	var sent, received bytes.Buffer
	conn, err := grpc.NewClient(be.addr, append(BackendDialOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return &tapConn{Conn: c, mu: &mu, sent: &sent, received: &received}, nil
		}))...)
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	echo := echov1.NewEchoServiceClient(conn)
	for i, msg := range []string{"a", "a", msgFail} {
		md := metadata.Pairs("x-call", fmt.Sprint(i), "x-bin", "\x00\x01", "authorization", "Bearer t")
		_, _ = echo.Echo(metadata.NewOutgoingContext(ctx, md), &echov1.EchoRequest{Message: msg})
	}
	if s, err := echo.EchoStream(ctx, &echov1.EchoStreamRequest{Message: "s", Count: 3}); err == nil {
		_, _ = collect(s)
	}
	if err := conn.Close(); err != nil {
		f.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	fromClient := bytes.TrimPrefix(sent.Bytes(), []byte(http2.ClientPreface))
	if len(fromClient) == sent.Len() || received.Len() == 0 {
		f.Fatalf("captured %d bytes from the client, %d from the server: not a gRPC conversation", sent.Len(), received.Len())
	}
	return [][]byte{bytes.Clone(fromClient), bytes.Clone(received.Bytes())}
}

// tapConn records what goes through a connection each way.
type tapConn struct {
	net.Conn
	mu             *sync.Mutex
	sent, received *bytes.Buffer
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.received.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *tapConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.sent.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}
