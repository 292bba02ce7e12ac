package router

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	rv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	rv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	"github.com/plughost/plughost/sdk/wire"
)

const echoService = "echo.v1.EchoService"

// Messages the test echo server treats specially.
const (
	msgBlock = "block" // wait until the call's context ends
	msgGate  = "gate"  // EchoStream: send one response, wait for the gate, send the rest
	msgFail  = "fail"  // fail with a status that has details
)

// echoCall is what the echo server saw of one call.
type echoCall struct {
	md       metadata.MD
	deadline time.Time
	hasDL    bool
}

// echoServer is the test plugin: echov1.EchoService plus hooks for tests.
type echoServer struct {
	echov1.UnimplementedEchoServiceServer
	version string

	last      atomic.Pointer[echoCall]
	cancelled atomic.Int64  // calls that saw their context end while blocked
	gate      chan struct{} // closed by the test to release msgGate streams
}

func (s *echoServer) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	dl, ok := ctx.Deadline()
	s.last.Store(&echoCall{md: md, deadline: dl, hasDL: ok})
}

func (s *echoServer) blockUntilDone(ctx context.Context) error {
	<-ctx.Done()
	s.cancelled.Add(1)
	return status.FromContextError(ctx.Err()).Err()
}

func (s *echoServer) Echo(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	s.record(ctx)
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-backend-version", s.version))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t-"+s.version))
	switch req.GetMessage() {
	case msgBlock:
		return nil, s.blockUntilDone(ctx)
	case msgFail:
		st, err := status.New(codes.FailedPrecondition, "echo failed on purpose").
			WithDetails(wrapperspb.String("the detail"), wrapperspb.Int64(42))
		if err != nil {
			return nil, err
		}
		return nil, st.Err()
	}
	return &echov1.EchoResponse{Message: req.GetMessage(), Version: s.version}, nil
}

func (s *echoServer) EchoStream(req *echov1.EchoStreamRequest, stream grpc.ServerStreamingServer[echov1.EchoStreamResponse]) error {
	ctx := stream.Context()
	s.record(ctx)
	if err := stream.SendHeader(metadata.Pairs("x-backend-version", s.version)); err != nil {
		return err
	}
	stream.SetTrailer(metadata.Pairs("x-trailer", "t-"+s.version))
	for i := int32(0); i < req.GetCount(); i++ {
		if i > 0 && req.GetIntervalMs() > 0 {
			t := time.NewTimer(time.Duration(req.GetIntervalMs()) * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return status.FromContextError(ctx.Err()).Err()
			}
		}
		if err := stream.Send(&echov1.EchoStreamResponse{Message: req.GetMessage(), Sequence: i, Version: s.version}); err != nil {
			return err
		}
		if i == 0 {
			switch req.GetMessage() {
			case msgBlock:
				return s.blockUntilDone(ctx)
			case msgGate:
				select {
				case <-s.gate:
				case <-ctx.Done():
					return s.blockUntilDone(ctx)
				}
			}
		}
	}
	return nil
}

// chatServiceDesc is a hand-written service with client- and bidi-streaming
// methods (echo has neither) on wrapperspb.StringValue. Its descriptors are
// unknown to the router, which must proxy it as bidi streams.
var chatServiceDesc = grpc.ServiceDesc{
	ServiceName: "test.v1.ChatService",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{
		{StreamName: "Chat", ClientStreams: true, ServerStreams: true, Handler: chatHandler},
		{StreamName: "Sum", ClientStreams: true, Handler: sumHandler},
	},
}

// chatHandler answers each message with "echo:" + it, and "done" after the
// client half-closes.
func chatHandler(_ any, ss grpc.ServerStream) error {
	ss.SetTrailer(metadata.Pairs("x-chat", "bye"))
	for {
		in := new(wrapperspb.StringValue)
		err := ss.RecvMsg(in)
		if err == io.EOF {
			return ss.SendMsg(wrapperspb.String("done"))
		}
		if err != nil {
			return err
		}
		if err := ss.SendMsg(wrapperspb.String("echo:" + in.GetValue())); err != nil {
			return err
		}
	}
}

