package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// forwardedKey marks a request a follower forwarded to the leader; the
// leader never forwards it again.
const forwardedKey = "plughost-forwarded"

// leaderWait bounds how long a forwarded request waits for a leader to be
// known before it gives up.
const leaderWait = 5 * time.Second

// forwardAttempts bounds how many times a request that needs the leader is
// sent to it: once, then again after each failure that left it unapplied.
const forwardAttempts = 4

// LeaderResolver maps a raft server ID to the API address of that node's
// agent (StoreService), as membership knows it.
type LeaderResolver func(id string) (apiAddr string, ok bool)

// forwarder holds the connections a follower uses to reach the leader.
// With a ClusterTransport they go to the leader's cluster RPC port,
// expecting the leader's certificate there; otherwise to its API.
type forwarder struct {
	mu        sync.Mutex
	resolve   LeaderResolver
	transport ClusterTransport
	conns     map[string]*grpc.ClientConn
	isClosed  bool
	creds     credentials.PerRPCCredentials // see SetForwardCredentials
}

// SetForwardCredentials sets the credentials this node's calls to the
// leader carry (an ACL token). Set it before the store forwards.
func (s *Store) SetForwardCredentials(c credentials.PerRPCCredentials) {
	s.fwd.mu.Lock()
	defer s.fwd.mu.Unlock()
	s.fwd.creds = c
}

// SetLeaderResolver lets this node's Server forward requests that need the
// leader to the leader's API. Without one, they fail with ErrNotLeader.
func (s *Store) SetLeaderResolver(r LeaderResolver) {
	s.fwd.mu.Lock()
	defer s.fwd.mu.Unlock()
	s.fwd.resolve = r
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.isClosed = true
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

// conn is a connection to node at addr: its cluster RPC port with a
// transport, else its API.
func (f *forwarder) conn(addr, node string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.isClosed {
		return nil, ErrClosed
	}
	key := node + "@" + addr
	if c, ok := f.conns[key]; ok {
		return c, nil
	}
	opts := []grpc.DialOption{
		// With a transport, the connection it dials is already mutual TLS
		// when the cluster has TLS: gRPC adds nothing on top.
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
	}
	if f.creds != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(f.creds))
	}
	what := "API"
	if t := f.transport; t != nil {
		what = "cluster RPC port"
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return t.DialGRPC(ctx, addr, node)
		}))
	}
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("store: connect to the leader's %s at %s: %w", what, addr, err)
	}
	if f.conns == nil {
		f.conns = map[string]*grpc.ClientConn{}
	}
	f.conns[key] = c
	return c, nil
}

// leaderTarget is where a request that needs the leader goes: self when
// this node leads, otherwise a connection to the leader's API. It waits a
// bounded time for a leader to be known.
//
// avoid is a leader that just failed a forwarded call: the wait is for
// another, unless avoid is elected again.
func (s *Store) leaderTarget(ctx context.Context, avoid string) (self bool, conn *grpc.ClientConn, id string, err error) {
	s.fwd.mu.Lock()
	resolve := s.fwd.resolve
	if s.fwd.transport != nil {
		resolve = func(id string) (string, bool) {
			addr, err := s.node.addrs.ServerAddr(raft.ServerID(id))
			return string(addr), err == nil
		}
	}
	s.fwd.mu.Unlock()
	if resolve == nil {
		return false, nil, "", s.notLeader()
	}
	wctx, cancel := context.WithTimeout(ctx, leaderWait)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.closed.Load() {
			return false, nil, "", ErrClosed
		}
		expired := wctx.Err() != nil
		id, _ := s.Leader()
		switch {
		case id == "" || (id == avoid && !expired):
		case id == s.cfg.NodeID:
			if s.leaderReady() {
				return true, nil, id, nil
			}
		default:
			if addr, ok := resolve(id); ok {
				c, err := s.fwd.conn(addr, id)
				return false, c, id, err
			}
		}
		if expired {
			if ctx.Err() != nil {
				return false, nil, "", ctx.Err()
			}
			if id != "" {
				return false, nil, "", fmt.Errorf("%w: the leader is %s but its API address is not known (is it in `plughost members`?)", ErrNotLeader, id)
			}
			return false, nil, "", fmt.Errorf("%w: no leader was elected within %v; a majority of the servers must be up and reachable (see `plughost members`)", ErrNotLeader, leaderWait)
		}
		select {
		case <-wctx.Done():
		case <-tick.C:
		}
	}
}

// forwarded reports whether ctx is a request another node forwarded.
func forwarded(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(forwardedKey)) > 0
}

