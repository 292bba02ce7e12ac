package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of the reasons the router
// attaches to the errors it answers calls with.
const ErrorDomain = "plughost.router"

// Reasons (google.rpc.ErrorInfo.reason, in ErrorDomain) of an UNAVAILABLE
// call to a plugin. The ErrorInfo's metadata names the plugin under
// "plugin" and, where one is involved, the node under "node".
const (
	// ReasonNoInstance: no instance of the plugin serves, on this node or
	// any other it knows of. Nothing of the call reached a plugin.
	ReasonNoInstance = "NO_HEALTHY_INSTANCE"
	// ReasonNoLocalInstance: another node relayed the call here, and this
	// node has no serving instance of the plugin. Nothing of it reached a
	// plugin.
	ReasonNoLocalInstance = "NO_LOCAL_INSTANCE"
	// ReasonUnreachable: the instance chosen could not be reached (its
	// node's relay or its socket); nothing of the call reached it.
	ReasonUnreachable = "INSTANCE_UNREACHABLE"
	// ReasonInstanceLost: the connection to the instance (its socket, or
	// its node's relay) broke while the call was under way: the plugin may
	// or may not have processed it.
	ReasonInstanceLost = "INSTANCE_LOST"
	// ReasonFailingOver: the plugin is a singleton whose active instance
	// is moving to another node; the call waited for it in vain. Nothing
	// of it reached a plugin: send it again.
	ReasonFailingOver = "FAILING_OVER"
	// ReasonNotRelayable: another node relayed a call here for something
	// that is not a plugin's service; only plugin calls are relayed.
	ReasonNotRelayable = "NOT_RELAYABLE"
)

// withInfo returns a status error with code and msg and an ErrorInfo of
// reason in ErrorDomain.
func withInfo(code codes.Code, reason, msg string, meta map[string]string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: ErrorDomain, Reason: reason, Metadata: meta}); err == nil {
		st = d
	}
	return st.Err()
}

// ErrorReason is the ErrorInfo reason, in ErrorDomain, of the gRPC status
// err carries, or "".
func ErrorReason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}

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
	return withInfo(codes.Unavailable, ReasonNoInstance,
		fmt.Sprintf("plugin %q has no serving instance (state: %s)%s", plugin, state, whatToDo(plugin, state)),
		map[string]string{"plugin": plugin})
}

func errHeldTooLong(plugin, state string, held time.Duration) error {
	return withInfo(codes.Unavailable, ReasonNoInstance,
		fmt.Sprintf("plugin %q has no serving instance (state: %s): no instance came up within %s%s", plugin, state, held, whatToDo(plugin, state)),
		map[string]string{"plugin": plugin})
}

// errNoTakeover is the status of a call whose instance on node could not
// be reached and that no other instance took within held.
func errNoTakeover(p *plugin, node string, held time.Duration) error {
	why := ""
	if note := p.failover.Load(); note != nil {
		why = " (" + *note + ")"
	}
	return withInfo(codes.Unavailable, ReasonUnreachable,
		fmt.Sprintf("plugin %q on node %s is unreachable, and no other instance took the call within %s%s: retry, or see 'plughost plugin status %s'", p.name, node, held, why, p.name),
		map[string]string{"plugin": p.name, "node": node})
}

func errFailingOver(plugin, note string, held time.Duration) error {
	return withInfo(codes.Unavailable, ReasonFailingOver,
		fmt.Sprintf("plugin %q has no serving instance: %s; no instance came up within %s; retry in a moment", plugin, note, held),
		map[string]string{"plugin": plugin})
}

// errNoRoute is the status of a call to p that finds no instance to go
// to. On a node that knows of p's instances elsewhere it says what each
// is; a call relayed from another node (localOnly) says this node has
// none.
func (r *Router) errNoRoute(p *plugin, localOnly bool) error {
	if localOnly {
		here := "this node"
		if r.cfg.Node != "" {
			here = "node " + r.cfg.Node
		}
		return withInfo(codes.Unavailable, ReasonNoLocalInstance,
			fmt.Sprintf("%s has no serving instance of plugin %q (state: %s); the node that relayed the call here saw one: retry, it routes by the newest observations", here, p.name, p.stateText()),
			map[string]string{"plugin": p.name, "node": r.cfg.Node})
	}
	r.mu.Lock()
	var others []string
	for _, e := range p.remotes {
		what := "not healthy"
		if e.Healthy {
			what = "unreachable"
		}
		others = append(others, e.Node+": "+what)
	}
	r.mu.Unlock()
	if len(others) == 0 {
		r.mu.Lock()
		declared := len(p.services) > 0
		r.mu.Unlock()
		if !declared && p.backend.Load() == nil {
			// Registered, but not this node's to run, and no node runs it.
			return withInfo(codes.Unavailable, ReasonNoInstance,
				fmt.Sprintf("no node runs plugin %q; see 'plughost plugin status %s' for where it is placed and why", p.name, p.name),
				map[string]string{"plugin": p.name})
		}
		return errNoInstance(p.name, p.stateText())
	}
	slices.Sort(others)
	state := p.stateText()
	return withInfo(codes.Unavailable, ReasonNoInstance,
		fmt.Sprintf("no healthy instance of plugin %q on any node (here: %s; %s)%s", p.name, state, strings.Join(others, "; "), whatToDo(p.name, state)),
		map[string]string{"plugin": p.name})
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
	meta := map[string]string{"plugin": b.Plugin}
	where := ""
	if b.Node != "" {
		meta["node"] = b.Node
		where = " on node " + b.Node
	}
	return withInfo(codes.Unavailable, ReasonUnreachable,
		fmt.Sprintf("plugin %q version %s%s is unreachable: %s", b.Plugin, b.Version, where, st.Message()), meta)
}

// errFromContext is the status of a call whose context ended.
func errFromContext(ctx context.Context) error {
	return status.FromContextError(ctx.Err()).Err()
}