// sumHandler concatenates what the client sends and answers once.
func sumHandler(_ any, ss grpc.ServerStream) error {
	var all string
	for {
		in := new(wrapperspb.StringValue)
		err := ss.RecvMsg(in)
		if err == io.EOF {
			return ss.SendMsg(wrapperspb.String(all))
		}
		if err != nil {
			return err
		}
		all += in.GetValue()
	}
}

// agentInfoDesc stands for the agent's own API (operator, store): a
// connection whose first call is to it is handed to the agent's gRPC server.
var agentInfoDesc = grpc.ServiceDesc{
	ServiceName: "plughost.test.v1.AgentInfo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Get",
		Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return wrapperspb.String("agent:" + in.GetValue()), nil
		},
	}},
}

// agentInfo calls the agent's own test service on conn.
func agentInfo(ctx context.Context, conn *grpc.ClientConn, s string) (string, error) {
	out := new(wrapperspb.StringValue)
	err := conn.Invoke(ctx, "/plughost.test.v1.AgentInfo/Get", wrapperspb.String(s), out)
	return out.GetValue(), err
}

// dynFile is a file no Go package registers: only the backend's reflection
// knows it, so the router's reflection must take it from Backend.Files.
var dynFile = func() protoreflect.FileDescriptor {
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("dyn/v1/dyn.proto"),
		Package:    proto.String("dyn.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/wrappers.proto"},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("PingRequest"),
			Field: []*descriptorpb.FieldDescriptorProto{{
				Name: proto.String("text"), Number: proto.Int32(1), JsonName: proto.String("text"),
				Type:  descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
				Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
			}},
		}},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("DynService"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name:       proto.String("Ping"),
				InputType:  proto.String(".dyn.v1.PingRequest"),
				OutputType: proto.String(".google.protobuf.StringValue"),
			}},
		}},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		panic(err)
	}
	return fd
}()

const dynService = "dyn.v1.DynService"

var dynFiles = func() *protoregistry.Files {
	files := new(protoregistry.Files)
	if err := files.RegisterFile(dynFile); err != nil {
		panic(err)
	}
	return files
}()

var dynServiceDesc = grpc.ServiceDesc{
	ServiceName: dynService,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Ping",
		Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := dynamicpb.NewMessage(dynFile.Messages().ByName("PingRequest"))
			if err := dec(in); err != nil {
				return nil, err
			}
			text := in.Get(in.Descriptor().Fields().ByName("text")).String()
			return wrapperspb.String("pong:" + text), nil
		},
	}},
}

// dynResolver resolves the agent's linked-in files plus dynFile, for the
// backend's reflection.
type dynResolver struct{}

func (dynResolver) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if path == dynFile.Path() {
		return dynFile, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (dynResolver) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := dynFiles.FindDescriptorByName(name); err == nil {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}

// reflectionMode says which reflection versions a test backend serves.
type reflectionMode int

const (
	reflectBoth reflectionMode = iota
	reflectV1AlphaOnly
	reflectNone
)

// testBackend is a plugin instance: a gRPC server on 127.0.0.1:0 and the
// host's connection to it.
type testBackend struct {
	echo *echoServer
	srv  *grpc.Server
	addr string
	conn *grpc.ClientConn
}

func startBackend(t testing.TB, version string, mode reflectionMode) *testBackend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tb := &testBackend{
		echo: &echoServer{version: version, gate: make(chan struct{})},
		srv:  grpc.NewServer(wire.ServerOptions()...),
		addr: lis.Addr().String(),
	}
	echov1.RegisterEchoServiceServer(tb.srv, tb.echo)
	tb.srv.RegisterService(&chatServiceDesc, nil)
	tb.srv.RegisterService(&dynServiceDesc, nil)
	opts := reflection.ServerOptions{Services: tb.srv, DescriptorResolver: dynResolver{}}
	switch mode {
	case reflectBoth:
		rv1.RegisterServerReflectionServer(tb.srv, reflection.NewServerV1(opts))
		rv1alpha.RegisterServerReflectionServer(tb.srv, reflection.NewServer(opts))
	case reflectV1AlphaOnly:
		rv1alpha.RegisterServerReflectionServer(tb.srv, reflection.NewServer(opts))
	}
	go func() { _ = tb.srv.Serve(lis) }()
	t.Cleanup(tb.srv.Stop)

	tb.conn, err = grpc.NewClient(tb.addr, append(BackendDialOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.conn.Close() })
	return tb
}

