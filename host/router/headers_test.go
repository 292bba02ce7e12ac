package router

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

func TestOnlyIndexed(t *testing.T) {
	for _, tc := range []struct {
		block []byte
		want  bool
	}{
		{[]byte{0x82, 0x86, 0x84}, true},        // three static indexes
		{[]byte{0xff, 0x80, 0x01, 0xbe}, true},  // index 255 in three bytes, then 62
		{[]byte{0xff, 0x80}, false},             // an index cut short
		{[]byte{0x82, 0x40, 0x01, 'a'}, false},  // a literal with indexing
		{[]byte{0x82, 0x3f, 0xe1, 0x1f}, false}, // a table size update
		{[]byte{0x82, 0x04, 0x01, '/'}, false},  // a literal without indexing
		{[]byte{}, true},
	} {
		if got := onlyIndexed(tc.block); got != tc.want {
			t.Errorf("onlyIndexed(% x) = %v, want %v", tc.block, got, tc.want)
		}
	}
}

// The same bytes decode to the same fields only while the table stays: a
// block that changes the table empties the cache, and a block that
// repeats comes from it.
func TestHeaderReaderCache(t *testing.T) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	block := func(fields ...string) []byte {
		buf.Reset()
		for i := 0; i < len(fields); i += 2 {
			_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return bytes.Clone(buf.Bytes())
	}
	hr := newHeaderReader()
	decode := func(b []byte) []hpack.HeaderField {
		t.Helper()
		hr.block = b
		fields, err := hr.decode(1)
		if err != nil {
			t.Fatal(err)
		}
		return fields
	}
	req := []string{":method", "POST", ":path", "/echo.v1.EchoService/Echo", "x-k", "one"}
	first := decode(block(req...)) // literals: fills both tables
	again := block(req...)         // now all indexes
	if !onlyIndexed(again) {
		t.Fatalf("the repeated block % x is not only indexes", again)
	}
	second := decode(again)
	if fmt.Sprint(first) != fmt.Sprint(second) {
		t.Fatalf("decoded %v, then %v", first, second)
	}
	if !sameSlice(decode(again), second) {
		t.Error("a repeated block was decoded again instead of coming from the cache")
	}
	// A big new field evicts every entry: the old indexes now mean
	// something else, and the cache must not answer for them.
	decode(block("x-big", strings.Repeat("b", 4000)))
	if e := hr.cache.get(again); e != nil {
		t.Error("the cache kept a block across a change of the table")
	}
	if got := decode(block(req...)); fmt.Sprint(got) != fmt.Sprint(first) {
		t.Errorf("after the eviction decoded %v, want %v", got, first)
	}
	// A long block of indexes decodes, but is not kept.
	long := bytes.Repeat([]byte{0x90}, maxCachedBlock+1) // accept-encoding: gzip, deflate
	if got := decode(long); len(got) != len(long) {
		t.Fatalf("decoded %d fields from %d indexes", len(got), len(long))
	}
	if hr.cache.get(long) != nil {
		t.Error("the cache kept a block longer than maxCachedBlock")
	}
}

func TestHeaderReaderRefusesMalformedBlocks(t *testing.T) {
	for name, fields := range map[string][]hpack.HeaderField{
		"pseudo after regular": {{Name: "x-a", Value: "1"}, {Name: ":path", Value: "/s/m"}},
		"upper-case name":      {{Name: ":path", Value: "/s/m"}, {Name: "X-A", Value: "1"}},
		"unknown pseudo":       {{Name: ":nope", Value: "1"}},
		"duplicate pseudo":     {{Name: ":path", Value: "/a"}, {Name: ":path", Value: "/b"}},
		"request and response": {{Name: ":path", Value: "/a"}, {Name: ":status", Value: "200"}},
		"control character":    {{Name: "x-a", Value: "a\x00b"}},
	} {
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		for _, f := range fields {
			_ = enc.WriteField(f)
		}
		hr := newHeaderReader()
		hr.block = buf.Bytes()
		_, err := hr.decode(7)
		var se http2.StreamError
		if !errors.As(err, &se) || se.StreamID != 7 || se.Code != http2.ErrCodeProtocol {
			t.Errorf("%s: %v, want a PROTOCOL_ERROR on stream 7", name, err)
		}
	}
	hr := newHeaderReader()
	hr.block = []byte{0xff, 0xff, 0xff, 0x7f} // an index past every table
	var ce http2.ConnectionError
	if _, err := hr.decode(1); !errors.As(err, &ce) || http2.ErrCode(ce) != http2.ErrCodeCompression {
		t.Errorf("undecodable block: %v, want a COMPRESSION_ERROR", err)
	}
}

