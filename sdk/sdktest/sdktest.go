// Package sdktest runs a plughost plugin inside a test: the plugin's own
// services on an in-memory gRPC connection, the store in memory behind it
// (the agent's own store code, store/local, without raft), and the
// lifecycle driven as the agent drives it.
//
//	func TestEcho(t *testing.T) {
//		h := sdktest.Start(t, sdk.Info{Name: "echo", Version: "1.0.0"}, &server{})
//		resp, err := echov1.NewEchoServiceClient(h.Conn()).Echo(ctx, &echov1.EchoRequest{Message: "hi"})
//		...
//	}
//
// Start configures the plugin; t.Cleanup stops it and everything Start
// opened.
package sdktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/sdk"
	"github.com/plughost/plughost/sdk/wire"
	"github.com/plughost/plughost/store/local"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// ErrNotServing is returned by Harness.Health when the plugin reports that it
// does not serve; the error's text carries the plugin's message.
var ErrNotServing = errors.New("not serving")

// storeBrokerID is the broker id the harness names in Configure.
const storeBrokerID = 1

// cleanupTimeout bounds the Stop that cleanup sends.
const cleanupTimeout = 10 * time.Second

// Options adjusts StartWith. The zero value is what Start uses.
type Options struct {
	// Config is the plugin's config: a json.RawMessage, []byte or string is
	// passed as is, anything else is encoded as JSON. nil means none.
	Config any
	// Node is the node the plugin is told it runs on; the name defaults to
	// "test-node".
	Node sdk.Node
	// ShareStoreWith runs the plugin against the store of another harness of
	// the same test, as a plugin on another node would.
	ShareStoreWith *Harness
	// Unconfigured leaves Configure to the test (Harness.Configure), for
	// testing configuration errors.
	Unconfigured bool
	// Role and Epoch are the singleton role the plugin is configured with
	// (RoleActive needs an epoch); Harness.SetRole changes them.
	Role  sdk.Role
	Epoch int64
}

// Harness is a plugin running in-process.
type Harness struct {
	t    testing.TB
	info sdk.Info
	opts Options
	tp   *trackingPlugin

	st        *local.Memory // the in-memory store, shared with ShareStoreWith
	storeSrv  *grpc.Server
	storeLis  *bufconn.Listener
	pluginSrv *grpc.Server
	conn      *grpc.ClientConn
	life      pluginv1.PluginServiceClient
	logs      *testWriter

	mu      sync.Mutex
	stopped bool
}

// Start runs p in-process against a fresh in-memory store and configures it
// without config. It fails the test if the plugin does not start or
// configure. Call it from the test's goroutine.
func Start(t testing.TB, info sdk.Info, p sdk.Plugin) *Harness {
	t.Helper()
	return StartWith(t, info, p, Options{})
}

// StartWith is Start with options: a config, a node, a store shared with
// another harness, or no Configure.
func StartWith(t testing.TB, info sdk.Info, p sdk.Plugin, opts Options) *Harness {
	t.Helper()
	h := &Harness{t: t, info: info, opts: opts, tp: &trackingPlugin{Plugin: p}, logs: &testWriter{t: t}}
	t.Cleanup(h.cleanup)

	if opts.ShareStoreWith != nil {
		h.st = opts.ShareStoreWith.st
	} else {
		st, err := local.OpenMemory()
		if err != nil {
			t.Fatalf("sdktest: open the in-memory store: %v", err)
		}
		h.st = st
	}
	h.storeSrv = grpc.NewServer(wire.ServerOptions()...)
	storev1.RegisterStoreServiceServer(h.storeSrv, local.Bind(local.NewServer(h.st), local.Binding{Namespace: info.Name}))
	h.storeLis = bufconn.Listen(1 << 20)
	go func() { _ = h.storeSrv.Serve(h.storeLis) }()

	logger := hclog.New(&hclog.LoggerOptions{Name: info.Name, Level: hclog.Debug, Output: h.logs})
	srv, err := sdk.NewInProcessServer(info, h.tp, sdk.InProcessConfig{
		Logger: logger,
		DialStore: func(context.Context, uint32) (*grpc.ClientConn, error) {
			return dialBuf(h.storeLis)
		},
	})
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	h.pluginSrv = srv
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	if h.conn, err = dialBuf(lis); err != nil {
		t.Fatalf("sdktest: dial the plugin: %v", err)
	}
	h.life = pluginv1.NewPluginServiceClient(h.conn)

	if !opts.Unconfigured {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := h.Configure(ctx, opts.Config); err != nil {
			t.Fatalf("sdktest: %v", err)
		}
	}
	return h
}

