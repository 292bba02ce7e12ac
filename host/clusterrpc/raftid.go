package clusterrpc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// The rpc types of raft's NetworkTransport (net_transport.go in
// hashicorp/raft v1.7): one byte before each msgpack-encoded request.
const (
	rpcAppendEntries uint8 = iota
	rpcRequestVote
	rpcInstallSnapshot
	rpcTimeoutNow
	rpcRequestPreVote
)

// raftSender is the part of every raft request the check reads: the
// header (embedded, as in raft's requests, so its fields are at the top of
// the msgpack map) and, for InstallSnapshot, the length of the snapshot
// data that follows the request. The other fields are skipped.
type raftSender struct {
	raft.RPCHeader
	Size int64
}

// errWrongSender ends a raft connection whose request claims another node.
var errWrongSender = errors.New("clusterrpc: a raft request claims another node than its connection's certificate")

// raftIDConn is an incoming raft connection bound to the node its
// certificate names: each request is decoded as far as its sender before
// raft reads any of it, and a request from another node (or none) closes
// the connection. Raft's reads see the bytes that were checked, unchanged.
// Only raft's connection goroutine reads; writes go straight through.
type raftIDConn struct {
	net.Conn
	node string
	log  hclog.Logger
	seen *sync.Map // the Mux's: mismatches already logged

	br   *bufio.Reader
	dec  *codec.Decoder
	rec  []byte // the current request as read, for raft
	recN int    // how much of rec raft has read
	raw  int64  // snapshot data still to pass through
	err  error  // what every read returns once set
}

// bindRaftID wraps an incoming raft connection from node.
func bindRaftID(conn net.Conn, node string, log hclog.Logger, seen *sync.Map) net.Conn {
	c := &raftIDConn{Conn: conn, node: node, log: log, seen: seen, br: bufio.NewReaderSize(conn, 64<<10)}
	// No ReaderBufferSize on the handle: the decoder reads exactly the
	// request's bytes through record, never into the next one.
	c.dec = codec.NewDecoder(recorder{c}, &codec.MsgpackHandle{})
	return c
}

// recorder reads the connection for the decoder and keeps what it read.
type recorder struct{ c *raftIDConn }

func (r recorder) Read(p []byte) (int, error) {
	n, err := r.c.br.Read(p)
	r.c.rec = append(r.c.rec, p[:n]...)
	return n, err
}

// ReadByte and UnreadByte spare the decoder a Read for each byte.
func (r recorder) ReadByte() (byte, error) {
	b, err := r.c.br.ReadByte()
	if err == nil {
		r.c.rec = append(r.c.rec, b)
	}
	return b, err
}

func (r recorder) UnreadByte() error {
	if err := r.c.br.UnreadByte(); err != nil {
		return err
	}
	r.c.rec = r.c.rec[:len(r.c.rec)-1]
	return nil
}

func (c *raftIDConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.recN == len(c.rec) && c.raw == 0 {
		if c.err != nil {
			return 0, c.err
		}
		if c.err = c.next(); c.recN == len(c.rec) {
			return 0, c.err
		}
	}
	if c.recN < len(c.rec) {
		n := copy(p, c.rec[c.recN:])
		c.recN += n
		return n, nil
	}
	if int64(len(p)) > c.raw {
		p = p[:c.raw]
	}
	n, err := c.br.Read(p)
	c.raw -= int64(n)
	if err == io.EOF && c.raw > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// next reads the next request into rec and checks its sender. A non-nil
// error is returned to raft after rec.
func (c *raftIDConn) next() error {
	if cap(c.rec) > 1<<20 {
		c.rec = nil // a large batch of entries: do not hold its buffer
	}
	c.rec, c.recN = c.rec[:0], 0
	t, err := c.br.ReadByte()
	if err != nil {
		return err
	}
	c.rec = append(c.rec, t)
	switch t {
	case rpcAppendEntries, rpcRequestVote, rpcInstallSnapshot, rpcTimeoutNow, rpcRequestPreVote:
	default:
		// Raft refuses it and closes; nothing after it is read unchecked.
		return fmt.Errorf("clusterrpc: unknown raft rpc type %d", t)
	}
	var s raftSender
	c.dec.Reset(recorder{c})
	if err := c.dec.Decode(&s); err != nil {
		c.rec = c.rec[:0]
		return err
	}
	if id := string(s.ID); id != c.node {
		c.rec = c.rec[:0]
		c.refuse(id)
		return io.EOF
	}
	if t == rpcInstallSnapshot {
		if s.Size < 0 {
			c.rec = c.rec[:0]
			return fmt.Errorf("clusterrpc: snapshot of negative size %d", s.Size)
		}
		c.raw = s.Size
	}
	return nil
}

// refuse logs the mismatch, once for a pair of nodes however often it
// reconnects, and closes the connection.
func (c *raftIDConn) refuse(claimed string) {
	if claimed == "" {
		claimed = "(none)"
	}
	if _, seen := c.seen.LoadOrStore([2]string{c.node, claimed}, true); !seen {
		c.log.Error("cluster RPC: closed a raft connection: its requests claim to come from node "+claimed+
			" but its certificate names node "+c.node+"; give each node its own certificate, made for its -node name",
			"remote", c.RemoteAddr(), "certificate_node", c.node, "claimed_node", claimed)
	}
	c.Conn.Close()
}
