package router

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Header blocks are decoded and encoded by the relay itself, not by
// http2.Framer, so that the blocks a connection repeats skip HPACK. A
// gRPC peer sends the same few fields on every call (the method, the
// content type, the status), and once its HPACK table holds them a block
// is nothing but table indexes: the same bytes every time, which decode to
// the same fields as long as the table has not changed. The relay keeps
// the last such blocks of each connection with their fields, and the last
// blocks it encoded from such fields, and reuses both until a block that
// changes a table comes by. On small calls HPACK was a third of the
// relay's own CPU time.

// headerCacheSize is how many blocks each cache keeps: enough for a
// connection's request headers, response headers and trailers, from a few
// peers.
const headerCacheSize = 8

// maxCachedBlock bounds the blocks the caches keep: a gRPC call's block of
// indexes is a few dozen bytes, and a peer must not make the relay hold
// megabytes per connection.
const maxCachedBlock = 256

// blockCache maps header blocks a connection received to their fields. The
// connection's reader owns it.
type blockCache struct {
	entries [headerCacheSize]blockEntry
	next    int
}

type blockEntry struct {
	block  []byte
	fields []hpack.HeaderField
	// backend is fields as a plugin gets them (backendFields), made once.
	backend []hpack.HeaderField
}

func (bc *blockCache) get(block []byte) *blockEntry {
	for i := range bc.entries {
		if e := &bc.entries[i]; e.fields != nil && bytes.Equal(e.block, block) {
			return e
		}
	}
	return nil
}

func (bc *blockCache) put(block []byte, fields []hpack.HeaderField) {
	bc.entries[bc.next] = blockEntry{block: slices.Clone(block), fields: fields}
	bc.next = (bc.next + 1) % headerCacheSize
}

func (bc *blockCache) reset() { *bc = blockCache{} }

// backendFieldsOf returns backendFields(fields), made once for fields this
// cache returned.
func (bc *blockCache) backendFieldsOf(fields []hpack.HeaderField) []hpack.HeaderField {
	for i := range bc.entries {
		if e := &bc.entries[i]; sameSlice(e.fields, fields) {
			if e.backend == nil {
				e.backend = slices.Clip(backendFields(fields))
			}
			return e.backend
		}
	}
	return backendFields(fields)
}

// encodeCache maps field lists a connection sent to the blocks they were
// encoded as. It is keyed by the lists themselves (those a blockCache
// returns, which nobody changes): an entry holds its list, so no other
// list can take its place in memory. It is guarded by the connection's mu,
// with the encoder.
type encodeCache struct {
	entries [headerCacheSize]encodeEntry
	next    int
}

type encodeEntry struct {
	fields []hpack.HeaderField
	block  []byte
}

func (ec *encodeCache) get(fields []hpack.HeaderField) []byte {
	for i := range ec.entries {
		if e := &ec.entries[i]; sameSlice(e.fields, fields) {
			return e.block
		}
	}
	return nil
}

func (ec *encodeCache) put(fields []hpack.HeaderField, block []byte) {
	ec.entries[ec.next] = encodeEntry{fields: fields, block: slices.Clone(block)}
	ec.next = (ec.next + 1) % headerCacheSize
}

func (ec *encodeCache) reset() { *ec = encodeCache{} }

// sameSlice reports whether a and b are the same list in memory.
func sameSlice(a, b []hpack.HeaderField) bool {
	return len(a) > 0 && len(a) == len(b) && &a[0] == &b[0]
}

// onlyIndexed reports whether block is made only of indexed fields, which
// leave the HPACK tables as they are (RFC 7541 6.1).
func onlyIndexed(block []byte) bool {
	for i := 0; i < len(block); {
		b := block[i]
		i++
		if b&0x80 == 0 {
			return false
		}
		if b&0x7f == 0x7f { // the index goes on in more bytes
			for {
				if i >= len(block) {
					return false
				}
				b = block[i]
				i++
				if b&0x80 == 0 {
					break
				}
			}
		}
	}
	return true
}

// headerReader assembles and decodes the header blocks read on one
// connection. The connection's reader owns it.
type headerReader struct {
	dec     *hpack.Decoder
	cache   blockCache
	block   []byte              // the block being assembled
	first   *http2.HeadersFrame // its HEADERS frame, while CONTINUATIONs follow
	fields  []hpack.HeaderField // decoded so far
	size    uint32              // decoded size so far, as RFC 9113 counts it
	invalid error               // the first malformed field, if any
}

