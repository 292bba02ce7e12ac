package router

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The relay's HTTP/2 settings. Its windows are the ones the agent's gRPC
// server is built with (see ServerOptions), so a connection the relay hands
// to that server (see relay.classify) was told the same windows by both.
const (
	relayStreamWindow = streamWindowBytes
	relayConnWindow   = connWindowBytes
	// maxFrameBytes is the largest frame the relay reads: the protocol's
	// default, which it never raises.
	maxFrameBytes = 16 << 10
	// maxHeaderListBytes bounds a header block, encoded as the relay
	// assembles it from HEADERS and CONTINUATION frames and decoded: the
	// limit the agent's gRPC server is built with and advertises (see
	// ServerOptions), so a caller meets the same one whichever of them
	// serves its connection. gRPC's own default is moving from 16 MiB down
	// to 8 KiB; metadata is small, and a peer must not make the agent hold
	// megabytes per stream.
	maxHeaderListBytes = 64 << 10
	// maxConcurrentStreams is how many calls a caller may have open at once
	// on one connection, advertised by the relay and by the agent's gRPC
	// server alike: more are refused with REFUSED_STREAM, as gRPC's server
	// does.
	maxConcurrentStreams = 1000
	// maxBeforeCallBytes bounds what the relay reads from a connection
	// before its first call: it keeps those bytes to replay them to the
	// agent's own server (see relay.classified), and a first call needs no
	// more than its header block and the few frames around it. A caller
	// that sends more is sent GOAWAY ENHANCE_YOUR_CALM.
	maxBeforeCallBytes = maxHeaderListBytes + 4*readBufferBytes
	// resetBurst and resetRate bound how fast a caller may reset the
	// calls it opens on one connection (CVE-2023-44487, "rapid reset"):
	// each reset call still cost its plugin a stream, and a flood of them
	// slows every other caller. Past resetBurst resets plus resetRate a
	// second, the connection gets GOAWAY ENHANCE_YOUR_CALM.
	resetBurst = 2 * maxConcurrentStreams
	resetRate  = 1000
	// maxOutBytes is how much a connection's writer may have waiting before
	// the relay stops moving DATA onto it: a peer that advertises huge
	// windows and reads slowly backs up to its senders instead of growing
	// the agent's memory.
	maxOutBytes = 4 << 20
	// readBufferBytes is the read buffer of every relayed connection.
	readBufferBytes = 32 << 10
)

// side says which end of HTTP/2 the relay is on a connection.
type side uint8

const (
	// callerSide is a caller's connection to the agent: the relay serves.
	callerSide side = iota
	// backendSide is the relay's connection to a plugin instance or to the
	// agent's own gRPC server: the relay is the client.
	backendSide
)

// h2conn is one relayed HTTP/2 connection. One goroutine reads it
// (readLoop) and one writes it (writeLoop); every other goroutine that has
// frames for it appends them to out, under mu, and kicks the writer. No
// goroutine but the writer ever blocks on the connection's socket, so a
// peer that stops reading holds up nobody else.
type h2conn struct {
	rl   *relay
	side side
	nc   net.Conn
	br   *bufio.Reader
	fr   *http2.Framer // reads; owned by the reader goroutine
	// hr assembles and decodes the header blocks fr reads; owned by the
	// reader goroutine.
	hr *headerReader
	// what names the peer in errors: "plugin echo 1.0.0", "the agent's own
	// server" or the caller's address.
	what    string
	backend *Backend // backendSide to a plugin: the instance
	// fromPeer marks a callerSide connection from another node's relay
	// (ServeRelayed): its calls go to local instances only.
	fromPeer bool

	wake chan struct{} // kicks the writer; capacity 1
	done chan struct{} // closed by close
	// settled is closed when the peer's first SETTINGS arrive: the peer
	// is serving the connection.
	settled     chan struct{}
	settledOnce sync.Once

	// raw is a caller's socket, for writes that must not block; nil if
	// the connection is not a socket.
	raw syscall.RawConn

	mu      sync.Mutex // guards everything below and every half on this conn
	out     []byte     // frames waiting to be written
	spare   []byte     // the buffer out had before its last write
	writing bool       // a goroutine is writing to nc
	wfr     *http2.Framer
	// henc encodes every header block sent on the connection, into hbuf;
	// hcache keeps blocks it may send again (see headers.go).
	henc   *hpack.Encoder
	hbuf   bytes.Buffer
	hcache encodeCache
	// sendWin is what the peer lets the relay send on the connection;
	// peerInitWin and peerMaxFrame are the peer's settings for streams.
	sendWin      int64
	peerInitWin  int64
	peerMaxFrame uint32
	// recvWin is what the peer may still send on the connection; recvUnacked
	// is what the relay passed on since its last WINDOW_UPDATE.
	recvWin     int64
	recvUnacked int64
	// blocked lists the halves on this connection holding data that waits
	// for window.
	blocked []*half
	streams map[uint32]*rstream
	// lastID is the highest stream id opened: by the caller on callerSide,
	// by the relay on backendSide.
	lastID uint32
	// peerMaxStreams is the backend's SETTINGS_MAX_CONCURRENT_STREAMS.
	peerMaxStreams uint32
	// goAway: on backendSide the backend said it goes away (no new streams
	// here); on callerSide the relay said so.
	goAway bool
	// goAwayAcked is set when the caller answered the PING sent after
	// the relay's GOAWAY: it has read the GOAWAY, and every call it
	// opened before has reached the relay.
	goAwayAcked bool
	closed      bool
	err         error

	// idleSince is when the relay last saw a call open on this caller
	// connection (or a new one opened: idleLastID), and idleGoAway when it
	// sent GOAWAY for its Config.IdleTimeout; see relay.closeIdle.
	idleSince  time.Time
	idleLastID uint32
	idleGoAway time.Time

	// resets is how many more streams a caller may reset now, as of
	// resetAt (see takeReset); owned by the reader goroutine.
	resets  float64
	resetAt time.Time
}

