package clusterv1

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of the reasons the
// cluster services attach to their errors.
const ErrorDomain = "plughost.cluster"

// Reasons (google.rpc.ErrorInfo.reason, in ErrorDomain) of BundleService
// errors. Metadata "node" names the node that answered.
const (
	// ReasonServerBusy (RESOURCE_EXHAUSTED): the node serves as many
	// fetches as it allows at once (metadata "limit": the agent config key
	// that sets it). Fetch from another node, or from this one later.
	ReasonServerBusy = "BUNDLE_SERVER_BUSY"
	// ReasonNotHeld (NOT_FOUND): the node has no installed copy of the
	// version, or the catalog has no such version. Fetch from another node.
	ReasonNotHeld = "BUNDLE_NOT_HELD"
	// ReasonBadOffset (OUT_OF_RANGE): the offset is past the archive's end.
	// Fetch from 0.
	ReasonBadOffset = "BUNDLE_BAD_OFFSET"
	// ReasonSendStalled (DEADLINE_EXCEEDED): the fetching node took
	// nothing for a while (bundle fetches' send stall); fetch again,
	// from the offset reached.
	ReasonSendStalled = "BUNDLE_SEND_STALLED"
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
