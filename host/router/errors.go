package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors returned by the router's management methods and LoadDescriptors.
// They are wrapped with the names involved; test for them with errors.Is.
var (
	// ErrServiceTaken means another plugin already declared the service.
	ErrServiceTaken = errors.New("service is already served by another plugin")
	// ErrInvalidName means a plugin or service name is empty or malformed.
	ErrInvalidName = errors.New("invalid name")
	// ErrServiceNotServed means a plugin's reflection does not know a
	// service its manifest lists.
	ErrServiceNotServed = errors.New("plugin does not serve the service")
	// ErrNoReflection means a plugin serves neither gRPC reflection v1 nor
	// v1alpha, so its descriptors cannot be loaded.
	ErrNoReflection = errors.New("plugin serves no gRPC reflection")
)

// The statuses below are what a client reads; each names the thing and,
// where there is one, the fix.

func errUnknownService(service string) error {
	return status.Error(codes.Unimplemented, "unknown service "+service+
		": no plugin registered with the agent serves it (see 'plughost plugin list')")
}

func errNoInstance(plugin, state string) error {
	return status.Errorf(codes.Unavailable, "plugin %q has no serving instance (state: %s)%s", plugin, state, whatToDo(plugin, state))
}

func errHeldTooLong(plugin, state string, held time.Duration) error {
	return status.Errorf(codes.Unavailable,
		"plugin %q has no serving instance (state: %s): no instance came up within %s%s", plugin, state, held, whatToDo(plugin, state))
}

// whatToDo is the advice for a caller of a plugin with no serving
// instance, unless its state already gives one.
func whatToDo(plugin, state string) string {
	switch {
	case strings.Contains(state, "'plughost "):
		return ""
	case strings.HasPrefix(state, "starting"), strings.HasPrefix(state, "restarting"):
		return "; retry in a moment"
	case strings.HasPrefix(state, "failed"):
		return fmt.Sprintf("; see 'plughost plugin status %s', then 'plughost plugin restart %s' once it is fixed", plugin, plugin)
	}
	return fmt.Sprintf("; the agent restarts it by itself: retry later, or see 'plughost plugin status %s'", plugin)
}

// errBackendConn turns a failure to open a stream on a backend's connection
// into Unavailable naming the plugin and version. Context errors keep their
// own code: the caller gave up, the backend did not fail.
func errBackendConn(b *Backend, err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded:
		return err
	}
	return status.Errorf(codes.Unavailable, "plugin %q version %s is unreachable: %s", b.Plugin, b.Version, st.Message())
}

// errFromContext is the status of a call whose context ended.
func errFromContext(ctx context.Context) error {
	return status.FromContextError(ctx.Err()).Err()
}