// outWriter appends to c.out; the write framer writes through it with c.mu
// held.
type outWriter struct{ c *h2conn }

func (w outWriter) Write(p []byte) (int, error) {
	w.c.out = append(w.c.out, p...)
	return len(p), nil
}

func newH2conn(rl *relay, s side, nc net.Conn, br *bufio.Reader, what string) *h2conn {
	c := &h2conn{
		rl: rl, side: s, nc: nc, br: br, what: what,
		wake:           make(chan struct{}, 1),
		done:           make(chan struct{}),
		settled:        make(chan struct{}),
		sendWin:        initialWindow,
		peerInitWin:    initialWindow,
		peerMaxFrame:   maxFrameBytes,
		recvWin:        initialWindow,
		streams:        make(map[uint32]*rstream),
		peerMaxStreams: math.MaxUint32,
	}
	c.fr = http2.NewFramer(nil, br)
	c.fr.SetMaxReadFrameSize(maxFrameBytes)
	c.hr = newHeaderReader()
	c.fr.SetReuseFrames()
	c.wfr = http2.NewFramer(outWriter{c}, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	if sc, ok := nc.(syscall.Conn); ok && s == callerSide {
		c.raw, _ = sc.SyscallConn()
	}
	return c
}

// goAwayPing is the PING the relay sends a caller after its GOAWAY.
var goAwayPing = [8]byte{'g', 'o', 'i', 'n', 'g', 'a', 'w', 'y'}

// initialWindow is HTTP/2's window before any setting or update.
const initialWindow = 65535

// start runs the connection's reader and writer.
func (c *h2conn) start() {
	go c.writeLoop()
	go c.readLoop()
	c.kick()
}

// kick wakes the writer.
func (c *h2conn) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// writeLoop writes what others appended to out and did not write
// themselves (see flushNow), all of it in one write each time, so frames
// appended while a write is under way go out together.
func (c *h2conn) writeLoop() {
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		c.mu.Lock()
		if c.writing {
			// The goroutine writing kicks again if it leaves data behind.
			c.mu.Unlock()
			continue
		}
		c.writing = true
		for !c.closed && len(c.out) > 0 {
			b := c.takeOutLocked()
			c.mu.Unlock()
			_, err := c.nc.Write(b)
			c.mu.Lock()
			c.spare = b[:0]
			if err != nil {
				c.writing = false
				c.mu.Unlock()
				c.close(fmt.Errorf("writing to %s: %w", c.what, err))
				return
			}
			c.afterWriteLocked()
		}
		c.writing = false
		c.mu.Unlock()
	}
}