// needsLeader reports whether err means the request can be sent to the
// leader without risk of applying it twice.
func needsLeader(err error) bool {
	return err != nil && errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrOutcomeUnknown)
}

// forwardUnary runs a request locally and, when it needs the leader and
// this node is not it, on the leader's API. A request another node
// forwarded is never forwarded again.
func forwardUnary[Req, Resp any](s *Store, ctx context.Context, req Req,
	local func(context.Context, Req) (Resp, error),
	remote func(storev1Client, context.Context, Req, ...grpc.CallOption) (Resp, error),
) (Resp, error) {
	resp, err := local(ctx, req)
	if !needsLeader(err) || forwarded(ctx) {
		return resp, err
	}
	f := forwarding{from: s.cfg.NodeID, target: s.leaderTarget, whileLeader: s.whileLeader}
	return toLeader(ctx, f, req, local, remote)
}

// forwarding is how a node reaches the leader for a request.
type forwarding struct {
	from string // this node's ID, sent as forwardedKey
	// target is where the request goes: this node (self) or the leader at
	// conn, other than avoid unless avoid is elected again.
	target func(ctx context.Context, avoid string) (self bool, conn *grpc.ClientConn, id string, err error)
	// whileLeader is ctx, cancelled with errLeaderLost once id no longer
	// leads; stop releases it.
	whileLeader func(ctx context.Context, id string) (_ context.Context, stop func())
}

// toLeader sends req to the leader, and again to the next leader after a
// failure that left it unapplied, within ctx and forwardAttempts. A write
// whose answer was lost after it was sent is never sent again: it fails
// with ErrOutcomeUnknown. A read may always be sent again.
func toLeader[Req, Resp any](ctx context.Context, f forwarding, req Req,
	local func(context.Context, Req) (Resp, error),
	remote func(storev1Client, context.Context, Req, ...grpc.CallOption) (Resp, error),
) (Resp, error) {
	var zero Resp
	write := !readOnly(req)
	avoid := ""
	for attempt := 1; ; attempt++ {
		self, conn, id, err := f.target(ctx, avoid)
		if err != nil {
			return zero, err
		}
		var again bool
		if self {
			var resp Resp
			if resp, err = local(ctx, req); !needsLeader(err) {
				return resp, err
			}
			again = true
		} else {
			var p peer.Peer
			fctx, stop := f.whileLeader(metadata.AppendToOutgoingContext(ctx, forwardedKey, f.from), id)
			resp, rerr := remote(newClient(conn), fctx, req, grpc.Peer(&p))
			lost := errors.Is(context.Cause(fctx), errLeaderLost) && ctx.Err() == nil
			stop()
			if rerr == nil {
				return resp, nil
			}
			again, err = forwardFailure(ctx, rerr, forwardedCall{
				leader: id, target: conn.Target(), write: write, sent: p.Addr != nil, lost: lost,
			})
		}
		if !again || attempt == forwardAttempts || ctx.Err() != nil {
			return zero, err
		}
		avoid = id
	}
}

// forwardedCall is what is known of a failed call to the leader.
type forwardedCall struct {
	leader, target string
	write          bool
	// sent: gRPC started a stream for the call's last attempt, so the
	// request may have reached the leader. Without one (no connection, a
	// refused dial, "error reading server preface") it did not: this is
	// how gRPC's own transparent retry decides.
	sent bool
	// lost: the call was cancelled because this node stopped seeing
	// leader as the leader.
	lost bool
}

// forwardFailure turns the error of a call to the leader into the store's,
// and says whether the request may go to the leader again: when the leader
// said it did not apply it for want of a leader (ErrorInfo reason
// NOT_LEADER or CLOSED), when it never reached the leader, and for a read.
// A write that reached the leader and got no decision fails with
// ErrOutcomeUnknown.
func forwardFailure(ctx context.Context, err error, c forwardedCall) (again bool, _ error) {
	switch storev1.ErrorReason(err) {
	case storev1.ReasonOutcomeUnknown:
		return !c.write, fromStatus(err)
	case storev1.ReasonNotLeader, storev1.ReasonClosed:
		return true, fromStatus(err)
	case storev1.ReasonNoSpace:
		return false, fromStatus(err) // not applied; another try waits for space
	}
	st := status.Convert(err)
	if c.sent && decided(st.Code()) {
		return false, fromStatus(err)
	}
	what := st.Message()
	if c.lost {
		what = "this node stopped seeing it as the leader"
	}
	switch {
	case c.sent && c.write:
		cause := ctx.Err()
		if cause == nil {
			cause = ErrNotLeader
		}
		return false, outcomeUnknown(cause, "store: the write was forwarded to the leader %s at %s and its answer was lost (%s)", c.leader, c.target, what)
	case ctx.Err() != nil:
		return false, fmt.Errorf("store: forwarding to the leader %s at %s: %w", c.leader, c.target, ctx.Err())
	case c.sent:
		return true, fmt.Errorf("%w: the leader %s at %s did not answer (%s)", ErrNotLeader, c.leader, c.target, what)
	}
	return true, fmt.Errorf("%w: the leader %s at %s could not be reached (%s)", ErrNotLeader, c.leader, c.target, what)
}