// backend loads tb's descriptors for services and returns a Backend for
// plugin "echo".
func (tb *testBackend) backend(t testing.TB, services ...string) *Backend {
	t.Helper()
	b := &Backend{Plugin: "echo", Version: tb.echo.version, InstanceID: "i-" + tb.echo.version, Conn: tb.conn,
		Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", tb.addr)
		}}
	if len(services) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		files, err := LoadDescriptors(ctx, tb.conn, services)
		if err != nil {
			t.Fatal(err)
		}
		b.Files = files
	}
	return b
}

// testRouter is the agent's API server: grpc health registered as the
// agent's own service, the router behind it, and a client connection.
type testRouter struct {
	r    *Router
	srv  *grpc.Server
	addr string
	conn *grpc.ClientConn
}

func startRouter(t testing.TB, cfg Config) *testRouter {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &testRouter{r: New(cfg), addr: lis.Addr().String()}
	tr.srv = grpc.NewServer(tr.r.ServerOptions()...)
	healthpb.RegisterHealthServer(tr.srv, health.NewServer())
	tr.srv.RegisterService(&agentInfoDesc, nil)
	tr.r.RegisterReflection(tr.srv)
	go func() { _ = tr.r.Serve(lis, tr.srv) }()
	// Tests look at the relay's books (relayedConns) from the start.
	testenv.Eventually(t, 10*time.Second, "the router to serve", func() bool { return tr.r.relay.Load() != nil })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		tr.r.Stop(ctx)
		tr.srv.Stop()
	})
	tr.conn = dialClient(t, tr.addr)
	return tr
}

// dialClient is an ordinary client of the agent or of a plugin.
func dialClient(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent("test-client/1"),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// env is a router with one echo backend serving plugin "echo".
type env struct {
	*testRouter
	be   *testBackend
	b    *Backend
	echo echov1.EchoServiceClient
}

// newEnv starts a router and an echo backend v1 with descriptors loaded,
// declares plugin "echo" (echo, chat and dyn services) and routes to it.
func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvConfig(t, Config{})
}

// newEnvConfig is newEnv with the router built from cfg.
func newEnvConfig(t testing.TB, cfg Config) *env {
	t.Helper()
	e := &env{testRouter: startRouter(t, cfg), be: startBackend(t, "1.0.0", reflectBoth)}
	e.b = e.be.backend(t, echoService, dynService)
	if err := e.r.Declare("echo", []string{echoService, dynService, chatServiceDesc.ServiceName}); err != nil {
		t.Fatal(err)
	}
	e.r.SetBackend("echo", e.b)
	e.echo = echov1.NewEchoServiceClient(e.conn)
	return e
}

// wantStatus fails unless err is a status with code and, if msg is not
// empty, exactly that message.
func wantStatus(t testing.TB, err error, code codes.Code, msg string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if st.Code() != code || (msg != "" && st.Message() != msg) {
		t.Fatalf("got status %v %q, want %v %q", st.Code(), st.Message(), code, msg)
	}
}

// heldCalls returns how many calls to plugin wait for a backend.
func (r *Router) heldCalls(plugin string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.plugins[plugin]; p != nil {
		return p.held.Load()
	}
	return 0
}

// collect receives a server stream to its end.
func collect[T any](s grpc.ServerStreamingClient[T]) ([]*T, error) {
	var out []*T
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}
