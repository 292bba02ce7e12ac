package router

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rstream is one relayed call: a stream on the caller's connection paired
// with a stream on a backend connection. Each side is a half; what flows
// from one half's peer goes out on the other half.
type rstream struct {
	caller, backend half

	p *plugin // the plugin called; nil for the agent's own services

	// held is how long the call waited for a backend; written before the
	// backend half opens, read after.
	held time.Duration
	// rerouteBy bounds the waits of a call whose instance could not be
	// reached for another (see mayReroute); set at the first.
	rerouteBy time.Time
	// code is the call's status, for the plugin's counters: -1 until known.
	code atomic.Int32
	// ends has endCaller once END_STREAM went to the backend (the caller
	// is done sending) and endBackend once it went to the caller.
	ends atomic.Uint32
	// attached is set once the backend half is open and any data held for
	// it passed on; before, the caller's data collects in heldData.
	attached atomic.Bool
	// answered is set when the backend's closing trailers arrived: the
	// plugin finished the call.
	answered atomic.Bool

	mu       sync.Mutex // guards the fields below, and the backend half's opening
	b        *Backend   // counted in flight from open to finish
	cancel   context.CancelFunc
	release  func() // of the call's authorization (see Config.Authorize)
	heldData []heldChunk
	finished bool
}

// heldChunk is caller data that arrived while no backend was chosen, with
// the window it took (DATA padding included).
type heldChunk struct {
	data []byte
	flow int64
	end  bool
}

const (
	endCaller  = 1
	endBackend = 2
)

// half is one side of a relayed call. Its fields are guarded by c.mu.
type half struct {
	st    *rstream
	other *half
	c     *h2conn // nil on the backend half until it opens
	id    uint32

	sendWin int64 // what the peer lets the relay send on this stream
	// pending is data for this half that waits for window, to go out in
	// order before pendingEnd's END_STREAM or pendingTrailers.
	pending         [][]byte
	pendingEnd      bool
	pendingTrailers []hpack.HeaderField
	blocked         bool // listed in c.blocked
	// since is when pending last started to wait or last moved: the
	// relay resets a caller's stream whose data waits too long (see
	// relay.watchStalls).
	since time.Time

	sentEnd     bool  // END_STREAM went out on this half
	recvEnded   bool  // the peer sent END_STREAM on this half
	recvUnacked int64 // window to give back to the peer for this stream
	closed      bool  // reset, or finished: nothing more goes out
	headersSent bool  // caller half: response headers went out
}

func newRstream(c *h2conn, id uint32, recvEnded bool) *rstream {
	st := &rstream{}
	st.code.Store(-1)
	st.caller = half{st: st, other: &st.backend, c: c, id: id, sendWin: c.peerInitWin, recvEnded: recvEnded}
	st.backend = half{st: st, other: &st.caller}
	return st
}

// halfOn returns the half of st on connection c.
func (st *rstream) halfOn(c *h2conn) *half {
	if st.caller.c == c {
		return &st.caller
	}
	return &st.backend
}

// forwardData passes data that arrived on from to the other half, holding
// it while the call waits for a backend.
func (st *rstream) forwardData(t *touched, from *half, data []byte, end bool, flow int64) {
	if from == &st.caller && !st.attached.Load() {
		st.mu.Lock()
		if !st.attached.Load() {
			if !st.finished {
				st.heldData = append(st.heldData, heldChunk{data: bytes.Clone(data), flow: flow, end: end})
			}
			st.mu.Unlock()
			return
		}
		st.mu.Unlock()
	}
	ended, over := st.passData(t, from, data, end, flow)
	if ended {
		st.sentEnd(t, from.other)
	}
	if over {
		from.c.rl.shed(t, from.other)
	}
}

// passData writes data to from's other half as far as the windows allow and
// queues the rest, then gives back the stream window of what went. It
// reports whether END_STREAM went out, for the caller to call sentEnd
// (which may finish the call, so not under st.mu), and whether the data
// queued took the relay past its Config.MaxUnreadBytes.
func (st *rstream) passData(t *touched, from *half, data []byte, end bool, flow int64) (ended, over bool) {
	to := from.other
	d := to.c
	d.mu.Lock()
	if to.closed || d.closed {
		d.mu.Unlock()
		return false, false // the stream is gone; onData gave back the connection's window
	}
	n := 0
	if !to.blocked {
		n = d.writeDataLocked(to, data, end)
	}
	done := !to.blocked && n == len(data)
	if !done {
		to.pending = append(to.pending, bytes.Clone(data[n:]))
		to.pendingEnd = end
		if !to.blocked {
			to.blocked = true
			to.since = time.Now()
			d.blocked = append(d.blocked, to)
		}
		over = d.rl.queued.Add(int64(len(data)-n)) > d.rl.maxQueued
	} else if end {
		to.sentEnd = true
	}
	d.mu.Unlock()
	t.add(d)
	// Padding is never passed on, so its window comes back at once; queued
	// bytes give theirs back when they go (drainLocked).
	from.c.creditStream(t, from, flow-int64(len(data))+int64(n))
	return done && end, over
}

