package sdk

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// Store errors. Test for them with errors.Is; the error itself also carries
// the store's message, which names the key or the limit.
var (
	// ErrNotFound is returned by Get when the key does not exist.
	ErrNotFound = errors.New("key not found")
	// ErrConflict is returned when a condition did not hold: a Put or Delete
	// whose IfModRevision no longer matches. Read again and retry.
	ErrConflict = errors.New("conflict")
	// ErrLimit is returned when a quota or rate limit of the plugin's
	// namespace refused a request; nothing was written.
	ErrLimit = errors.New("store limit reached")
	// ErrCompacted is returned by Watch when the start revision is older than
	// the history the store keeps: list again, then watch from the list's
	// revision + 1.
	ErrCompacted = errors.New("revision compacted")
	// ErrUnavailable is returned when the store cannot answer now (no leader,
	// agent shutting down, agent out of reach) and did not apply the
	// request. The request may be retried.
	ErrUnavailable = errors.New("store unavailable")
	// ErrOutcomeUnknown is returned by a write (Put, Delete, DeleteRange,
	// Txn) whose answer was lost after it reached the store: the leader
	// stopped or changed, or a connection broke. The write may or may not
	// have been applied, so it is not ErrUnavailable: sending it again as
	// it is may apply it twice. Read what it wrote first, or make the write
	// conditional (IfModRevision, a Txn compare) so that a second attempt
	// cannot apply twice.
	ErrOutcomeUnknown = errors.New("outcome unknown")
	// ErrFenced is returned by a write (Put, Delete, DeleteRange, Txn) to
	// a singleton plugin's namespace from an instance that is not its
	// active: a standby, or an active that was replaced while it was cut off
	// from the cluster. Nothing was written, and writing again fails the same
	// way: stop changing state until RoleChanged makes the instance active.
	// The message names the write's epoch and the singleton's current one.
	ErrFenced = errors.New("fenced: this instance is not the singleton's active")
	// ErrPermission is returned when the plugin asked for something outside
	// its namespace or rights.
	ErrPermission = errors.New("permission denied")
)

// storeError is an error from the store, mapped to a sentinel. It keeps the
// gRPC status so that a plugin returning it from its own RPC handler passes
// the original code on to its caller.
type storeError struct {
	op       string
	sentinel error
	status   *status.Status
}

func (e *storeError) Error() string {
	msg := "store " + e.op + ": " + e.sentinel.Error()
	if m := e.status.Message(); m != "" {
		msg += ": " + m
	}
	return msg
}

func (e *storeError) Unwrap() error { return e.sentinel }

// GRPCStatus lets grpc status.FromError find the store's code.
func (e *storeError) GRPCStatus() *status.Status { return e.status }

// fromRPC maps an error of a store RPC to the SDK's sentinels. It is the one
// place where gRPC codes become SDK errors.
func fromRPC(op string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return &wrapped{op: op, err: err}
	}
	var sentinel error
	switch st.Code() {
	case codes.FailedPrecondition:
		sentinel = ErrConflict
		switch storev1.ErrorReason(err) {
		case storev1.ReasonStaleEpoch, storev1.ReasonUnknownEpoch, storev1.ReasonNotActive:
			sentinel = ErrFenced
		}
	case codes.ResourceExhausted:
		sentinel = ErrLimit
	case codes.OutOfRange:
		sentinel = ErrCompacted
	case codes.Unavailable:
		sentinel = ErrUnavailable
		if storev1.ErrorReason(err) == storev1.ReasonOutcomeUnknown {
			sentinel = ErrOutcomeUnknown
		}
	case codes.PermissionDenied:
		sentinel = ErrPermission
	case codes.NotFound:
		sentinel = ErrNotFound
	case codes.Canceled:
		sentinel = context.Canceled
	case codes.DeadlineExceeded:
		sentinel = context.DeadlineExceeded
	default:
		return &wrapped{op: op, err: err}
	}
	return &storeError{op: op, sentinel: sentinel, status: st}
}

// fromWrite maps an error of a write RPC like fromRPC. A write cut off
// without an answer after gRPC started a stream for it (p has its peer:
// the request may have reached the agent, which may have applied it) is
// ErrOutcomeUnknown, as the store says for the hops behind the agent; one
// for which gRPC started none never left the plugin.
func fromWrite(op string, err error, p *peer.Peer) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable || p.Addr == nil || storev1.ErrorReason(err) != "" {
		return fromRPC(op, err)
	}
	lost := status.New(codes.Unavailable, "the connection to the agent ended before it answered ("+st.Message()+
		"); the write may or may not have been applied: read what it wrote before writing it again")
	if d, derr := lost.WithDetails(&errdetails.ErrorInfo{Reason: storev1.ReasonOutcomeUnknown, Domain: storev1.ErrorDomain}); derr == nil {
		lost = d
	}
	return &storeError{op: op, sentinel: ErrOutcomeUnknown, status: lost}
}

// wrapped names the operation of an error that maps to no sentinel.
type wrapped struct {
	op  string
	err error
}

func (e *wrapped) Error() string { return "store " + e.op + ": " + e.err.Error() }
func (e *wrapped) Unwrap() error { return e.err }
