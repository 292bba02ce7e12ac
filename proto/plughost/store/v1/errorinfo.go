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

// Reasons the store attaches to a RESOURCE_EXHAUSTED error: a limit of
// the agent's refused the request, and nothing of it was applied. The
// ErrorInfo's metadata names the limit's agent config key under
// MetadataLimit. Sending the same request again fails the same way until
// the limit is raised or, for quotas and watches, room is made.
const (
	// ReasonQuotaExceeded: the write would take its namespace past a
	// quota (default_quota.max_bytes or .max_keys, or quotas.NS's).
	ReasonQuotaExceeded = "QUOTA_EXCEEDED"
	// ReasonValueTooLarge: a value is larger than max_value_bytes.
	ReasonValueTooLarge = "VALUE_TOO_LARGE"
	// ReasonTxnTooLarge: a transaction is larger than max_txn_bytes.
	ReasonTxnTooLarge = "TXN_TOO_LARGE"
	// ReasonTooManyWatches: the client or the node has as many watches
	// open as max_watches_per_client or max_watches allows.
	ReasonTooManyWatches = "TOO_MANY_WATCHES"
	// ReasonMessageTooLarge: a request message is larger than the agent's
	// API takes, which max_txn_bytes and max_value_bytes size.
	ReasonMessageTooLarge = "MESSAGE_TOO_LARGE"
)

// Reasons the store attaches to a FAILED_PRECONDITION error that fenced a
// write (see Fence): nothing of it was applied, and sending it again fails
// the same way. The instance that sent it is not its singleton's active, or
// no longer: it should stop changing the singleton's state. The metadata
// holds the write's epoch under MetadataEpoch and the singleton's current
// one under MetadataCurrentEpoch (both decimal; the epoch is "0" for a
// write that carried none).
const (
	// ReasonStaleEpoch: the write's epoch is older than the singleton's
	// current one, or it carried none.
	ReasonStaleEpoch = "STALE_EPOCH"
	// ReasonUnknownEpoch: the write's epoch is newer than the singleton's
	// current one, which no instance was ever given.
	ReasonUnknownEpoch = "UNKNOWN_EPOCH"
	// ReasonNotActive: the agent refused the write before it reached the
	// store, because the agent holds the instance to be no singleton's
	// active: a warm standby, or an active its node stopped after losing
	// the raft leader for longer than singleton_lease.
	ReasonNotActive = "NOT_ACTIVE"
)

// ErrorInfo metadata keys of a fenced write's error.
const (
	MetadataEpoch        = "epoch"
	MetadataCurrentEpoch = "current_epoch"
)

// MetadataLimit is the ErrorInfo metadata key naming the agent config key
// of the limit a RESOURCE_EXHAUSTED error crossed.
const MetadataLimit = "limit"

// ErrorReason is the ErrorInfo reason, in ErrorDomain, of the gRPC status
// err carries, or "" when it carries none.
func ErrorReason(err error) string { return ErrorInfo(err).GetReason() }

// ErrorInfo is the google.rpc.ErrorInfo, in ErrorDomain, of the gRPC status
// err carries, or nil when it carries none.
func ErrorInfo(err error) *errdetails.ErrorInfo {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return nil
	}
	for _, d := range se.GRPCStatus().Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info
		}
	}
	return nil
}
