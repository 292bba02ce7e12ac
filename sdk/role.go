package sdk

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Role is an instance's part in its singleton plugin: a plugin whose
// manifest places it as a singleton runs one active instance in the
// cluster, and may run a warm standby.
//
// Only the active writes the plugin's namespace. The SDK sends the epoch
// the agent gave the instance with every write, and the store refuses a
// write whose epoch is not the singleton's current one with ErrFenced: an
// active that was cut off from the cluster, and replaced meanwhile, cannot
// change the state its successor owns.
type Role int

const (
	// RoleNone: the plugin is not a singleton; every instance may write.
	RoleNone Role = iota
	// RoleActive: the instance is the singleton's active.
	RoleActive
	// RoleStandby: the instance is not the active; its writes are refused.
	RoleStandby
	// RoleFenced: the instance was the active until its node lost the
	// cluster's leader for longer than the agent's lease; its writes are
	// refused and the agent is stopping it.
	RoleFenced
)

// String returns the role's name.
func (r Role) String() string {
	switch r {
	case RoleNone:
		return "none"
	case RoleActive:
		return "active"
	case RoleStandby:
		return "standby"
	case RoleFenced:
		return "fenced"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// RoleChanger is implemented by singleton plugins that act when their role
// changes: start work on becoming active, stop it on losing that. The
// instance's first role is Env.Role's at Configure; RoleChanged is called
// after Configure for each later change, one call at a time, in the order
// the agent made them. When it is called, writes already carry the new
// epoch (or, for a role other than active, none). An error is reported to
// the agent, which logs it; the role holds all the same.
type RoleChanger interface {
	RoleChanged(ctx context.Context, role Role, epoch int64) error
}

// standing is an instance's role and epoch, as the agent last told it.
type standing struct {
	role  Role
	epoch int64
}

// roleState holds the instance's standing for the store client and the
// lifecycle service.
type roleState struct {
	cur atomic.Pointer[standing]
	mu  sync.Mutex // serialises SetRole
}

func (s *roleState) get() standing {
	if p := s.cur.Load(); p != nil {
		return *p
	}
	return standing{}
}

func (s *roleState) set(role Role, epoch int64) { s.cur.Store(&standing{role: role, epoch: epoch}) }

// writeEpoch is the epoch a write carries: the active's, else none.
func (s *roleState) writeEpoch() int64 {
	if st := s.get(); st.role == RoleActive {
		return st.epoch
	}
	return 0
}

// Role is the instance's role and epoch (0 but for an active), as the agent
// last told it.
func (e *Env) Role() (Role, int64) {
	if e.role == nil {
		return RoleNone, 0
	}
	st := e.role.get()
	return st.role, st.epoch
}

func roleFromProto(r pluginv1.Role) (Role, error) {
	switch r {
	case pluginv1.Role_ROLE_UNSPECIFIED:
		return RoleNone, nil
	case pluginv1.Role_ROLE_ACTIVE:
		return RoleActive, nil
	case pluginv1.Role_ROLE_STANDBY:
		return RoleStandby, nil
	case pluginv1.Role_ROLE_FENCED:
		return RoleFenced, nil
	}
	return 0, fmt.Errorf("unknown role %d", r)
}

// checkRole validates a role and epoch from the agent.
func checkRole(r pluginv1.Role, epoch int64) (Role, error) {
	role, err := roleFromProto(r)
	switch {
	case err != nil:
		return 0, err
	case epoch < 0:
		return 0, fmt.Errorf("negative epoch %d", epoch)
	case role == RoleActive && epoch == 0:
		return 0, fmt.Errorf("an active role without an epoch")
	}
	return role, nil
}

// SetRole implements pluginv1.PluginServiceServer.
func (r *runtime) SetRole(ctx context.Context, req *pluginv1.SetRoleRequest) (*pluginv1.SetRoleResponse, error) {
	role, err := checkRole(req.GetRole(), req.GetEpoch())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "set role: %v", err)
	}
	r.role.mu.Lock()
	defer r.role.mu.Unlock()
	r.role.set(role, req.GetEpoch())
	epoch := r.role.writeEpoch()
	r.logger.Info("role changed", "role", role, "epoch", epoch)
	if c, ok := r.plugin.(RoleChanger); ok && r.configured.Load() {
		if err := c.RoleChanged(ctx, role, epoch); err != nil {
			return nil, fmt.Errorf("role change of %s %s to %s: %w", r.info.Name, r.info.Version, role, err)
		}
	}
	return &pluginv1.SetRoleResponse{}, nil
}