// flushNow writes out on the calling goroutine, unless a write is under
// way: a reader that just appended frames sends them without waking the
// writer goroutine, which is the relay's main cost on small calls. A
// caller's socket is written without blocking (rawWrite); what does not
// fit is left to the writer goroutine, so no reader waits on a caller that
// reads slowly. Backend connections (a plugin, the agent's own server) are
// local and always read; their writes block as the writer's would.
func (c *h2conn) flushNow() {
	c.mu.Lock()
	if c.writing || c.closed || len(c.out) == 0 {
		c.mu.Unlock()
		return
	}
	if c.side == callerSide && c.raw == nil {
		c.mu.Unlock()
		c.kick()
		return
	}
	c.writing = true
	b := c.takeOutLocked()
	c.mu.Unlock()

	var n int
	var err error
	if c.side == callerSide {
		n, err = rawWrite(c.raw, b)
	} else {
		n, err = c.nc.Write(b)
	}
	c.mu.Lock()
	if err != nil {
		c.writing = false
		c.mu.Unlock()
		c.close(fmt.Errorf("writing to %s: %w", c.what, err))
		return
	}
	if n < len(b) {
		c.out = append(append(make([]byte, 0, len(b)-n+len(c.out)), b[n:]...), c.out...)
	} else {
		c.spare = b[:0]
	}
	c.afterWriteLocked()
	c.writing = false
	more := len(c.out) > 0
	c.mu.Unlock()
	if more {
		c.kick()
	}
}

// takeOutLocked swaps out for the spare buffer and returns what was in it.
func (c *h2conn) takeOutLocked() []byte {
	b := c.out
	c.out = c.spare
	c.spare = nil
	return b
}

// afterWriteLocked moves data that waited for room in out, now that a
// write made some. c.mu is held; it is released and taken again while the
// moved data's senders get their window back.
func (c *h2conn) afterWriteLocked() {
	if cap(c.spare) > 2*maxOutBytes {
		c.spare = nil
	}
	if len(c.blocked) == 0 {
		return
	}
	var t touched
	moved := c.drainLocked(&t)
	c.mu.Unlock()
	moved.apply(&t)
	t.flushOthers(c)
	c.mu.Lock()
}

// rawWrite writes b to a socket once, without waiting for room: it returns
// how much the kernel took (zero when its buffer is full).
func rawWrite(rc syscall.RawConn, b []byte) (n int, err error) {
	werr := rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, e := syscall.Write(int(fd), b[n:])
			if e == syscall.EINTR {
				continue
			}
			if e == syscall.EAGAIN {
				break
			}
			if e != nil {
				err = e
				break
			}
			n += m
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return n, err
}

// readLoop reads frames until the connection fails or closes. After the
// last frame of each read it kicks the writers of every connection it gave
// frames to, so a burst of frames leaves in one write per connection.
func (c *h2conn) readLoop() {
	var t touched
	for {
		f, err := c.hr.readFrame(c.fr)
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				// The RST_STREAM goes out now, not with whatever the
				// peer sends next.
				c.streamError(&t, se)
				if c.br.Buffered() == 0 {
					t.flushLast(c)
				}
				continue
			}
			c.fail(err)
			t.flush()
			return
		}
		c.handle(&t, f)
		if c.br.Buffered() == 0 {
			t.flushLast(c)
		}
	}
}

// handle acts on one frame read from c.
func (c *h2conn) handle(t *touched, f http2.Frame) {
	switch f := f.(type) {
	case *http2.DataFrame:
		c.onData(t, f)
	case *http2.MetaHeadersFrame:
		c.onHeaders(t, f)
	case *http2.RSTStreamFrame:
		if st := c.stream(f.StreamID); st != nil {
			if c.side == callerSide && !c.takeReset() {
				c.fail(http2.ConnectionError(http2.ErrCodeEnhanceYourCalm))
				return
			}
			st.reset(t, st.halfOn(c), f.ErrCode)
		}
	case *http2.SettingsFrame:
		c.onSettings(t, f)
	case *http2.WindowUpdateFrame:
		c.onWindowUpdate(t, f)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.mu.Lock()
			_ = c.wfr.WritePing(true, f.Data)
			c.mu.Unlock()
			t.add(c)
		} else if f.Data == goAwayPing {
			c.mu.Lock()
			c.goAwayAcked = true
			c.mu.Unlock()
		}
	case *http2.GoAwayFrame:
		c.onGoAway(t, f)
	case *http2.PushPromiseFrame:
		// The relay disables push on every connection it opens.
		c.fail(http2.ConnectionError(http2.ErrCodeProtocol))
	}
	// PRIORITY and frames of unknown types are ignored, as RFC 9113 allows.
}

func (c *h2conn) stream(id uint32) *rstream {
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	return st
}

