package sdk

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	"github.com/plughost/plughost/sdk/wire"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// StoreDialer opens the connection to the store that the agent serves on a
// go-plugin broker id. The SDK keeps the connection for the life of the
// instance and closes it after Stop.
type StoreDialer func(ctx context.Context, brokerID uint32) (*grpc.ClientConn, error)

// InProcessConfig configures NewInProcessServer.
type InProcessConfig struct {
	// DialStore opens the store connection that Configure names. Required.
	DialStore StoreDialer
	// Logger becomes Env.Logger; nil discards the plugin's logs.
	Logger hclog.Logger
	// ServerOptions are added to the gRPC server's own options.
	ServerOptions []grpc.ServerOption
}

// NewInProcessServer returns a gRPC server that serves p's services and the
// plughost lifecycle service exactly as Serve does inside a plugin process,
// but without go-plugin: the caller serves it on a listener of its choice,
// calls the lifecycle service as the agent would, and stops it. It is how
// sdktest runs a plugin inside a test; a plugin's main calls Serve.
func NewInProcessServer(info Info, p Plugin, cfg InProcessConfig) (*grpc.Server, error) {
	if err := info.Validate(); err != nil {
		return nil, err
	}
	if p == nil {
		return nil, fmt.Errorf("plugin %s: nil Plugin", info.Name)
	}
	if cfg.DialStore == nil {
		return nil, fmt.Errorf("plugin %s: InProcessConfig.DialStore is required", info.Name)
	}
	rt := newRuntime(info, p, cfg.Logger)
	rt.dialStore = cfg.DialStore
	opts := slices.Concat(wire.ServerOptions(), rt.serverOptions(), cfg.ServerOptions)
	s := grpc.NewServer(opts...)
	rt.register(s)
	return s, nil
}

// runtime implements the lifecycle service around the author's Plugin.
type runtime struct {
	pluginv1.UnimplementedPluginServiceServer

	info      Info
	plugin    Plugin
	logger    hclog.Logger
	dialStore StoreDialer // set before the server serves

	server *grpc.Server
	data   *dataSocket     // nil without one
	own    map[string]bool // services the plugin registered; read-only once serving

	configured atomic.Bool // Configure succeeded: calls may reach the plugin
	role       roleState   // the instance's standing in its singleton

	mu      sync.Mutex // serialises Configure and Stop
	conn    *grpc.ClientConn
	stopped bool
}

func newRuntime(info Info, p Plugin, logger hclog.Logger) *runtime {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &runtime{info: info, plugin: p, logger: logger}
}

// register adds the lifecycle service and the plugin's own services to s.
func (r *runtime) register(s *grpc.Server) {
	r.server = s
	pluginv1.RegisterPluginServiceServer(s, r)
	rec := &recordingRegistrar{next: s, names: map[string]bool{}}
	r.plugin.Register(rec)
	r.own = rec.names
}

// recordingRegistrar remembers which services the plugin registers, so that
// calls to them can be held back until Configure.
type recordingRegistrar struct {
	next  grpc.ServiceRegistrar
	names map[string]bool
}

func (r *recordingRegistrar) RegisterService(desc *grpc.ServiceDesc, impl any) {
	r.names[desc.ServiceName] = true
	r.next.RegisterService(desc, impl)
}

// serverOptions refuse calls to the plugin's services until Configure has
// succeeded: the agent never routes them earlier, and a plugin's handlers
// may rely on what Configure set up.
func (r *runtime) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			method, _ := grpc.Method(ctx) // the routed path, whatever the handler calls itself
			if err := r.admit(method); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			method, _ := grpc.MethodFromServerStream(ss)
			if err := r.admit(method); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}

func (r *runtime) admit(fullMethod string) error {
	service, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if r.own[service] && !r.configured.Load() {
		return status.Errorf(codes.Unavailable, "plugin %s %s is not configured yet", r.info.Name, r.info.Version)
	}
	return nil
}

// Describe implements pluginv1.PluginServiceServer.
func (r *runtime) Describe(context.Context, *pluginv1.DescribeRequest) (*pluginv1.DescribeResponse, error) {
	var services []string
	for name := range r.server.GetServiceInfo() {
		if !isInternalService(name) {
			services = append(services, name)
		}
	}
	slices.Sort(services)
	return &pluginv1.DescribeResponse{
		Name:       r.info.Name,
		Version:    r.info.Version,
		Services:   services,
		ApiVersion: wire.APIVersion,
		SdkVersion: SDKVersion,
		DataSocket: r.data.path(),
	}, nil
}

