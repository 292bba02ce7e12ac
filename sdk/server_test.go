package sdk

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

// ownService is the plugin's "own" service in these tests: gRPC health under
// another name, so that it is not filtered out as go-plugin's.
var ownService = func() grpc.ServiceDesc {
	d := healthpb.Health_ServiceDesc
	d.ServiceName = "test.v1.Health"
	return d
}()

// checkOwn calls the plugin's own service.
func checkOwn(ctx context.Context, conn *grpc.ClientConn) error {
	return conn.Invoke(ctx, "/test.v1.Health/Check", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
}

// lifecyclePlugin serves ownService and records the lifecycle calls it gets.
type lifecyclePlugin struct {
	configureErr error
	healthErr    error
	env          *Env
	drainLeft    time.Duration
	stops        atomic.Int32
}

func (p *lifecyclePlugin) Register(s grpc.ServiceRegistrar) {
	s.RegisterService(&ownService, health.NewServer())
}

func (p *lifecyclePlugin) Configure(_ context.Context, env *Env) error {
	p.env = env
	return p.configureErr
}

func (p *lifecyclePlugin) Health(context.Context) error { return p.healthErr }

func (p *lifecyclePlugin) Drain(ctx context.Context) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		return errors.New("drain without a deadline")
	}
	p.drainLeft = time.Until(deadline)
	return nil
}

func (p *lifecyclePlugin) Stop(context.Context) error {
	p.stops.Add(1)
	return nil
}

var (
	_ Configurer    = (*lifecyclePlugin)(nil)
	_ HealthChecker = (*lifecyclePlugin)(nil)
	_ Drainer       = (*lifecyclePlugin)(nil)
	_ Stopper       = (*lifecyclePlugin)(nil)
)