// takeReset counts a stream the caller reset and reports whether it stays
// within resetBurst and resetRate. Only the reader calls it.
func (c *h2conn) takeReset() bool {
	now := time.Now()
	if c.resetAt.IsZero() {
		c.resets = resetBurst
	} else {
		c.resets = min(resetBurst, c.resets+now.Sub(c.resetAt).Seconds()*resetRate)
	}
	c.resetAt = now
	if c.resets < 1 {
		return false
	}
	c.resets--
	return true
}

// onHeaders routes a caller's new stream, or passes on a header block of a
// stream under way: a backend's response headers or trailers, a caller's
// trailers.
func (c *h2conn) onHeaders(t *touched, f *http2.MetaHeadersFrame) {
	c.mu.Lock()
	st := c.streams[f.StreamID]
	var bad http2.ErrCode
	if st != nil && c.side == callerSide {
		// RFC 9113 5.1 and 8.1: a caller's second block is its trailers,
		// which end the stream and carry no pseudo-header; after it the
		// stream is half-closed (remote).
		switch {
		case st.caller.recvEnded:
			bad = http2.ErrCodeStreamClosed
		case !f.StreamEnded() || hasPseudo(f.Fields):
			bad = http2.ErrCodeProtocol
		}
	}
	if st != nil && f.StreamEnded() && bad == 0 {
		st.halfOn(c).recvEnded = true
	}
	c.mu.Unlock()
	if bad != 0 {
		c.streamError(t, http2.StreamError{StreamID: f.StreamID, Code: bad})
		return
	}
	if st == nil {
		if c.side == callerSide {
			c.rl.newStream(t, c, f)
		}
		// A backend's frames for a stream already finished are dropped.
		return
	}
	if c.side == backendSide && f.StreamEnded() && st.refusedByPeer(f.Fields) {
		st.reset(t, st.halfOn(c), http2.ErrCodeRefusedStream)
		return
	}
	st.forwardHeaders(t, st.halfOn(c), f.Fields, f.StreamEnded())
}

// onData passes a DATA frame on. The connection's window for it is given
// back at once, whatever becomes of the data: what one stream holds is
// bounded by its own window (given back as the data moves on, see
// creditStream), so a stream whose reader stalls, is reset or ends with data
// queued never takes window from the other streams of its connection.
func (c *h2conn) onData(t *touched, f *http2.DataFrame) {
	n := int64(f.Length) // flow control counts padding too
	c.mu.Lock()
	c.recvWin -= n
	if c.recvWin < 0 {
		c.mu.Unlock()
		c.fail(http2.ConnectionError(http2.ErrCodeFlowControl))
		return
	}
	// Updates go out once a quarter of the window is due, as gRPC's own do.
	if c.recvUnacked += n; c.recvUnacked >= relayConnWindow/4 {
		_ = c.wfr.WriteWindowUpdate(0, uint32(c.recvUnacked))
		c.recvWin += c.recvUnacked
		c.recvUnacked = 0
		t.add(c)
	}
	st := c.streams[f.StreamID]
	var h *half
	if st != nil {
		h = st.halfOn(c)
		if f.StreamEnded() {
			h.recvEnded = true
		}
	}
	c.mu.Unlock()
	if st != nil {
		st.forwardData(t, h, f.Data(), f.StreamEnded(), n)
	}
}

// onSettings applies the peer's settings and acknowledges them.
func (c *h2conn) onSettings(t *touched, f *http2.SettingsFrame) {
	if f.IsAck() {
		return
	}
	if err := f.ForeachSetting(func(s http2.Setting) error { return s.Valid() }); err != nil {
		c.fail(err)
		return
	}
	c.mu.Lock()
	c.applySettingsLocked(f)
	_ = c.wfr.WriteSettingsAck()
	moved := c.drainLocked(t)
	c.mu.Unlock()
	t.add(c)
	moved.apply(t)
	c.settledOnce.Do(func() { close(c.settled) })
}

// applySettingsLocked takes in the peer's settings, c.mu held.
func (c *h2conn) applySettingsLocked(f *http2.SettingsFrame) {
	_ = f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingInitialWindowSize:
			// RFC 9113 6.9.2: the change applies to every open stream.
			delta := int64(s.Val) - c.peerInitWin
			c.peerInitWin = int64(s.Val)
			for _, st := range c.streams {
				st.halfOn(c).sendWin += delta
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
			c.hcache.reset() // the table may have lost entries
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStreams = s.Val
		}
		return nil
	})
}