func newHeaderReader() *headerReader {
	hr := &headerReader{}
	hr.dec = hpack.NewDecoder(4096, hr.emit)
	hr.dec.SetMaxStringLength(maxHeaderListBytes)
	return hr
}

func (hr *headerReader) emit(f hpack.HeaderField) {
	if hr.invalid != nil {
		return
	}
	if hr.size += f.Size(); hr.size > maxHeaderListBytes {
		hr.invalid = fmt.Errorf("header list larger than %d bytes", maxHeaderListBytes)
		return
	}
	switch {
	case !httpguts.ValidHeaderFieldValue(f.Value):
		hr.invalid = fmt.Errorf("invalid value of header field %q", f.Name)
	case strings.HasPrefix(f.Name, ":"):
		if len(hr.fields) > 0 && !strings.HasPrefix(hr.fields[len(hr.fields)-1].Name, ":") {
			hr.invalid = errors.New("pseudo-header field after regular field")
		}
	case !validWireName(f.Name):
		hr.invalid = fmt.Errorf("invalid header field name %q", f.Name)
	}
	hr.fields = append(hr.fields, f)
}

// validWireName reports whether name is a valid field name on HTTP/2's
// wire: a token, in lower case.
func validWireName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if !httpguts.IsTokenRune(r) || ('A' <= r && r <= 'Z') {
			return false
		}
	}
	return true
}

// readFrame reads the next frame from fr, assembling a HEADERS frame and
// its CONTINUATIONs into one *http2.MetaHeadersFrame. The framer itself
// checks that CONTINUATIONs follow their HEADERS and nothing else comes
// between. A malformed block is a stream error; one that cannot be decoded
// breaks the connection's HPACK state and is a connection error.
func (hr *headerReader) readFrame(fr *http2.Framer) (http2.Frame, error) {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		var end bool
		switch f := f.(type) {
		case *http2.HeadersFrame:
			hr.first = f
			hr.block = append(hr.block[:0], f.HeaderBlockFragment()...)
			end = f.HeadersEnded()
		case *http2.ContinuationFrame:
			hr.block = append(hr.block, f.HeaderBlockFragment()...)
			end = f.HeadersEnded()
		default:
			return f, nil
		}
		if len(hr.block) > maxHeaderListBytes {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if !end {
			continue
		}
		hf := hr.first
		hr.first = nil
		fields, err := hr.decode(hf.StreamID)
		if cap(hr.block) > 64<<10 {
			hr.block = nil
		}
		if err != nil {
			return nil, err
		}
		return &http2.MetaHeadersFrame{HeadersFrame: hf, Fields: fields}, nil
	}
}

// decode returns the fields of hr.block, from the cache when it holds them.
// The list returned is shared: nobody may change it (appending copies it).
func (hr *headerReader) decode(stream uint32) ([]hpack.HeaderField, error) {
	indexed := onlyIndexed(hr.block)
	cacheable := indexed && len(hr.block) <= maxCachedBlock
	if cacheable {
		if e := hr.cache.get(hr.block); e != nil {
			return e.fields, nil
		}
	} else {
		hr.cache.reset() // the block may change the decoder's table
	}
	hr.fields, hr.size, hr.invalid = hr.fields[:0], 0, nil
	if _, err := hr.dec.Write(hr.block); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if err := hr.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if hr.invalid == nil {
		hr.invalid = checkPseudos(hr.fields)
	}
	if hr.invalid != nil {
		return nil, http2.StreamError{StreamID: stream, Code: http2.ErrCodeProtocol, Cause: hr.invalid}
	}
	fields := slices.Clip(slices.Clone(hr.fields))
	if cap(hr.fields) > 1024 {
		hr.fields = nil
	}
	if cacheable {
		hr.cache.put(hr.block, fields)
	}
	return fields, nil
}

// checkPseudos checks a block's pseudo-header fields as RFC 9113 8.3 says:
// known ones, each once, not a request's and a response's together.
func checkPseudos(fields []hpack.HeaderField) error {
	var request, response bool
	for i, f := range fields {
		if !strings.HasPrefix(f.Name, ":") {
			break
		}
		switch f.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return fmt.Errorf("invalid pseudo-header %q", f.Name)
		}
		for _, g := range fields[:i] {
			if g.Name == f.Name {
				return fmt.Errorf("duplicate pseudo-header %q", f.Name)
			}
		}
	}
	if request && response {
		return errors.New("a request's and a response's pseudo-headers in one block")
	}
	return nil
}

// hasPseudo reports whether fields hold a pseudo-header field.
func hasPseudo(fields []hpack.HeaderField) bool {
	return len(fields) > 0 && strings.HasPrefix(fields[0].Name, ":")
}
