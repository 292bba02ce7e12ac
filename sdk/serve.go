package sdk

import (
	"context"
	"fmt"
	"os"
	"slices"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"github.com/plughost/plughost/sdk/wire"
	"google.golang.org/grpc"
)

// Serve runs the plugin under the plughost agent and returns when the agent
// shuts it down; it is the whole of a plugin's main.
//
// Serve completes the go-plugin handshake, registers the lifecycle service
// and p's services on the plugin's gRPC server, and logs as JSON to stderr,
// which the agent re-logs under plugin=<name> version=<v>. The server also
// listens on a private unix socket, with the same mutual TLS, which the
// agent's router relays calls over (see datasocket.go). A watchdog makes
// sure the plugin never outlives the agent: on SIGTERM, or when the parent
// process changes, it kills the plugin's process group (the plugin and
// everything it forked).
//
// Serve exits the process rather than return an error, as go-plugin's own
// Serve, which it wraps, does: with status 1 when it cannot serve (an
// invalid Info, or an executable run by hand rather than by the agent), and
// through the watchdog when the agent is gone.
func Serve(info Info, p Plugin) {
	if err := info.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "plughost plugin: %v\n", err)
		os.Exit(1)
	}
	if os.Getenv(wire.Handshake.MagicCookieKey) != wire.Handshake.MagicCookieValue {
		// go-plugin prints its own explanation after this line and exits 1.
		fmt.Fprintf(os.Stderr, "%s %s is a plughost plugin: add it to an agent with 'plughost bundle build' and 'plughost bundle add'\n", info.Name, info.Version)
	}

	logger := hclog.New(&hclog.LoggerOptions{
		Level:      hclog.Debug,
		Output:     os.Stderr, // the real stderr: go-plugin swaps os.Stderr for a pipe during Serve
		JSONFormat: true,
	})

	rt := newRuntime(info, p, logger)
	// go-plugin's own socket directory, if the agent named one.
	data, err := listenData(os.Getenv("PLUGIN_UNIX_SOCKET_DIR"))
	if err != nil {
		logger.Warn("no data socket: the agent routes calls over the go-plugin connection", "error", err)
	}
	defer data.close()
	rt.data = data

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The watchdog's kill skips the deferred close: it removes the socket
	// itself first.
	stopWatchdog := startWatchdog(ctx, logger, data.close)
	defer stopWatchdog()

	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: wire.Handshake,
		VersionedPlugins: wire.PluginSets(&wire.GRPCPlugin{
			OnServe: func(broker *plugin.GRPCBroker, s *grpc.Server) error {
				rt.dialStore = func(_ context.Context, id uint32) (*grpc.ClientConn, error) {
					return broker.DialWithOptions(id, wire.DialOptions()...)
				}
				rt.register(s)
				if data != nil {
					// Services are registered: the socket may serve.
					go func() { _ = s.Serve(data.ln) }()
				}
				return nil
			},
		}),
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(slices.Concat(opts, wire.ServerOptions(), rt.serverOptions())...)
		},
		Logger: logger,
	})
	if err := rt.close(); err != nil {
		logger.Debug("close store connection", "error", err)
	}
}