// onWindowUpdate adds to a send window and moves what waited for it.
func (c *h2conn) onWindowUpdate(t *touched, f *http2.WindowUpdateFrame) {
	c.mu.Lock()
	if f.StreamID == 0 {
		c.sendWin += int64(f.Increment)
	} else if st := c.streams[f.StreamID]; st != nil {
		st.halfOn(c).sendWin += int64(f.Increment)
	}
	moved := c.drainLocked(t)
	c.mu.Unlock()
	moved.apply(t)
}

// onGoAway: a backend stops taking streams. Those it will not process are
// refused to their callers, whose gRPC clients retry them transparently; a
// caller's GOAWAY only says it opens no more streams.
func (c *h2conn) onGoAway(t *touched, f *http2.GoAwayFrame) {
	if c.side == callerSide {
		return
	}
	c.mu.Lock()
	c.goAway = true
	var refused []*rstream
	for id, st := range c.streams {
		if id > f.LastStreamID {
			refused = append(refused, st)
		}
	}
	idle := len(c.streams) == len(refused)
	c.mu.Unlock()
	c.rl.forgetBackendConn(c)
	for _, st := range refused {
		st.reset(t, st.halfOn(c), http2.ErrCodeRefusedStream)
	}
	if idle {
		c.close(nil)
	}
}

// streamError resets one stream the peer got wrong.
func (c *h2conn) streamError(t *touched, se http2.StreamError) {
	c.mu.Lock()
	_ = c.wfr.WriteRSTStream(se.StreamID, se.Code)
	st := c.streams[se.StreamID]
	c.mu.Unlock()
	t.add(c)
	if st != nil {
		st.reset(t, st.halfOn(c), se.Code)
	}
}

// creditStream returns the stream window of n bytes the relay passed on
// from half h (the connection's went back on arrival, see onData), unless
// the peer finished sending on it. Updates go out once a quarter of a
// window is due, as gRPC's own do.
func (c *h2conn) creditStream(t *touched, h *half, n int64) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || h.recvEnded || h.closed {
		return
	}
	h.recvUnacked += n
	if h.recvUnacked >= relayStreamWindow/4 {
		_ = c.wfr.WriteWindowUpdate(h.id, uint32(h.recvUnacked))
		h.recvUnacked = 0
		t.add(c)
	}
}

// avail is how many DATA bytes may go to h now, c.mu held.
func (c *h2conn) avail(h *half) int64 {
	return max(0, min(h.sendWin, c.sendWin, int64(maxOutBytes-len(c.out))))
}

// writeDataLocked writes as much of data to h as the windows allow, in
// frames of at most the peer's frame size, with END_STREAM on the last if
// end and all of it went. It returns how much went. c.mu is held.
func (c *h2conn) writeDataLocked(h *half, data []byte, end bool) int {
	n := int(min(int64(len(data)), c.avail(h)))
	if n == 0 && len(data) > 0 {
		return 0
	}
	for off := 0; ; {
		chunk := min(n-off, int(c.peerMaxFrame))
		_ = c.wfr.WriteData(h.id, end && off+chunk == len(data), data[off:off+chunk])
		if off += chunk; off == n {
			break
		}
	}
	h.sendWin -= int64(n)
	c.sendWin -= int64(n)
	return n
}

// writeHeadersLocked encodes fields and writes them to stream id as one
// HEADERS frame and as many CONTINUATION frames as the peer's frame size
// needs. c.mu is held.
func (c *h2conn) writeHeadersLocked(id uint32, fields []hpack.HeaderField, end bool) {
	block := c.hcache.get(fields)
	if block == nil {
		c.hbuf.Reset()
		for _, f := range fields {
			_ = c.henc.WriteField(f)
		}
		block = c.hbuf.Bytes()
		switch {
		case !onlyIndexed(block):
			c.hcache.reset() // the encoder's table changed
		case len(block) <= maxCachedBlock:
			c.hcache.put(fields, block)
		}
	}
	first := true
	for first || len(block) > 0 {
		chunk := block[:min(len(block), int(c.peerMaxFrame))]
		block = block[len(chunk):]
		if first {
			_ = c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			_ = c.wfr.WriteContinuation(id, len(block) == 0, chunk)
		}
	}
}

