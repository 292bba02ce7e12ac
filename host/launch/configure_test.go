package launch_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/plughost/plughost/host/launch"
	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	"github.com/plughost/plughost/sdk"
	"github.com/plughost/plughost/sdk/wire"
)

// refusing is a plugin whose Configure fails, naming itself as plugin
// authors often do.
type refusing struct{}

func (refusing) Register(grpc.ServiceRegistrar) {}

func (refusing) Configure(context.Context, *sdk.Env) error {
	return errors.New(`greeter 1.2.0: config: "port" must be set`)
}

// TestConfigureErrorIsSaidOnce configures a plugin served by the SDK's own
// runtime whose Configure fails: the agent's error names the plugin once
// and carries the plugin's reason, not the gRPC status text around it.
func TestConfigureErrorIsSaidOnce(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	dial := func(context.Context, string) (net.Conn, error) { return lis.Dial() }
	srv, err := sdk.NewInProcessServer(sdk.Info{Name: "greeter", Version: "1.2.0"}, refusing{}, sdk.InProcessConfig{
		DialStore: func(context.Context, uint32) (*grpc.ClientConn, error) {
			return grpc.NewClient("passthrough:///store", grpc.WithTransportCredentials(insecure.NewCredentials()))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient("passthrough:///plugin", append(wire.DialOptions(),
		grpc.WithContextDialer(dial), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	inst := &launch.Instance{Spec: launch.Spec{Plugin: "greeter", Version: "1.2.0"}, Lifecycle: pluginv1.NewPluginServiceClient(conn)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = inst.Configure(ctx, &pluginv1.ConfigureRequest{StoreBrokerId: 7, ConfigJson: []byte("{}")})
	want := `plugin greeter 1.2.0: configure: config: "port" must be set`
	if err == nil || err.Error() != want {
		t.Fatalf("configure error:\n got %v\nwant %s", err, want)
	}
}
