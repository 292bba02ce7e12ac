package store

import (
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// ServerOptions are the message limits of a gRPC server that serves the
// store's API (the agent's own, a plugin's store connection): it takes
// requests up to MaxRequestBytes, so a client cannot make the agent read
// a message larger than the largest legal request. gRPC refuses a larger
// one from its length prefix alone, before reading it, and answers
// RESOURCE_EXHAUSTED "grpc: received message larger than max (N vs.
// LIMIT)" itself: a handler never sees the refusal, so clients explain it
// (see ExplainMessageSize).
func (s *Store) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(s.MaxRequestBytes())}
}

// ExplainMessageSize returns err, an agent's refusal of a request message
// over its limit, as a RESOURCE_EXHAUSTED that also names the agent config
// keys that size the limit, with the ErrorInfo reason
// storev1.ReasonMessageTooLarge, for a client to show. Other errors, nil
// included, are returned as they are.
func ExplainMessageSize(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil || st.Code() != codes.ResourceExhausted || !strings.HasPrefix(st.Message(), "grpc: received message larger than max") ||
		storev1.ErrorReason(err) == storev1.ReasonMessageTooLarge {
		return err
	}
	msg := st.Message() + ": the agent's API takes messages up to a size set by max_txn_bytes and max_value_bytes; split the request, or raise max_txn_bytes in the agent config"
	out := status.New(codes.ResourceExhausted, msg)
	if d, derr := out.WithDetails(&errdetails.ErrorInfo{Reason: storev1.ReasonMessageTooLarge, Domain: storev1.ErrorDomain,
		Metadata: map[string]string{storev1.MetadataLimit: "max_txn_bytes"}}); derr == nil {
		out = d
	}
	return out.Err()
}
