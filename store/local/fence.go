package local

import (
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// RoleKind is a plugin instance's part in its singleton.
type RoleKind int

const (
	// RoleNone: the plugin is not a singleton, as far as the agent knows.
	RoleNone RoleKind = iota
	// RoleActive: the instance is the singleton's active, at Role.Epoch.
	RoleActive
	// RoleStandby: the instance is not the singleton's active.
	RoleStandby
	// RoleFenced: the instance was the active until its node lost the raft
	// leader for longer than singleton_lease; it is being stopped.
	RoleFenced
)

// Role is what the agent holds a plugin instance to be in its singleton: a
// binding fences the instance's writes with it.
type Role struct {
	Kind RoleKind
	// Epoch is an active's epoch: the mod revision of _sys
	// singleton/<plugin> that made this node the active.
	Epoch int64
	// Why says, for a standby or fenced instance, why it may not write
	// ("the active is n3", "this node has not heard from a raft leader
	// for 4.2s").
	Why string
}

// fence checks and completes the fence of a write from the instance, by
// the role the agent holds it to. A standby's or fenced instance's write is
// refused here. An active's write carries the epoch it sent, which may
// not be newer than the one the agent gave it; a write without one (an
// SDK older than fencing) is stamped with the agent's. Any other
// instance's write carries epoch 0, which the store refuses if the plugin
// is a singleton after all. A binding without Role does not fence: its
// writes carry no fence, whatever the plugin sent.
func (bs *boundServer) fence(sent *storev1.Fence) (*storev1.Fence, error) {
	if bs.b.Role == nil {
		return nil, nil
	}
	r := bs.b.Role()
	switch r.Kind {
	case RoleStandby, RoleFenced:
		what := "the standby"
		if r.Kind == RoleFenced {
			what = "fenced"
		}
		st := status.New(codes.FailedPrecondition, fmt.Sprintf(
			"store: write refused by the agent: this instance of singleton %s is %s (%s); only the active writes", bs.b.Namespace, what, r.Why))
		if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: storev1.ReasonNotActive, Domain: storev1.ErrorDomain,
			Metadata: map[string]string{storev1.MetadataEpoch: fmt.Sprint(sent.GetEpoch())}}); err == nil {
			st = d
		}
		return nil, st.Err()
	case RoleActive:
		switch e := sent.GetEpoch(); {
		case sent == nil || e == 0:
			return &storev1.Fence{Epoch: r.Epoch}, nil
		case e > r.Epoch:
			// Fenced like a write the store refuses (the SDK's ErrFenced):
			// the agent holds the instance to an older epoch, or to none yet
			// (0: the singleton moved away and back, its epoch not stamped).
			st := status.New(codes.FailedPrecondition, fmt.Sprintf(
				"store: write refused by the agent: epoch %d was never given to this instance of singleton %s (its epoch is %d); only writes at the instance's epoch apply",
				e, bs.b.Namespace, r.Epoch))
			if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: storev1.ReasonUnknownEpoch, Domain: storev1.ErrorDomain,
				Metadata: map[string]string{storev1.MetadataEpoch: fmt.Sprint(e), storev1.MetadataCurrentEpoch: fmt.Sprint(r.Epoch)}}); err == nil {
				st = d
			}
			return nil, st.Err()
		}
		return &storev1.Fence{Epoch: sent.GetEpoch()}, nil
	}
	return &storev1.Fence{}, nil
}