// serveBuf serves s on an in-memory listener and returns a connection to it.
func serveBuf(t *testing.T, s *grpc.Server) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// startLifecycle runs p in-process. Its store connection leads to a server
// with no services: these tests do not touch the store.
func startLifecycle(t *testing.T, p Plugin) (pluginv1.PluginServiceClient, *grpc.ClientConn, *atomic.Int32) {
	t.Helper()
	empty := serveBuf(t, grpc.NewServer())
	dials := new(atomic.Int32)
	s, err := NewInProcessServer(Info{Name: "life", Version: "1.0.0"}, p, InProcessConfig{
		DialStore: func(_ context.Context, id uint32) (*grpc.ClientConn, error) {
			if id != 7 {
				return nil, errors.New("wrong broker id")
			}
			dials.Add(1)
			return grpc.NewClient(empty.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	conn := serveBuf(t, s)
	return pluginv1.NewPluginServiceClient(conn), conn, dials
}

func TestLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := &lifecyclePlugin{}
	life, conn, dials := startLifecycle(t, p)

	d, err := life.Describe(ctx, &pluginv1.DescribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if d.GetName() != "life" || d.GetVersion() != "1.0.0" || d.GetApiVersion() != 1 || d.GetSdkVersion() != SDKVersion {
		t.Fatalf("describe: %v", d)
	}
	if want := []string{"test.v1.Health"}; !slices.Equal(d.GetServices(), want) {
		t.Fatalf("describe lists services %v, want %v", d.GetServices(), want)
	}

	// Before Configure: the plugin's services are held back, health says why.
	err = checkOwn(ctx, conn)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not configured") {
		t.Fatalf("call before configure: %v, want Unavailable not configured", err)
	}
	h, err := life.Health(ctx, &pluginv1.HealthRequest{})
	if err != nil || h.GetStatus() != pluginv1.HealthStatus_HEALTH_STATUS_NOT_SERVING {
		t.Fatalf("health before configure: %v %v", h, err)
	}

	_, err = life.Configure(ctx, &pluginv1.ConfigureRequest{
		ConfigJson:    []byte(`{"a":1}`),
		Node:          &pluginv1.NodeInfo{Name: "n1", ApiAddress: "127.0.0.1:7400", Tags: map[string]string{"rack": "r1"}},
		StoreBrokerId: 7,
		InstanceId:    "life-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.env == nil || string(p.env.Config) != `{"a":1}` || p.env.Node.Name != "n1" || p.env.Node.APIAddress != "127.0.0.1:7400" ||
		p.env.Node.Tags["rack"] != "r1" || p.env.InstanceID != "life-1" || p.env.Store == nil || p.env.Logger == nil {
		t.Fatalf("env: %+v", p.env)
	}
	if err := checkOwn(ctx, conn); err != nil {
		t.Fatalf("call after configure: %v", err)
	}
	_, err = life.Configure(ctx, &pluginv1.ConfigureRequest{StoreBrokerId: 7})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second configure: %v, want FailedPrecondition", err)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("store dialled %d times, want once", n)
	}

	h, err = life.Health(ctx, &pluginv1.HealthRequest{})
	if err != nil || h.GetStatus() != pluginv1.HealthStatus_HEALTH_STATUS_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
	p.healthErr = errors.New("disk full: free /var/lib/x")
	h, err = life.Health(ctx, &pluginv1.HealthRequest{})
	if err != nil || h.GetStatus() != pluginv1.HealthStatus_HEALTH_STATUS_NOT_SERVING || h.GetMessage() != "disk full: free /var/lib/x" {
		t.Fatalf("unhealthy: %v %v", h, err)
	}

	if _, err := life.Drain(ctx, &pluginv1.DrainRequest{TimeoutMs: 3000}); err != nil {
		t.Fatal(err)
	}
	if p.drainLeft <= 0 || p.drainLeft > 3*time.Second {
		t.Fatalf("drain deadline %v away, want within 3s", p.drainLeft)
	}

	for range 2 {
		if _, err := life.Stop(ctx, &pluginv1.StopRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.stops.Load(); n != 1 {
		t.Fatalf("Stopper called %d times, want once", n)
	}
	if _, err := p.env.Store.Get(ctx, "k"); err == nil {
		t.Fatal("store usable after Stop")
	}
}

func TestConfigureError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := &lifecyclePlugin{configureErr: errors.New(`config: "mode" must be one of fast, safe`)}
	life, conn, _ := startLifecycle(t, p)

	_, err := life.Configure(ctx, &pluginv1.ConfigureRequest{StoreBrokerId: 7})
	if err == nil || !strings.Contains(err.Error(), `configure life 1.0.0: config: "mode" must be one of fast, safe`) {
		t.Fatalf("configure error %v does not carry the plugin's message", err)
	}
	if err := checkOwn(ctx, conn); status.Code(err) != codes.Unavailable {
		t.Fatalf("call after failed configure: %v, want Unavailable", err)
	}
	_, err = life.Configure(ctx, &pluginv1.ConfigureRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("configure without broker id: %v, want InvalidArgument", err)
	}
	p.configureErr = nil
	if _, err := life.Configure(ctx, &pluginv1.ConfigureRequest{StoreBrokerId: 7}); err != nil {
		t.Fatalf("configure after a failed one: %v", err)
	}
}

func TestIsInternalService(t *testing.T) {
	for _, name := range []string{
		"plugin.GRPCBroker", "plugin.GRPCController", "plugin.GRPCStdio", "grpc.health.v1.Health",
		"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
		"plughost.plugin.v1.PluginService",
	} {
		if !isInternalService(name) {
			t.Errorf("%s is not internal", name)
		}
	}
	for _, name := range []string{"echo.v1.EchoService", "counter.v1.CounterService", "plugin.Other"} {
		if isInternalService(name) {
			t.Errorf("%s is internal", name)
		}
	}
}

func TestNewInProcessServerValidates(t *testing.T) {
	dial := func(context.Context, uint32) (*grpc.ClientConn, error) { return nil, errors.New("unused") }
	if _, err := NewInProcessServer(Info{Name: "Bad", Version: "1.0.0"}, &lifecyclePlugin{}, InProcessConfig{DialStore: dial}); err == nil {
		t.Error("bad name accepted")
	}
	if _, err := NewInProcessServer(Info{Name: "ok", Version: "1.0.0"}, nil, InProcessConfig{DialStore: dial}); err == nil {
		t.Error("nil plugin accepted")
	}
	if _, err := NewInProcessServer(Info{Name: "ok", Version: "1.0.0"}, &lifecyclePlugin{}, InProcessConfig{}); err == nil {
		t.Error("missing DialStore accepted")
	}
}
