//go:build linux

package sdk

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/sdk/wire"
	"github.com/plughost/plughost/store"
	"google.golang.org/grpc"
)

// hostSide is what the host's OnConnect returns in this test.
type hostSide struct {
	broker *plugin.GRPCBroker
	conn   *grpc.ClientConn
}

// TestServeUnderGoPlugin runs the test binary as a real plugin process under
// a go-plugin client set up as the agent sets it up (AutoMTLS, broker
// multiplexing, gRPC only), serves the store on a broker id, and drives the
// lifecycle through it.
func TestServeUnderGoPlugin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })

	cmd := pluginCommand("") // no forked child
	cmd.Stderr = nil         // go-plugin reads it
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: wire.Handshake,
		VersionedPlugins: wire.PluginSets(&wire.GRPCPlugin{
			OnConnect: func(_ context.Context, b *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
				return &hostSide{broker: b, conn: c}, nil
			},
		}),
		Cmd:                 cmd,
		AllowedProtocols:    []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:            true,
		GRPCBrokerMultiplex: true,
		GRPCDialOptions:     wire.DialOptions(),
		StartTimeout:        30 * time.Second,
		Logger:              hclog.New(&hclog.LoggerOptions{Name: "host", Output: os.Stderr, Level: hclog.Info}),
	})
	t.Cleanup(client.Kill)
	rpc, err := client.Client()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rpc.Dispense(wire.PluginKey)
	if err != nil {
		t.Fatal(err)
	}
	host := raw.(*hostSide)

	id := host.broker.NextId()
	go host.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(slices.Concat(opts, wire.ServerOptions())...)
		storev1.RegisterStoreServiceServer(s, store.Bind(store.NewServer(st), store.Binding{Namespace: "watchdog-test"}))
		return s
	})

	life := pluginv1.NewPluginServiceClient(host.conn)
	d, err := life.Describe(ctx, &pluginv1.DescribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if d.GetName() != "watchdog-test" || d.GetVersion() != "1.0.0" || len(d.GetServices()) != 0 || d.GetApiVersion() != wire.APIVersion {
		t.Fatalf("describe: %v (go-plugin's own services must not be listed)", d)
	}
	if _, err := life.Configure(ctx, &pluginv1.ConfigureRequest{StoreBrokerId: id, InstanceId: "probe-1", Namespace: "watchdog-test"}); err != nil {
		t.Fatal(err)
	}
	h, err := life.Health(ctx, &pluginv1.HealthRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if h.GetMessage() != `probe reads "probe-1"` {
		t.Fatalf("health %v: the plugin did not reach the store through the broker", h)
	}
	if _, err := life.Stop(ctx, &pluginv1.StopRequest{}); err != nil {
		t.Fatal(err)
	}
	// Under -race the plugin process may exit with status 66 here: go-plugin
	// v1.8.0's Serve swaps os.Stderr while its broker muxer reads it
	// (yamux.DefaultConfig), a race inside go-plugin, not in the SDK.
	client.Kill()
	if !client.Exited() {
		t.Fatal("plugin still running after Kill")
	}
}