// Calls whose metadata repeats, changes, and grows past the HPACK tables
// reach the plugin, and come back, exactly as sent: the relay's header
// caches never answer for a table that has moved on.
func TestRelayedMetadataThroughTableChanges(t *testing.T) {
	e := newEnv(t)
	big := strings.Repeat("v", 3000)
	for i := range 60 {
		md := metadata.Pairs("x-stable", "same")
		switch i % 4 {
		case 1:
			md.Set("x-changing", fmt.Sprint("value-", i))
		case 2:
			md.Set("x-big", fmt.Sprint(big, i)) // evicts most of both tables
		case 3:
			md.Set("x-other", "repeats")
		}
		ctx := metadata.NewOutgoingContext(testCtx(t), md)
		var hdr, trl metadata.MD
		if _, err := e.echo.Echo(ctx, &echov1.EchoRequest{Message: "m"}, grpc.Header(&hdr), grpc.Trailer(&trl)); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		got := e.be.echo.last.Load().md
		for k, v := range md {
			if fmt.Sprint(got.Get(k)) != fmt.Sprint(v) {
				t.Fatalf("call %d: the plugin saw %s=%.40q, want %.40q", i, k, got.Get(k), v)
			}
		}
		for _, k := range []string{"x-changing", "x-big", "x-other"} {
			if len(md.Get(k)) == 0 && len(got.Get(k)) > 0 {
				t.Fatalf("call %d: the plugin saw %s, which was not sent", i, k)
			}
		}
		if fmt.Sprint(hdr.Get("x-backend-version")) != "[1.0.0]" || fmt.Sprint(trl.Get("x-trailer")) != "[t-1.0.0]" {
			t.Fatalf("call %d: header %v, trailer %v", i, hdr, trl)
		}
	}
}

// A list sent again is encoded from the cache only while the encoder's
// table is as it was: every block the connection writes decodes, on the
// peer's side, to the fields given.
func TestEncodeCacheFollowsTheTable(t *testing.T) {
	c := &h2conn{peerMaxFrame: maxFrameBytes}
	c.wfr = http2.NewFramer(outWriter{c}, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	peer := http2.NewFramer(nil, nil)
	peer.ReadMetaHeaders = hpack.NewDecoder(4096, nil)

	resp := []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}, {Name: "x-k", Value: "v"}}
	big := []hpack.HeaderField{{Name: "x-big", Value: strings.Repeat("b", 4000)}}
	for i, fields := range [][]hpack.HeaderField{resp, resp, resp, big, resp, resp} {
		c.out = c.out[:0]
		c.writeHeadersLocked(1, fields, false)
		got, err := http2.NewFramer(nil, bytes.NewReader(c.out)).ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		// The peer decodes every block, in order, with one decoder.
		var decoded []hpack.HeaderField
		peerDec := peer.ReadMetaHeaders
		peerDec.SetEmitFunc(func(f hpack.HeaderField) { decoded = append(decoded, f) })
		if _, err := peerDec.Write(got.(*http2.HeadersFrame).HeaderBlockFragment()); err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if fmt.Sprint(decoded) != fmt.Sprint(fields) {
			t.Fatalf("block %d decoded to %.300s, want %.300s", i, fmt.Sprint(decoded), fmt.Sprint(fields))
		}
	}
	if c.hcache.get(resp) == nil {
		t.Error("a list sent again and again was not cached")
	}
}
