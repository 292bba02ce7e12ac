package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// forwardedKey marks a request a follower forwarded to the leader; the
// leader never forwards it again.
const forwardedKey = "plughost-forwarded"

// leaderWait bounds how long a forwarded request waits for a leader to be
// known before it gives up.
const leaderWait = 5 * time.Second

// errAmbiguous marks a write whose outcome is unknown: it must not be
// retried or forwarded.
var errAmbiguous = errors.New("outcome unknown")

// LeaderResolver maps a raft server ID to the API address of that node's
// agent (StoreService), as membership knows it.
type LeaderResolver func(id string) (apiAddr string, ok bool)

// forwarder holds the connections a follower uses to reach the leader.
type forwarder struct {
	mu       sync.Mutex
	resolve  LeaderResolver
	conns    map[string]*grpc.ClientConn
	isClosed bool
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

// conn is a connection to the API at addr.
func (f *forwarder) conn(addr string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.isClosed {
		return nil, ErrClosed
	}
	if c, ok := f.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		return nil, fmt.Errorf("store: connect to the leader's API at %s: %w", addr, err)
	}
	if f.conns == nil {
		f.conns = map[string]*grpc.ClientConn{}
	}
	f.conns[addr] = c
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
				c, err := s.fwd.conn(addr)
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
	return err != nil && errors.Is(err, ErrNotLeader) && !errors.Is(err, errAmbiguous)
}

// retryable reports whether an error from a forwarded call means it was
// not applied and the leader changed: the call may go to the new leader.
func retryable(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	msg := st.Message()
	if strings.Contains(msg, "may or may not") {
		return false
	}
	return strings.Contains(msg, ErrNotLeader.Error()) || strings.Contains(msg, "while dialing")
}

// forwardUnary runs a request locally and, when it needs the leader and
// this node is not it, on the leader's API; once more if the leader changed
// under it. A request another node forwarded is never forwarded again.
func forwardUnary[Req, Resp any](s *Store, ctx context.Context, req Req,
	local func(context.Context, Req) (Resp, error),
	remote func(storev1Client, context.Context, Req) (Resp, error),
) (Resp, error) {
	resp, err := local(ctx, req)
	if !needsLeader(err) || forwarded(ctx) {
		return resp, err
	}
	var zero Resp
	avoid := ""
	for attempt := 0; attempt < 2; attempt++ {
		self, conn, id, terr := s.leaderTarget(ctx, avoid)
		if terr != nil {
			return zero, terr
		}
		if self {
			resp, err = local(ctx, req)
			if !needsLeader(err) {
				return resp, err
			}
			continue
		}
		fctx, stop := s.whileLeader(metadata.AppendToOutgoingContext(ctx, forwardedKey, s.cfg.NodeID), id)
		resp, err = remote(newClient(conn), fctx, req)
		lost := errors.Is(context.Cause(fctx), errLeaderLost) && ctx.Err() == nil
		stop()
		if err == nil {
			return resp, nil
		}
		if lost {
			err = fmt.Errorf("%w: the leader %s at %s stopped answering and this node lost sight of it while the request was forwarded; it may or may not have been applied (%w)",
				ErrNotLeader, id, conn.Target(), errAmbiguous)
			if !readOnly(req) {
				return zero, err
			}
			avoid = id
			continue
		}
		err = fromStatus(leaderStatus(err, conn.Target()))
		if !retryable(err) {
			return zero, err
		}
		avoid = id
	}
	return zero, err
}

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
	return forwardUnary(s, ctx, req, s.eng.Get, func(c storev1Client, ctx context.Context, req *storev1.GetRequest) (*storev1.GetResponse, error) {
		return c.Get(ctx, req)
	})
}

// List reads keys in order, by prefix or by range, one page at a time. A
// linearizable list on a follower is forwarded to the leader.
func (s *Store) List(ctx context.Context, req *storev1.ListRequest) (*storev1.ListResponse, error) {
	return forwardUnary(s, ctx, req, s.eng.List, func(c storev1Client, ctx context.Context, req *storev1.ListRequest) (*storev1.ListResponse, error) {
		return c.List(ctx, req)
	})
}

// Put writes one key. With expected_mod_revision set it writes only if the
// key is at that mod revision (0: only if it does not exist), and otherwise
// fails with an error wrapping ErrCASFailed. On a follower it is forwarded.
func (s *Store) Put(ctx context.Context, req *storev1.PutRequest) (*storev1.PutResponse, error) {
	return forwardUnary(s, ctx, req, s.eng.Put, func(c storev1Client, ctx context.Context, req *storev1.PutRequest) (*storev1.PutResponse, error) {
		return c.Put(ctx, req)
	})
}

// Delete removes one key, optionally only at an expected mod revision. On a
// follower it is forwarded.
func (s *Store) Delete(ctx context.Context, req *storev1.DeleteRequest) (*storev1.DeleteResponse, error) {
	return forwardUnary(s, ctx, req, s.eng.Delete, func(c storev1Client, ctx context.Context, req *storev1.DeleteRequest) (*storev1.DeleteResponse, error) {
		return c.Delete(ctx, req)
	})
}

// DeleteRange removes every key with a prefix. On a follower it is
// forwarded.
func (s *Store) DeleteRange(ctx context.Context, req *storev1.DeleteRangeRequest) (*storev1.DeleteRangeResponse, error) {
	return forwardUnary(s, ctx, req, s.eng.DeleteRange, func(c storev1Client, ctx context.Context, req *storev1.DeleteRangeRequest) (*storev1.DeleteRangeResponse, error) {
		return c.DeleteRange(ctx, req)
	})
}

// Txn evaluates the compares and applies the success or the failure
// operations, all at one revision or not at all. On a follower it is
// forwarded.
func (s *Store) Txn(ctx context.Context, req *storev1.TxnRequest) (*storev1.TxnResponse, error) {
	return forwardUnary(s, ctx, req, s.eng.Txn, func(c storev1Client, ctx context.Context, req *storev1.TxnRequest) (*storev1.TxnResponse, error) {
		return c.Txn(ctx, req)
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
// store's errors, so errors.Is works the same on every node.
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
	case codes.ResourceExhausted:
		sentinel = ErrQuotaExceeded
		if strings.Contains(msg, ErrValueTooLarge.Error()) {
			sentinel = ErrValueTooLarge
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
		sentinel = ErrNotLeader
		if strings.Contains(msg, "may or may not") {
			sentinel = errors.Join(ErrNotLeader, errAmbiguous)
		}
	case codes.DeadlineExceeded:
		sentinel = context.DeadlineExceeded
	case codes.Canceled:
		sentinel = context.Canceled
	}
	return &remoteError{st: st, sentinel: sentinel}
}

// leaderStatus names the leader in an error from a forwarded call.
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
			return status.Errorf(st.Code(), "store: forwarded to the leader's API at %s: %s", target, st.Message())
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