// drainLocked writes the data and trailers that waited for window on c's
// blocked halves, as far as the windows now allow, and returns what moved
// (to credit the senders and finish streams). c.mu is held.
func (c *h2conn) drainLocked(t *touched) (m moved) {
	if len(c.blocked) == 0 {
		return m
	}
	keep := c.blocked[:0]
	var now time.Time
	for _, h := range c.blocked {
		if h.closed {
			h.blocked = false
			continue
		}
		for len(h.pending) > 0 {
			chunk := h.pending[0]
			last := len(h.pending) == 1
			n := c.writeDataLocked(h, chunk, last && h.pendingEnd && h.pendingTrailers == nil)
			m.credits = append(m.credits, credit{h.other, int64(n)})
			if n > 0 {
				if now.IsZero() {
					now = time.Now()
				}
				h.since = now
				// Counted off at once, not after the loop: the relay
				// sheds calls by this count, and a drain of many
				// halves would otherwise hold it high meanwhile.
				c.rl.queued.Add(-int64(n))
			}
			if n < len(chunk) {
				h.pending[0] = chunk[n:]
				break
			}
			h.pending[0] = nil
			h.pending = h.pending[1:]
		}
		if len(h.pending) > 0 {
			keep = append(keep, h)
			continue
		}
		h.blocked = false
		h.pending = nil
		switch {
		case h.pendingTrailers != nil:
			c.writeHeadersLocked(h.id, h.pendingTrailers, true)
			h.pendingTrailers = nil
			h.sentEnd = true
			m.ended = append(m.ended, h)
		case h.pendingEnd:
			h.sentEnd = true
			m.ended = append(m.ended, h)
		}
	}
	for i := len(keep); i < len(c.blocked); i++ {
		c.blocked[i] = nil
	}
	c.blocked = keep
	t.add(c)
	return m
}

// moved is what a drain moved: window to give back to the halves the data
// came from, and halves whose END_STREAM went out.
type moved struct {
	credits []credit
	ended   []*half
}

type credit struct {
	h *half // the half the data came from
	n int64
}

// apply gives back the window and finishes what ended; no conn lock held.
func (m moved) apply(t *touched) {
	for _, cr := range m.credits {
		cr.h.c.creditStream(t, cr.h, cr.n)
	}
	for _, h := range m.ended {
		h.st.sentEnd(t, h)
	}
}

// fail ends the connection after a protocol or I/O error, telling the peer
// why when the error is one of HTTP/2's.
func (c *h2conn) fail(err error) {
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		c.mu.Lock()
		if !c.closed {
			_ = c.wfr.WriteGoAway(c.lastID, http2.ErrCode(ce), nil)
			out := c.out
			c.out = nil
			c.mu.Unlock()
			_, _ = c.nc.Write(out) // best effort: the connection ends anyway
		} else {
			c.mu.Unlock()
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	c.close(err)
}

// close ends the connection and every stream on it.
func (c *h2conn) close(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.err = err
	streams := make([]*rstream, 0, len(c.streams))
	for _, st := range c.streams {
		streams = append(streams, st)
	}
	c.mu.Unlock()
	close(c.done)
	_ = c.nc.Close()
	c.rl.forget(c)
	var t touched
	for _, st := range streams {
		st.connLost(&t, c, err)
	}
	t.flush()
}

// touched collects the connections a goroutine appended frames to, to kick
// their writers once it is done with a burst.
type touched struct{ conns []*h2conn }

func (t *touched) add(c *h2conn) {
	for _, x := range t.conns {
		if x == c {
			return
		}
	}
	t.conns = append(t.conns, c)
}

// flush writes what the goroutine appended (see flushNow).
func (t *touched) flush() { t.flushOthers(nil) }

// flushLast flushes every touched connection, own last. A reader's own
// connection gets only its acknowledgements (PING, SETTINGS, window
// updates), which must not delay what it passed on by a write's time. On
// a backend connection they go to the writer goroutine instead: a peer's
// PING may come in a TLS record of its own, ahead of the record with the
// frames to pass on, and the reader cannot tell that more is buffered.
func (t *touched) flushLast(own *h2conn) {
	mine := false
	for _, c := range t.conns {
		if c == own {
			mine = true
		}
	}
	t.flushOthers(own)
	switch {
	case !mine:
	case own.side == backendSide:
		own.kick()
	default:
		own.flushNow()
	}
}

// flushOthers flushes every touched connection but skip, whose writer
// is the caller.
func (t *touched) flushOthers(skip *h2conn) {
	for i, c := range t.conns {
		if c != skip {
			c.flushNow()
		}
		t.conns[i] = nil
	}
	t.conns = t.conns[:0]
}
