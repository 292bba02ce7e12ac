package router

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jhump/protoreflect/grpcreflect"
	"google.golang.org/grpc/codes"
	rv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/reflect/protoreflect"

	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

func TestLoadDescriptors(t *testing.T) {
	be := startBackend(t, "1.0.0", reflectBoth)

	files, err := LoadDescriptors(testCtx(t), be.conn, []string{echoService, dynService})
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range []string{echoService, dynService} {
		d, err := files.FindDescriptorByName(protoreflect.FullName(svc))
		if err != nil {
			t.Fatalf("%s: %v", svc, err)
		}
		if _, ok := d.(protoreflect.ServiceDescriptor); !ok {
			t.Fatalf("%s is a %T", svc, d)
		}
	}
	// The transitive dependency of the dynamic file came along.
	if _, err := files.FindFileByPath("google/protobuf/wrappers.proto"); err != nil {
		t.Fatalf("dependency missing: %v", err)
	}

	_, err = LoadDescriptors(testCtx(t), be.conn, []string{echoService, "nope.v1.Missing"})
	if !errors.Is(err, ErrServiceNotServed) || !strings.Contains(err.Error(), "nope.v1.Missing") {
		t.Fatalf("missing service: %v", err)
	}

	t.Run("v1alpha fallback", func(t *testing.T) {
		old := startBackend(t, "0.9.0", reflectV1AlphaOnly)
		files, err := LoadDescriptors(testCtx(t), old.conn, []string{echoService})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := files.FindDescriptorByName(echoService + ".Echo"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("no reflection", func(t *testing.T) {
		none := startBackend(t, "0.1.0", reflectNone)
		if _, err := LoadDescriptors(testCtx(t), none.conn, []string{echoService}); !errors.Is(err, ErrNoReflection) {
			t.Fatalf("got %v, want ErrNoReflection", err)
		}
	})
}

// TestReflection asks the router's server what grpcurl asks: the list of
// services, then the descriptors of one.
func TestReflection(t *testing.T) {
	e := newEnv(t)
	rc := grpcreflect.NewClientAuto(testCtx(t), e.conn)
	defer rc.Reset()

	got, err := rc.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"grpc.health.v1.Health", // the agent's own
		"grpc.reflection.v1.ServerReflection",
		"grpc.reflection.v1alpha.ServerReflection",
		echoService,                 // the plugin's, also linked into this binary
		dynService,                  // the plugin's, known only from its reflection
		chatServiceDesc.ServiceName, // declared, with no descriptor
	} {
		if !slices.Contains(got, want) {
			t.Errorf("ListServices() = %v, missing %s", got, want)
		}
	}

	for svc, method := range map[string]string{
		echoService:             "EchoStream",
		dynService:              "Ping",
		"grpc.health.v1.Health": "Check",
	} {
		sd, err := rc.ResolveService(svc)
		if err != nil {
			t.Fatalf("resolve %s: %v", svc, err)
		}
		if sd.FindMethodByName(method) == nil {
			t.Errorf("%s has no method %s", svc, method)
		}
	}
	sd, _ := rc.ResolveService(echoService)
	if m := sd.FindMethodByName("EchoStream"); !m.IsServerStreaming() || m.GetInputType().GetFullyQualifiedName() != "echo.v1.EchoStreamRequest" {
		t.Errorf("EchoStream resolved as %v", m)
	}

	t.Run("v1alpha", func(t *testing.T) {
		rc := grpcreflect.NewClientV1Alpha(testCtx(t), rv1alpha.NewServerReflectionClient(e.conn))
		defer rc.Reset()
		got, err := rc.ListServices()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(got, dynService) {
			t.Fatalf("v1alpha ListServices() = %v", got)
		}
		if _, err := rc.ResolveService(dynService); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("no backend: still resolved, the call says why", func(t *testing.T) {
		e.r.SetBackend("echo", nil)
		e.r.SetState("echo", "backoff: exited with status 2")
		rc := grpcreflect.NewClientAuto(testCtx(t), e.conn)
		defer rc.Reset()
		got, err := rc.ListServices()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(got, dynService) || !slices.Contains(got, "grpc.health.v1.Health") {
			t.Fatalf("ListServices() = %v", got)
		}
		if _, err := rc.ResolveService(echoService); err != nil {
			t.Fatalf("the service of a plugin between instances is unknown: %v", err)
		}
		_, err = echov1.NewEchoServiceClient(e.conn).Echo(testCtx(t), &echov1.EchoRequest{Message: "x"})
		wantStatus(t, err, codes.Unavailable, `plugin "echo" has no serving instance (state: backoff: exited with status 2); the agent restarts it by itself: retry later, or see 'plughost plugin status echo'`)
	})

	t.Run("never served: resolving says why", func(t *testing.T) {
		if err := e.r.Declare("greeter", []string{"greeter.v1.GreeterService"}); err != nil {
			t.Fatal(err)
		}
		e.r.SetState("greeter", "backoff: plugin greeter 1.0.0 died during start: exited with status 3 before its handshake")
		for _, rc := range []*grpcreflect.Client{
			grpcreflect.NewClientAuto(testCtx(t), e.conn),
			grpcreflect.NewClientV1Alpha(testCtx(t), rv1alpha.NewServerReflectionClient(e.conn)),
		} {
			_, err := rc.ResolveService("greeter.v1.GreeterService")
			rc.Reset()
			wantStatus(t, err, codes.Unavailable, `plugin "greeter" has no serving instance (state: backoff: plugin greeter 1.0.0 died during start: exited with status 3 before its handshake); the agent restarts it by itself: retry later, or see 'plughost plugin status greeter'`)
		}
		if _, err := grpcreflect.NewClientAuto(testCtx(t), e.conn).ResolveService("nope.v1.Nope"); !grpcreflect.IsElementNotFoundError(err) {
			t.Fatalf("an unknown service: %v, want not found", err)
		}
	})
}