// dialBuf connects to an in-memory listener with the agent's dial options.
func dialBuf(lis *bufconn.Listener) (*grpc.ClientConn, error) {
	opts := append(wire.DialOptions(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	return grpc.NewClient("passthrough:///bufconn", opts...)
}

// Conn is a connection to the plugin's services, as a client of the agent
// would have: make the plugin's generated client with it.
func (h *Harness) Conn() *grpc.ClientConn { return h.conn }

// Store is the Store the plugin was given at Configure (nil before), for a
// test to arrange or check the plugin's data.
func (h *Harness) Store() sdk.Store { return h.tp.store() }

// Configure configures the plugin as the agent does, with config (see
// Options.Config). Start calls it unless Options.Unconfigured is set.
func (h *Harness) Configure(ctx context.Context, config any) error {
	raw, err := encodeConfig(config)
	if err != nil {
		return err
	}
	node := h.opts.Node
	if node.Name == "" {
		node.Name = "test-node"
	}
	_, err = h.life.Configure(ctx, &pluginv1.ConfigureRequest{
		ConfigJson:    raw,
		Node:          &pluginv1.NodeInfo{Name: node.Name, ApiAddress: node.APIAddress, Tags: node.Tags},
		StoreBrokerId: storeBrokerID,
		Namespace:     h.info.Name,
		InstanceId:    h.info.Name + "-" + h.info.Version + "-test",
		Role:          roleToProto(h.opts.Role),
		Epoch:         h.opts.Epoch,
	})
	return err
}

// SetRole tells the plugin its singleton role changed, as the agent does;
// the plugin's RoleChanged runs before it returns.
func (h *Harness) SetRole(ctx context.Context, role sdk.Role, epoch int64) error {
	_, err := h.life.SetRole(ctx, &pluginv1.SetRoleRequest{Role: roleToProto(role), Epoch: epoch})
	return err
}

func roleToProto(r sdk.Role) pluginv1.Role {
	switch r {
	case sdk.RoleActive:
		return pluginv1.Role_ROLE_ACTIVE
	case sdk.RoleStandby:
		return pluginv1.Role_ROLE_STANDBY
	case sdk.RoleFenced:
		return pluginv1.Role_ROLE_FENCED
	}
	return pluginv1.Role_ROLE_UNSPECIFIED
}

func encodeConfig(config any) ([]byte, error) {
	switch c := config.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		return c, nil
	case []byte:
		return c, nil
	case string:
		return []byte(c), nil
	}
	raw, err := json.Marshal(config)
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return raw, nil
}

// Description is what a plugin says of itself.
type Description struct {
	Name       string
	Version    string
	Services   []string
	APIVersion int
	SDKVersion string
}

// Describe asks the plugin to describe itself, as the agent does after the
// handshake.
func (h *Harness) Describe(ctx context.Context) (Description, error) {
	d, err := h.life.Describe(ctx, &pluginv1.DescribeRequest{})
	if err != nil {
		return Description{}, err
	}
	return Description{Name: d.GetName(), Version: d.GetVersion(), Services: d.GetServices(),
		APIVersion: int(d.GetApiVersion()), SDKVersion: d.GetSdkVersion()}, nil
}

// Health runs the plugin's health check: nil when it serves, an error that
// is ErrNotServing and carries the plugin's message when it does not.
func (h *Harness) Health(ctx context.Context) error {
	resp, err := h.life.Health(ctx, &pluginv1.HealthRequest{})
	if err != nil {
		return err
	}
	if resp.GetStatus() != pluginv1.HealthStatus_HEALTH_STATUS_SERVING {
		return fmt.Errorf("%w: %s", ErrNotServing, resp.GetMessage())
	}
	return nil
}

// Drain drains the plugin with ctx's deadline as the drain timeout (30 s
// without one).
func (h *Harness) Drain(ctx context.Context) error {
	timeout := 30 * time.Second
	if deadline, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(deadline), time.Millisecond)
	}
	_, err := h.life.Drain(ctx, &pluginv1.DrainRequest{TimeoutMs: timeout.Milliseconds()})
	return err
}

