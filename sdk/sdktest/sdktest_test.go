package sdktest_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plughost/plughost/sdk"
	"github.com/plughost/plughost/sdk/sdktest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// kvPlugin serves a renamed gRPC health service, keeps its config and store,
// and records the lifecycle.
type kvPlugin struct {
	cfg     struct{ Greeting string }
	env     *sdk.Env
	healthy error
	drained atomic.Bool
	stopped atomic.Bool
}

var ownService = func() grpc.ServiceDesc {
	d := healthpb.Health_ServiceDesc
	d.ServiceName = "kv.v1.Health"
	return d
}()

func (p *kvPlugin) Register(s grpc.ServiceRegistrar) {
	s.RegisterService(&ownService, health.NewServer())
}

func (p *kvPlugin) Configure(_ context.Context, env *sdk.Env) error {
	p.env = env
	return env.DecodeConfig(&p.cfg)
}

func (p *kvPlugin) Health(context.Context) error { return p.healthy }
func (p *kvPlugin) Drain(context.Context) error  { p.drained.Store(true); return nil }
func (p *kvPlugin) Stop(context.Context) error   { p.stopped.Store(true); return nil }
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

var info = sdk.Info{Name: "kv", Version: "1.2.3"}

func TestHarness(t *testing.T) {
	ctx := ctx(t)
	p := &kvPlugin{}
	h := sdktest.StartWith(t, info, p, sdktest.Options{
		Config: map[string]string{"Greeting": "hi"},
		Node:   sdk.Node{Name: "n2", Tags: map[string]string{"zone": "a"}},
	})
	if p.cfg.Greeting != "hi" || p.env.Node.Name != "n2" || p.env.Node.Tags["zone"] != "a" {
		t.Fatalf("configured with %+v on %+v", p.cfg, p.env.Node)
	}
	if h.Store() != p.env.Store {
		t.Fatal("h.Store() is not the plugin's Store")
	}
	d, err := h.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "kv" || d.Version != "1.2.3" || !slices.Equal(d.Services, []string{"kv.v1.Health"}) || d.APIVersion != 1 || d.SDKVersion != sdk.SDKVersion {
		t.Fatalf("describe: %+v", d)
	}
	if err := h.Conn().Invoke(ctx, "/kv.v1.Health/Check", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{}); err != nil {
		t.Fatalf("call the plugin's service: %v", err)
	}

	if _, err := h.Store().Put(ctx, "k", []byte("v"), sdk.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if kv, err := p.env.Store.WithConsistency(sdk.Session).Get(ctx, "k"); err != nil || string(kv.Value) != "v" {
		t.Fatalf("plugin reads %+v, %v", kv, err)
	}

	if err := h.Health(ctx); err != nil {
		t.Fatal(err)
	}
	p.healthy = errors.New("warming up")
	if err := h.Health(ctx); !errors.Is(err, sdktest.ErrNotServing) || !strings.Contains(err.Error(), "warming up") {
		t.Fatalf("health: %v, want ErrNotServing: warming up", err)
	}
	if err := h.Drain(ctx); err != nil || !p.drained.Load() {
		t.Fatalf("drain: %v, drained %v", err, p.drained.Load())
	}
	if err := h.Stop(ctx); err != nil || !p.stopped.Load() {
		t.Fatalf("stop: %v, stopped %v", err, p.stopped.Load())
	}
}

func TestHarnessConfigureError(t *testing.T) {
	ctx := ctx(t)
	h := sdktest.StartWith(t, info, &kvPlugin{}, sdktest.Options{Unconfigured: true})
	if h.Store() != nil {
		t.Fatal("store before Configure")
	}
	err := h.Configure(ctx, `{"Greting": "typo"}`)
	if err == nil || !strings.Contains(err.Error(), `unknown field "Greting"`) {
		t.Fatalf("configure with a typo: %v", err)
	}
	if err := h.Configure(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func TestHarnessSharedStore(t *testing.T) {
	ctx := ctx(t)
	h1 := sdktest.Start(t, info, &kvPlugin{})
	h2 := sdktest.StartWith(t, info, &kvPlugin{}, sdktest.Options{ShareStoreWith: h1})
	if _, err := h1.Store().Put(ctx, "shared", []byte("1"), sdk.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if kv, err := h2.Store().Get(ctx, "shared"); err != nil || string(kv.Value) != "1" {
		t.Fatalf("second node reads %+v, %v", kv, err)
	}
}