// forwardHeaders passes a header block that arrived on from: a backend's
// response headers, or the closing trailers of either side.
func (st *rstream) forwardHeaders(t *touched, from *half, fields []hpack.HeaderField, end bool) {
	if from == &st.caller {
		// gRPC requests carry no trailers: only their END_STREAM matters.
		if end {
			st.forwardData(t, from, nil, true, 0)
		}
		return
	}
	if end {
		st.answered.Store(true)
		st.code.CompareAndSwap(-1, int32(statusCode(fields)))
		if st.held > 0 {
			fields = append(fields, heldField(st.held))
		}
	}
	to := from.other
	d := to.c
	d.mu.Lock()
	if to.closed || d.closed {
		d.mu.Unlock()
		return
	}
	ended := false
	switch {
	case !end:
		d.writeHeadersLocked(to.id, fields, false)
		to.headersSent = true
	case to.blocked:
		to.pendingTrailers = fields
	default:
		d.writeHeadersLocked(to.id, fields, true)
		to.sentEnd = true
		ended = true
	}
	d.mu.Unlock()
	t.add(d)
	if ended {
		st.sentEnd(t, to)
	}
}

// heldField is the trailer that tells a caller its call was held.
func heldField(d time.Duration) hpack.HeaderField {
	return hpack.HeaderField{Name: HeldTrailer, Value: strconv.FormatInt(d.Milliseconds(), 10)}
}

// sentEnd records that END_STREAM went out on h; the call is over once it
// went out on both halves.
func (st *rstream) sentEnd(t *touched, h *half) {
	bit := uint32(endBackend)
	if h == &st.backend {
		bit = endCaller
	}
	if st.ends.Or(bit)|bit == endCaller|endBackend {
		st.finish(t)
	}
}

// reset ends the call because from's peer reset its stream (or the relay
// does so on its behalf): the other half is reset with the same code,
// unless it is over already.
func (st *rstream) reset(t *touched, from *half, code http2.ErrCode) {
	if from.c != nil {
		from.c.mu.Lock()
		from.closed = true
		from.dropPendingLocked()
		from.c.mu.Unlock()
	}
	st.resetHalf(t, from.other, code)
	var c codes.Code
	switch {
	case from == &st.caller, code == http2.ErrCodeCancel:
		c = codes.Canceled
	case code == http2.ErrCodeRefusedStream:
		c = codes.Unavailable
	default:
		c = codes.Internal
	}
	st.code.CompareAndSwap(-1, int32(c))
	st.finish(t)
}

// refusedByPeer reports whether fields, a trailers-only answer to st from
// another node's relay, says that node has no instance of the plugin
// (ReasonNoLocalInstance: it stopped one this node still routes to), so
// that nothing of the call reached an instance, while the plugin has
// another instance up. That node is then passed over for peerDownFor, and
// the relay refuses the call to its caller (REFUSED_STREAM), whose gRPC
// client retries it transparently: the retry goes to the other instance.
// Without another instance the node's status goes to the caller as it is.
func (st *rstream) refusedByPeer(fields []hpack.HeaderField) bool {
	st.mu.Lock()
	b := st.b
	st.mu.Unlock()
	if b == nil || b.Node == "" || st.p == nil || !isResponseHeaders(fields) ||
		statusCode(fields) != codes.Unavailable || statusReason(fields) != ReasonNoLocalInstance || !st.p.upBesides(b) {
		return false
	}
	b.downUntil.Store(time.Now().Add(peerDownFor).UnixNano())
	return true
}

// isResponseHeaders reports whether fields are a response's first header
// block (they carry :status), not trailers after headers.
func isResponseHeaders(fields []hpack.HeaderField) bool {
	for _, f := range fields {
		if f.Name == ":status" {
			return true
		}
	}
	return false
}

// resetHalf sends RST_STREAM on h if the stream is still open there.
func (st *rstream) resetHalf(t *touched, h *half, code http2.ErrCode) {
	st.mu.Lock()
	c := h.c // the backend half opens under st.mu
	st.mu.Unlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	if !h.closed && !c.closed && !(h.sentEnd && h.recvEnded) {
		_ = c.wfr.WriteRSTStream(h.id, code)
		t.add(c)
	}
	h.closed = true
	h.dropPendingLocked()
	c.mu.Unlock()
}