// isInternalService reports whether a service is go-plugin's, gRPC's own or
// the lifecycle service rather than the plugin's.
func isInternalService(name string) bool {
	switch name {
	case "plugin.GRPCBroker", "plugin.GRPCController", "plugin.GRPCStdio",
		"grpc.health.v1.Health", pluginv1.PluginService_ServiceDesc.ServiceName:
		return true
	}
	return strings.HasPrefix(name, "grpc.reflection.")
}

// Configure implements pluginv1.PluginServiceServer.
func (r *runtime) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) (*pluginv1.ConfigureResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.stopped:
		return nil, status.Errorf(codes.FailedPrecondition, "plugin %s is stopped", r.info.Name)
	case r.configured.Load():
		return nil, status.Errorf(codes.FailedPrecondition, "plugin %s is already configured", r.info.Name)
	case req.GetStoreBrokerId() == 0:
		return nil, status.Errorf(codes.InvalidArgument, "plugin %s: configure without a store broker id", r.info.Name)
	}
	role, err := checkRole(req.GetRole(), req.GetEpoch())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "plugin %s: configure: %v", r.info.Name, err)
	}
	conn, err := r.dialStore(ctx, req.GetStoreBrokerId())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "plugin %s: dial the store on broker id %d: %v", r.info.Name, req.GetStoreBrokerId(), err)
	}
	r.role.mu.Lock()
	r.role.set(role, req.GetEpoch())
	r.role.mu.Unlock()
	node := req.GetNode()
	env := &Env{
		Config:     req.GetConfigJson(),
		Node:       Node{Name: node.GetName(), APIAddress: node.GetApiAddress(), Tags: node.GetTags()},
		Store:      newStoreClient(conn, &r.role),
		InstanceID: req.GetInstanceId(),
		Logger:     r.logger,
		role:       &r.role,
	}
	if c, ok := r.plugin.(Configurer); ok {
		if err := c.Configure(ctx, env); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("configure %s %s: %w", r.info.Name, r.info.Version, err)
		}
	}
	r.conn = conn
	r.configured.Store(true)
	r.logger.Debug("configured", "instance", req.GetInstanceId(), "node", node.GetName())
	return &pluginv1.ConfigureResponse{}, nil
}

// Health implements pluginv1.PluginServiceServer.
func (r *runtime) Health(ctx context.Context, _ *pluginv1.HealthRequest) (*pluginv1.HealthResponse, error) {
	if !r.configured.Load() {
		return notServing("not configured yet"), nil
	}
	if h, ok := r.plugin.(HealthChecker); ok {
		if err := h.Health(ctx); err != nil {
			return notServing(err.Error()), nil
		}
	}
	return &pluginv1.HealthResponse{Status: pluginv1.HealthStatus_HEALTH_STATUS_SERVING}, nil
}

func notServing(msg string) *pluginv1.HealthResponse {
	return &pluginv1.HealthResponse{Status: pluginv1.HealthStatus_HEALTH_STATUS_NOT_SERVING, Message: msg}
}

// Drain implements pluginv1.PluginServiceServer.
func (r *runtime) Drain(ctx context.Context, req *pluginv1.DrainRequest) (*pluginv1.DrainResponse, error) {
	if req.GetTimeoutMs() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "drain: negative timeout %d ms", req.GetTimeoutMs())
	}
	d, ok := r.plugin.(Drainer)
	if !ok || !r.configured.Load() {
		return &pluginv1.DrainResponse{}, nil
	}
	if ms := req.GetTimeoutMs(); ms > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
		defer cancel()
	}
	if err := d.Drain(ctx); err != nil {
		return nil, fmt.Errorf("drain %s %s: %w", r.info.Name, r.info.Version, err)
	}
	return &pluginv1.DrainResponse{}, nil
}

// Stop implements pluginv1.PluginServiceServer. A second Stop does nothing.
func (r *runtime) Stop(ctx context.Context, _ *pluginv1.StopRequest) (*pluginv1.StopResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return &pluginv1.StopResponse{}, nil
	}
	r.stopped = true
	var err error
	if s, ok := r.plugin.(Stopper); ok && r.configured.Load() {
		err = s.Stop(ctx)
	}
	err = errors.Join(err, r.closeStoreLocked())
	if err != nil {
		return nil, fmt.Errorf("stop %s %s: %w", r.info.Name, r.info.Version, err)
	}
	return &pluginv1.StopResponse{}, nil
}

// close releases the store connection if Stop did not.
func (r *runtime) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closeStoreLocked()
}

func (r *runtime) closeStoreLocked() error {
	if r.conn == nil {
		return nil
	}
	err := r.conn.Close()
	r.conn = nil
	return err
}
