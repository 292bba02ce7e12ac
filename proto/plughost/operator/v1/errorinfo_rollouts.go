package operatorv1

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// RolloutsErrorDomain is the google.rpc.ErrorInfo domain of the reasons the
// rollout commands (GetRollout, WatchRollout, Pause/Resume/AbortRollout,
// and PinVersion, UnpinVersion, RollbackPlugin following a rollout) attach
// to their errors.
const RolloutsErrorDomain = "plughost.operator.rollouts"

// Reasons, in RolloutsErrorDomain. Metadata "plugin" and, when known,
// "rollout" name what the error is about.
const (
	// ReasonRolloutNotFound: no such rollout, or the plugin has had none
	// (NOT_FOUND).
	ReasonRolloutNotFound = "ROLLOUT_NOT_FOUND"
	// ReasonRolloutFinished: the rollout is completed, rolled back or
	// superseded: nothing moves any more (FAILED_PRECONDITION; metadata
	// "state").
	ReasonRolloutFinished = "ROLLOUT_FINISHED"
	// ReasonRolloutState: the request does not apply to the rollout's
	// state: resume of one that is not paused, pause of a paused one,
	// abort of one already rolling back (FAILED_PRECONDITION; metadata
	// "state").
	ReasonRolloutState = "ROLLOUT_STATE"
	// ReasonRolloutNotStarted: a pin, unpin or rollback was recorded but
	// the rollout controller started no rollout towards it in time
	// (DEADLINE_EXCEEDED).
	ReasonRolloutNotStarted = "ROLLOUT_NOT_STARTED"
	// ReasonRolloutFailed: the rollout a pin, unpin or rollback followed
	// rolled back, paused or was superseded (ABORTED; metadata "state",
	// "node").
	ReasonRolloutFailed = "ROLLOUT_FAILED"
)

// RolloutErrorReason is the reason, in RolloutsErrorDomain, of the gRPC
// status err carries; "" when it carries none.
func RolloutErrorReason(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return ""
	}
	for _, d := range se.GRPCStatus().Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == RolloutsErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}