// fail ends the call with err's status, written by the relay: a
// trailers-only response if the caller got no headers yet, else trailers.
// A backend stream still open is cancelled.
func (st *rstream) fail(t *touched, err error) {
	h := &st.caller
	c := h.c
	c.mu.Lock()
	if !h.closed && !h.sentEnd && !c.closed {
		var extra []hpack.HeaderField
		if st.held > 0 {
			extra = append(extra, heldField(st.held))
		}
		h.dropPendingLocked()
		c.writeHeadersLocked(h.id, statusFields(err, h.headersSent, extra), true)
		h.sentEnd = true
		if !h.recvEnded {
			// As gRPC's server does: tell a caller still sending to stop.
			_ = c.wfr.WriteRSTStream(h.id, http2.ErrCodeNo)
		}
		h.closed = true
		t.add(c)
	}
	c.mu.Unlock()
	st.code.CompareAndSwap(-1, int32(status.Code(err)))
	st.resetHalf(t, &st.backend, http2.ErrCodeCancel)
	st.finish(t)
}

// connLost ends the call because connection c closed.
func (st *rstream) connLost(t *touched, c *h2conn, err error) {
	if c.side == callerSide {
		st.reset(t, &st.caller, http2.ErrCodeCancel)
		return
	}
	msg := "the connection to it closed"
	if err != nil {
		msg = "the connection to it failed: " + err.Error()
	}
	if c.backend == nil {
		st.fail(t, status.Error(codes.Unavailable, "the agent's own server is unavailable: "+msg))
		return
	}
	b := c.backend
	meta := map[string]string{"plugin": b.Plugin}
	where := ""
	if b.Node != "" {
		meta["node"] = b.Node
		where = " on node " + b.Node
	}
	st.fail(t, withInfo(codes.Unavailable, ReasonInstanceLost,
		fmt.Sprintf("plugin %q version %s%s: %s", b.Plugin, b.Version, where, msg), meta))
}

// finish removes the call from both connections, once: the backend's
// in-flight count goes down and the plugin's counters go up.
func (st *rstream) finish(t *touched) {
	st.mu.Lock()
	if st.finished {
		st.mu.Unlock()
		return
	}
	st.finished = true
	b, cancel, release := st.b, st.cancel, st.release
	st.heldData = nil
	st.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if release != nil {
		release()
	}
	for _, h := range []*half{&st.caller, &st.backend} {
		c := h.c
		if c == nil {
			continue
		}
		c.mu.Lock()
		h.closed = true
		h.dropPendingLocked()
		if c.streams[h.id] == st {
			delete(c.streams, h.id)
		}
		idle := c.side == backendSide && c.goAway && len(c.streams) == 0
		c.mu.Unlock()
		if idle {
			c.close(nil)
		}
	}
	if b != nil {
		b.releaseAs(st.answered.Load())
	}
	if st.p != nil {
		code := codes.Code(st.code.Load())
		if st.code.Load() < 0 {
			code = codes.Unknown
		}
		st.p.stats.recordCode(code)
	}
}

// setRelease sets what finish calls to end the call's authorization, or
// calls it now if the call is over.
func (st *rstream) setRelease(release func()) {
	st.mu.Lock()
	if !st.finished {
		st.release = release
		release = nil
	}
	st.mu.Unlock()
	if release != nil {
		release()
	}
}

// dropPendingLocked discards what waits to go out on h, which ends: the
// connection's window for it went back on arrival (see onData), its
// stream's window no longer matters. h.c.mu is held.
func (h *half) dropPendingLocked() {
	var n int
	for _, b := range h.pending {
		n += len(b)
	}
	if n > 0 {
		h.c.rl.queued.Add(-int64(n))
	}
	h.pending, h.pendingTrailers = nil, nil
}

// mayReroute reports whether the call, whose instance on another node
// could not be reached and which found no other, may still wait for one:
// all such waits of a call together last at most hold.
func (st *rstream) mayReroute(hold time.Duration) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.rerouteBy.IsZero() {
		st.rerouteBy = time.Now().Add(hold)
	}
	return !st.finished && time.Now().Before(st.rerouteBy)
}

// overrun ends the call because h's peer does not read what the relay
// holds for it. A caller gets RST_STREAM ENHANCE_YOUR_CALM, which gRPC
// clients report as RESOURCE_EXHAUSTED whatever part of a message they
// got (trailers after a partial message would read as an unexpected EOF),
// and the plugin gets CANCEL; a plugin that does not read gets CANCEL and
// its caller RESOURCE_EXHAUSTED saying why.
func (st *rstream) overrun(t *touched, h *half, why string) {
	if h == &st.caller {
		st.resetHalf(t, h, http2.ErrCodeEnhanceYourCalm)
		st.resetHalf(t, &st.backend, http2.ErrCodeCancel)
		st.code.CompareAndSwap(-1, int32(codes.ResourceExhausted))
		st.finish(t)
		return
	}
	st.fail(t, status.Errorf(codes.ResourceExhausted, "%s: the call was cancelled", why))
}
