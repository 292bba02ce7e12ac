package sdk

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
	// agent shutting down, connection lost). The request may be retried.
	ErrUnavailable = errors.New("store unavailable")
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
	case codes.ResourceExhausted:
		sentinel = ErrLimit
	case codes.OutOfRange:
		sentinel = ErrCompacted
	case codes.Unavailable:
		sentinel = ErrUnavailable
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

// wrapped names the operation of an error that maps to no sentinel.
type wrapped struct {
	op  string
	err error
}

func (e *wrapped) Error() string { return "store " + e.op + ": " + e.err.Error() }
func (e *wrapped) Unwrap() error { return e.err }