// decided reports whether a call that reached the leader and failed with
// code was refused by the store, not cut short: the request was not
// applied. Other codes (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED,
// INTERNAL, UNKNOWN) also come from a connection that broke.
func decided(code codes.Code) bool {
	switch code {
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.ResourceExhausted, codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented,
		codes.Unauthenticated:
		return true
	}
	return false
}

// unknownOutcome is ErrOutcomeUnknown for a write whose answer was lost to
// cause (ErrNotLeader, ErrClosed, the context's error): errors.Is matches
// both.
type unknownOutcome struct {
	msg   string
	cause error
}

// outcomeUnknown says what happened to a write whose answer was lost, and
// what to do.
func outcomeUnknown(cause error, format string, args ...any) error {
	return &unknownOutcome{
		msg:   fmt.Sprintf(format, args...) + "; it may or may not have been applied: read what it wrote before writing it again",
		cause: cause,
	}
}

func (e *unknownOutcome) Error() string   { return e.msg }
func (e *unknownOutcome) Unwrap() []error { return []error{ErrOutcomeUnknown, e.cause} }

// errLeaderLost cancels a forwarded call when this node stops seeing its
// target as the leader.
var errLeaderLost = errors.New("store: the leader changed")

// whileLeader is ctx, cancelled with errLeaderLost once this node no longer
// sees id as the leader: a call to a leader that hangs (stopped, cut off)
// ends when raft notices, not at the caller's deadline.
func (s *Store) whileLeader(ctx context.Context, id string) (context.Context, func()) {
	cctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-cctx.Done():
				return
			case <-tick.C:
				if cur, _ := s.Leader(); cur != id {
					cancel(errLeaderLost)
					return
				}
			}
		}
	}()
	return cctx, func() {
		close(done)
		cancel(nil)
	}
}

// readOnly reports whether req is a read, safe to send again.
func readOnly(req any) bool {
	switch req.(type) {
	case *storev1.GetRequest, *storev1.ListRequest:
		return true
	}
	return false
}

// Get reads one key at the consistency the request asks for. A
// linearizable read on a follower is forwarded to the leader.
func (s *Store) Get(ctx context.Context, req *storev1.GetRequest) (*storev1.GetResponse, error) {
	return forwardUnary(s, ctx, req, s.eng.Get, func(c storev1Client, ctx context.Context, req *storev1.GetRequest, opts ...grpc.CallOption) (*storev1.GetResponse, error) {
		return c.Get(ctx, req, opts...)
	})
}

// List reads keys in order, by prefix or by range, one page at a time. A
// linearizable list on a follower is forwarded to the leader.
func (s *Store) List(ctx context.Context, req *storev1.ListRequest) (*storev1.ListResponse, error) {
	return forwardUnary(s, ctx, req, s.eng.List, func(c storev1Client, ctx context.Context, req *storev1.ListRequest, opts ...grpc.CallOption) (*storev1.ListResponse, error) {
		return c.List(ctx, req, opts...)
	})
}

// Put writes one key. With expected_mod_revision set it writes only if the
// key is at that mod revision (0: only if it does not exist), and otherwise
// fails with an error wrapping ErrCASFailed. On a follower it is forwarded.
func (s *Store) Put(ctx context.Context, req *storev1.PutRequest) (*storev1.PutResponse, error) {
	return forwardUnary(s, ctx, req, s.eng.Put, func(c storev1Client, ctx context.Context, req *storev1.PutRequest, opts ...grpc.CallOption) (*storev1.PutResponse, error) {
		return c.Put(ctx, req, opts...)
	})
}

// Delete removes one key, optionally only at an expected mod revision. On a
// follower it is forwarded.
func (s *Store) Delete(ctx context.Context, req *storev1.DeleteRequest) (*storev1.DeleteResponse, error) {
	return forwardUnary(s, ctx, req, s.eng.Delete, func(c storev1Client, ctx context.Context, req *storev1.DeleteRequest, opts ...grpc.CallOption) (*storev1.DeleteResponse, error) {
		return c.Delete(ctx, req, opts...)
	})
}

