package local

import (
	"context"
	"errors"
	"io"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/fsm"
)

// API is the store's API as Go calls: Engine serves it from one node, and
// package store's Store adds forwarding to the raft leader.
type API interface {
	Get(context.Context, *storev1.GetRequest) (*storev1.GetResponse, error)
	Put(context.Context, *storev1.PutRequest) (*storev1.PutResponse, error)
	Delete(context.Context, *storev1.DeleteRequest) (*storev1.DeleteResponse, error)
	DeleteRange(context.Context, *storev1.DeleteRangeRequest) (*storev1.DeleteRangeResponse, error)
	List(context.Context, *storev1.ListRequest) (*storev1.ListResponse, error)
	Txn(context.Context, *storev1.TxnRequest) (*storev1.TxnResponse, error)
	Watch(ctx context.Context, req *storev1.WatchRequest, send func(*storev1.WatchResponse) error) error
}

var _ API = (*Engine)(nil)

// Server serves an API as StoreService for any namespace; hand a plugin
// only a Bind of it. Errors become gRPC status codes here and nowhere else.
type Server struct {
	storev1.UnimplementedStoreServiceServer
	api API
}

var _ storev1.StoreServiceServer = (*Server)(nil)

// NewServer returns the StoreService of api.
func NewServer(api API) *Server { return &Server{api: api} }

// Get reads one key.
func (srv *Server) Get(ctx context.Context, req *storev1.GetRequest) (*storev1.GetResponse, error) {
	resp, err := srv.api.Get(ctx, req)
	return resp, ToStatus(err)
}

// Put writes one key.
func (srv *Server) Put(ctx context.Context, req *storev1.PutRequest) (*storev1.PutResponse, error) {
	resp, err := srv.api.Put(ctx, req)
	return resp, ToStatus(err)
}

// Delete removes one key.
func (srv *Server) Delete(ctx context.Context, req *storev1.DeleteRequest) (*storev1.DeleteResponse, error) {
	resp, err := srv.api.Delete(ctx, req)
	return resp, ToStatus(err)
}

// DeleteRange removes every key with a prefix.
func (srv *Server) DeleteRange(ctx context.Context, req *storev1.DeleteRangeRequest) (*storev1.DeleteRangeResponse, error) {
	resp, err := srv.api.DeleteRange(ctx, req)
	return resp, ToStatus(err)
}

// List reads keys a page at a time.
func (srv *Server) List(ctx context.Context, req *storev1.ListRequest) (*storev1.ListResponse, error) {
	resp, err := srv.api.List(ctx, req)
	return resp, ToStatus(err)
}

// Txn runs a transaction.
func (srv *Server) Txn(ctx context.Context, req *storev1.TxnRequest) (*storev1.TxnResponse, error) {
	resp, err := srv.api.Txn(ctx, req)
	return resp, ToStatus(err)
}

// Watch streams changes.
func (srv *Server) Watch(req *storev1.WatchRequest, stream grpc.ServerStreamingServer[storev1.WatchResponse]) error {
	return ToStatus(srv.api.Watch(stream.Context(), req, stream.Send))
}

// ToStatus maps the store's errors to gRPC status codes, keeping the
// message. An UNAVAILABLE error carries a google.rpc.ErrorInfo reason
// (storev1.ReasonNotLeader, ReasonClosed, ReasonNoSpace,
// ReasonOutcomeUnknown) that says
// whether sending the request again is safe; a fenced write's
// FAILED_PRECONDITION carries ReasonStaleEpoch or ReasonUnknownEpoch and
// both epochs. Errors that already carry a
// status pass through.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	st := status.New(codeOf(err), err.Error())
	if reason := reasonOf(err); reason != "" {
		info := &errdetails.ErrorInfo{Reason: reason, Domain: storev1.ErrorDomain}
		if limit := limitOf(err); limit != "" {
			info.Metadata = map[string]string{storev1.MetadataLimit: limit}
		}
		var ee *fsm.EpochError
		if errors.As(err, &ee) {
			info.Metadata = map[string]string{
				storev1.MetadataEpoch:        strconv.FormatInt(ee.Epoch, 10),
				storev1.MetadataCurrentEpoch: strconv.FormatInt(ee.Current, 10),
			}
		}
		if d, derr := st.WithDetails(info); derr == nil {
			st = d
		}
	}
	return st.Err()
}

func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, ErrOutcomeUnknown):
		return codes.Unavailable
	case errors.Is(err, ErrInvalidNamespace), errors.Is(err, ErrInvalidRequest), errors.Is(err, ErrCorruptBackup):
		return codes.InvalidArgument
	case errors.Is(err, ErrValueTooLarge), errors.Is(err, ErrQuotaExceeded), errors.Is(err, ErrTxnTooLarge), errors.Is(err, ErrTooManyWatches):
		return codes.ResourceExhausted
	case errors.Is(err, ErrCASFailed), errors.Is(err, ErrNotEmpty), errors.Is(err, ErrStaleEpoch), errors.Is(err, ErrBackupWithoutACL):
		return codes.FailedPrecondition
	case errors.Is(err, ErrCompacted):
		return codes.OutOfRange
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrClosed), errors.Is(err, ErrNoSpace):
		// A write refused for a full disk was not applied and succeeds
		// when retried once space is freed or another node leads.
		return codes.Unavailable
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, io.ErrUnexpectedEOF):
		return codes.InvalidArgument
	}
	return codes.Internal
}

// reasonOf is the ErrorInfo reason of an UNAVAILABLE, RESOURCE_EXHAUSTED
// or fenced FAILED_PRECONDITION error.
func reasonOf(err error) string {
	var ee *fsm.EpochError
	switch {
	case errors.As(err, &ee):
		return ee.Reason()
	case errors.Is(err, ErrOutcomeUnknown):
		return storev1.ReasonOutcomeUnknown
	case errors.Is(err, ErrQuotaExceeded):
		return storev1.ReasonQuotaExceeded
	case errors.Is(err, ErrValueTooLarge):
		return storev1.ReasonValueTooLarge
	case errors.Is(err, ErrTxnTooLarge):
		return storev1.ReasonTxnTooLarge
	case errors.Is(err, ErrTooManyWatches):
		return storev1.ReasonTooManyWatches
	case codeOf(err) != codes.Unavailable:
		return ""
	case errors.Is(err, ErrNotLeader):
		return storev1.ReasonNotLeader
	case errors.Is(err, ErrClosed):
		return storev1.ReasonClosed
	case errors.Is(err, ErrNoSpace):
		return storev1.ReasonNoSpace
	}
	return ""
}

// limitOf is the agent config key of the limit err crossed, or "".
func limitOf(err error) string {
	var le *LimitError
	if errors.As(err, &le) {
		return le.Limit
	}
	var qe *fsm.QuotaError
	if errors.As(err, &qe) {
		return "default_quota.max_" + qe.Unit
	}
	return ""
}