// Stop stops the plugin as the agent does before it ends the process. The
// harness's cleanup calls it if the test did not.
func (h *Harness) Stop(ctx context.Context) error {
	h.mu.Lock()
	h.stopped = true
	h.mu.Unlock()
	_, err := h.life.Stop(ctx, &pluginv1.StopRequest{})
	return err
}

// cleanup stops the plugin and closes what Start opened, in reverse order.
func (h *Harness) cleanup() {
	h.mu.Lock()
	stopped := h.stopped
	h.mu.Unlock()
	if h.life != nil && !stopped {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		if err := h.Stop(ctx); err != nil {
			h.t.Errorf("sdktest: stop %s: %v", h.info.Name, err)
		}
		cancel()
	}
	if h.conn != nil {
		_ = h.conn.Close()
	}
	if h.pluginSrv != nil {
		h.pluginSrv.Stop()
	}
	if h.storeSrv != nil {
		h.storeSrv.Stop()
	}
	if h.st != nil && h.opts.ShareStoreWith == nil {
		if err := h.st.Close(); err != nil {
			h.t.Errorf("sdktest: close the in-memory store: %v", err)
		}
	}
	h.logs.close()
}

// trackingPlugin wraps the plugin under test to keep the Store it is given.
// It forwards every lifecycle call; where the plugin does not implement one,
// it answers as the SDK would without it.
type trackingPlugin struct {
	sdk.Plugin

	mu sync.Mutex
	st sdk.Store
}

var (
	_ sdk.Configurer    = (*trackingPlugin)(nil)
	_ sdk.HealthChecker = (*trackingPlugin)(nil)
	_ sdk.Drainer       = (*trackingPlugin)(nil)
	_ sdk.Stopper       = (*trackingPlugin)(nil)
	_ sdk.RoleChanger   = (*trackingPlugin)(nil)
)

func (p *trackingPlugin) store() sdk.Store {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st
}

func (p *trackingPlugin) Configure(ctx context.Context, env *sdk.Env) error {
	if c, ok := p.Plugin.(sdk.Configurer); ok {
		if err := c.Configure(ctx, env); err != nil {
			return err
		}
	}
	p.mu.Lock()
	p.st = env.Store
	p.mu.Unlock()
	return nil
}

func (p *trackingPlugin) Health(ctx context.Context) error {
	if c, ok := p.Plugin.(sdk.HealthChecker); ok {
		return c.Health(ctx)
	}
	return nil
}

func (p *trackingPlugin) Drain(ctx context.Context) error {
	if c, ok := p.Plugin.(sdk.Drainer); ok {
		return c.Drain(ctx)
	}
	return nil
}

func (p *trackingPlugin) RoleChanged(ctx context.Context, role sdk.Role, epoch int64) error {
	if c, ok := p.Plugin.(sdk.RoleChanger); ok {
		return c.RoleChanged(ctx, role, epoch)
	}
	return nil
}

func (p *trackingPlugin) Stop(ctx context.Context) error {
	if c, ok := p.Plugin.(sdk.Stopper); ok {
		return c.Stop(ctx)
	}
	return nil
}

// testWriter sends the plugin's log to the test's log until the test ends;
// later lines, from goroutines the plugin left behind, are dropped.
type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

var _ io.Writer = (*testWriter)(nil)

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}
