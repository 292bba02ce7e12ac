package store

import (
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/local"
)

// Binding ties a store connection to one plugin: its namespace and its
// request rate (requests per second, with a burst; Rate 0 is unlimited).
type Binding = local.Binding

// Bind returns srv restricted to b; see local.Bind.
func Bind(srv storev1.StoreServiceServer, b Binding) storev1.StoreServiceServer {
	return local.Bind(srv, b)
}

// Role is what the agent holds a plugin instance to be in its singleton;
// see local.Role.
type Role = local.Role

// RoleKind is a plugin instance's part in its singleton.
type RoleKind = local.RoleKind

// The kinds of Role.
const (
	RoleNone    = local.RoleNone
	RoleActive  = local.RoleActive
	RoleStandby = local.RoleStandby
	RoleFenced  = local.RoleFenced
)
