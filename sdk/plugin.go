// Package sdk is what a plughost plugin imports: Serve runs the plugin under
// the agent, the optional lifecycle interfaces below hook into its life, and
// Store is the plugin's own namespace of the replicated key-value store.
//
// A plugin's whole main is one call:
//
//	var version = "0.0.0-dev" // set with -ldflags "-X main.version=1.2.0"
//
//	func main() { sdk.Serve(sdk.Info{Name: "echo", Version: version}, &server{}) }
//
// The lifecycle, in the order the agent drives it:
//
//  1. The agent starts the executable; Serve completes the go-plugin
//     handshake and the plugin's Register method adds its gRPC services.
//  2. Configure (Configurer) runs once, before any call is routed. Env holds
//     the plugin's config, its node and its Store.
//  3. Health (HealthChecker) runs on the manifest's interval for as long as
//     the instance lives, while calls are routed to the plugin's services.
//     For a singleton plugin, RoleChanged (RoleChanger) runs whenever the
//     agent changes the instance's role; Env.Role holds the current one.
//  4. Drain (Drainer) says no new calls will come: finish background work
//     before the deadline.
//  5. Stop (Stopper) asks the plugin to release what it holds; the process
//     exits after.
//
// Every interface but Plugin is optional and found by type assertion; a
// plugin that does not implement one gets the obvious default (healthy, no
// drain work, nothing to stop). Calls to the plugin's own services are
// refused with UNAVAILABLE until Configure has succeeded.
//
// A plugin is tested in-process with package sdktest.
package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	hclog "github.com/hashicorp/go-hclog"
	"golang.org/x/mod/semver"
	"google.golang.org/grpc"
)

// SDKVersion is the version of this SDK, reported to the agent by Describe.
const SDKVersion = "0.1.0"

// Info names a plugin. It must agree with the bundle's manifest.
type Info struct {
	// Name is the plugin's name: [a-z][a-z0-9-]{0,62}.
	Name string
	// Version is the plugin's strict semantic version, without a "v":
	// "1.2.0", "2.0.0-rc.1".
	Version string
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// Validate reports whether the name and version are well formed.
func (i Info) Validate() error {
	if !nameRE.MatchString(i.Name) {
		return fmt.Errorf("plugin name %q is invalid: use [a-z][a-z0-9-]{0,62}", i.Name)
	}
	core, _, _ := strings.Cut(i.Version, "+")
	core, _, _ = strings.Cut(core, "-")
	if !semver.IsValid("v"+i.Version) || strings.Count(core, ".") != 2 || strings.HasPrefix(i.Version, "v") {
		return fmt.Errorf("plugin %s: version %q is not a strict semantic version such as 1.2.0", i.Name, i.Version)
	}
	return nil
}

// Plugin is what every plugin implements: it registers its gRPC services,
// the ones the agent routes clients to, on s. Register is called once, before
// the server serves and before Configure.
type Plugin interface {
	Register(s grpc.ServiceRegistrar)
}

// Configurer is implemented by plugins that need their configuration, their
// node or the store. Configure is called once, after Register and before any
// call is routed to the plugin's services; an error fails the instance and
// its message is shown to the operator. ctx ends when Configure returns:
// background work needs a context of its own, ended in Drain or Stop.
type Configurer interface {
	Configure(ctx context.Context, env *Env) error
}

// HealthChecker is implemented by plugins that can tell whether they serve.
// Health is called after Configure on the manifest's interval, until Stop; a
// nil error means serving, an error's message is shown to the operator. It
// must return by ctx's deadline.
type HealthChecker interface {
	Health(ctx context.Context) error
}

// Drainer is implemented by plugins with background work to finish. Drain is
// called when the agent retires a configured instance: no new calls will
// come (calls in flight go on), and the plugin should finish its work before
// ctx's deadline. Stop follows.
type Drainer interface {
	Drain(ctx context.Context) error
}

// Stopper is implemented by plugins that hold resources. Stop is called last
// on a configured instance, after Drain, and only once; the process exits
// after it returns. Store is still usable during Stop and closed after it.
type Stopper interface {
	Stop(ctx context.Context) error
}

// Env is what a plugin is given at Configure.
type Env struct {
	// Config is the manifest's "config" object, as JSON; see DecodeConfig.
	Config json.RawMessage
	// Node is the node the instance runs on.
	Node Node
	// Store is the plugin's namespace of the replicated store.
	Store Store
	// InstanceID names this instance uniquely on its node.
	InstanceID string
	// Logger writes to the agent's log under plugin=<name> version=<v>.
	Logger hclog.Logger

	role *roleState // see Role
}

// Node describes the node an instance runs on.
type Node struct {
	// Name is the node's name in the cluster.
	Name string
	// APIAddress is the agent's gRPC API address on that node.
	APIAddress string
	// Tags are the node's operator tags.
	Tags map[string]string
}

// DecodeConfig decodes Config into v strictly: unknown fields and trailing
// data are errors. An empty or null config leaves v as it is, so set
// defaults in v before calling.
func (e *Env) DecodeConfig(v any) error {
	raw := bytes.TrimSpace(e.Config)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode config: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("decode config: unexpected data after the config object")
	}
	return nil
}
