package storev1

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of the reasons the store
// attaches to its errors.
const ErrorDomain = "plughost.store"

// Reasons (google.rpc.ErrorInfo.reason, in ErrorDomain) the store attaches
// to an UNAVAILABLE error, so that a client can tell whether sending the
// request again is safe without reading the message.
const (
	// ReasonNotLeader: the node that answered is not the leader, or could
	// not reach it, and did not apply the request. Sending it again is safe.
	ReasonNotLeader = "NOT_LEADER"
	// ReasonClosed: the node that answered is shutting down and did not
	// apply the request. Sending it again is safe.
	ReasonClosed = "CLOSED"
	// ReasonNoSpace: the leader could not write its log for lack of disk
	// space and did not apply the request. Sending it again is safe; it
	// succeeds once space is freed or another node leads.
	ReasonNoSpace = "NO_SPACE"
	// ReasonOutcomeUnknown: a write reached the leader, or its log, and the
	// answer was lost (leadership changed, the leader stopped, a connection
	// broke). It may or may not have been applied: read what it wrote
	// before writing it again.
	ReasonOutcomeUnknown = "OUTCOME_UNKNOWN"
)

// ErrorReason is the ErrorInfo reason, in ErrorDomain, of the gRPC status
// err carries, or "" when it carries none.
func ErrorReason(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return ""
	}
	for _, d := range se.GRPCStatus().Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}