// DeleteRange removes every key with a prefix. On a follower it is
// forwarded.
func (s *Store) DeleteRange(ctx context.Context, req *storev1.DeleteRangeRequest) (*storev1.DeleteRangeResponse, error) {
	return forwardUnary(s, ctx, req, s.eng.DeleteRange, func(c storev1Client, ctx context.Context, req *storev1.DeleteRangeRequest, opts ...grpc.CallOption) (*storev1.DeleteRangeResponse, error) {
		return c.DeleteRange(ctx, req, opts...)
	})
}

// Txn evaluates the compares and applies the success or the failure
// operations, all at one revision or not at all. On a follower it is
// forwarded.
func (s *Store) Txn(ctx context.Context, req *storev1.TxnRequest) (*storev1.TxnResponse, error) {
	return forwardUnary(s, ctx, req, s.eng.Txn, func(c storev1Client, ctx context.Context, req *storev1.TxnRequest, opts ...grpc.CallOption) (*storev1.TxnResponse, error) {
		return c.Txn(ctx, req, opts...)
	})
}

// remoteError is an error the leader answered a forwarded request with: it
// keeps the leader's status and matches the store's sentinel for its code.
type remoteError struct {
	st       *status.Status
	sentinel error
}

func (e *remoteError) Error() string              { return e.st.Message() }
func (e *remoteError) GRPCStatus() *status.Status { return e.st }
func (e *remoteError) Unwrap() error              { return e.sentinel }

// fromStatus turns a gRPC status error from the leader back into the
// store's errors, so errors.Is works the same on every node. The status,
// its ErrorInfo included, is kept.
func fromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	msg := st.Message()
	var sentinel error
	switch st.Code() {
	case codes.FailedPrecondition:
		sentinel = ErrCASFailed
		switch storev1.ErrorReason(err) {
		case storev1.ReasonStaleEpoch, storev1.ReasonUnknownEpoch:
			sentinel = ErrStaleEpoch
		}
	case codes.ResourceExhausted:
		switch storev1.ErrorReason(err) {
		case storev1.ReasonValueTooLarge:
			sentinel = ErrValueTooLarge
		case storev1.ReasonTxnTooLarge:
			sentinel = ErrTxnTooLarge
		case storev1.ReasonTooManyWatches:
			sentinel = ErrTooManyWatches
		case storev1.ReasonQuotaExceeded:
			sentinel = ErrQuotaExceeded
		default: // a leader of a version that attached no reason
			sentinel = ErrQuotaExceeded
			if strings.Contains(msg, ErrValueTooLarge.Error()) {
				sentinel = ErrValueTooLarge
			}
		}
	case codes.OutOfRange:
		sentinel = ErrCompacted
	case codes.InvalidArgument:
		sentinel = ErrInvalidRequest
		switch {
		case strings.Contains(msg, ErrInvalidNamespace.Error()):
			sentinel = ErrInvalidNamespace
		case strings.Contains(msg, ErrCorruptBackup.Error()):
			sentinel = ErrCorruptBackup
		}
	case codes.Unavailable:
		switch storev1.ErrorReason(err) {
		case storev1.ReasonOutcomeUnknown:
			sentinel = errors.Join(ErrOutcomeUnknown, ErrNotLeader)
		case storev1.ReasonClosed:
			sentinel = ErrClosed
		case storev1.ReasonNoSpace:
			sentinel = ErrNoSpace
		default:
			sentinel = ErrNotLeader
		}
	case codes.DeadlineExceeded:
		sentinel = context.DeadlineExceeded
	case codes.Canceled:
		sentinel = context.Canceled
	}
	return &remoteError{st: st, sentinel: sentinel}
}

// leaderStatus names the leader in an error from a forwarded call, keeping
// the status's details.
func leaderStatus(err error, target string) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return toStatus(err)
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		if target != "" {
			p := st.Proto()
			p.Message = fmt.Sprintf("store: forwarded to the leader at %s: %s", target, p.GetMessage())
			return status.FromProto(p).Err()
		}
	}
	return err
}

// storev1Client is the leader's store API.
type storev1Client struct {
	storev1.StoreServiceClient
	admin storev1.StoreAdminServiceClient
}

func newClient(c *grpc.ClientConn) storev1Client {
	return storev1Client{storev1.NewStoreServiceClient(c), storev1.NewStoreAdminServiceClient(c)}
}
