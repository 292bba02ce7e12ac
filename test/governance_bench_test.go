package test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/governance"
	"github.com/plughost/plughost/host/launch"
	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// BenchmarkPluginStartGoverned measures what the agent does to start an
// instance, in a cgroup with limits: make the cgroup, start the real echo
// plugin inside it (go-plugin handshake, describe), configure it and wait
// for its first passing health check. Stopping it is not timed.
func BenchmarkPluginStartGoverned(b *testing.B) { benchmarkPluginStart(b, true) }

// BenchmarkPluginStartUngoverned is BenchmarkPluginStartGoverned without a
// cgroup: the difference is the cost of governance on a plugin's start.
func BenchmarkPluginStartUngoverned(b *testing.B) { benchmarkPluginStart(b, false) }

// noStore is a store that answers nothing: echo never calls it, but
// Configure needs one to hand over.
type noStore struct {
	storev1.UnimplementedStoreServiceServer
}

func benchmarkPluginStart(b *testing.B, governed bool) {
	buildAll(b)
	echo, err := bundle.Open(bundlePath("echo", "1.0.0"), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	var gov *governance.Manager
	if governed {
		parent := fmt.Sprintf("plughost-bench-%d", os.Getpid())
		if gov, err = governance.NewManager(governance.Config{Parent: parent}); err != nil {
			b.Fatal(err)
		}
		if gov.Mode() == governance.ModeNone {
			b.Fatalf("no cgroups to benchmark: %s", gov.Reason())
		}
		b.Cleanup(func() { removeCgroupParent(b, parent) })
		b.Logf("governance: %s", gov.Mode())
	}
	limits := governance.Limits{MemoryBytes: 256 << 20, CPU: 1, Pids: 512}
	ctx := context.Background()

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("echo-bench-%d", i)
		var group *governance.Group
		spec := launch.Spec{
			Plugin: "echo", Version: "1.0.0", InstanceID: id,
			Executable: echo.Executable, SHA256: echo.Manifest.SHA256, Dir: echo.Dir,
		}
		if governed {
			if group, err = gov.New(id, limits); err != nil {
				b.Fatal(err)
			}
			spec.Place = group.Start
		}
		inst, err := launch.Start(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		if err := inst.Setup(ctx, noStore{}, &pluginv1.ConfigureRequest{
			Node: &pluginv1.NodeInfo{Name: "bench"}, Namespace: "echo", InstanceId: id,
		}); err != nil {
			b.Fatal(err)
		}
		if err := firstHealthy(ctx, inst); err != nil {
			b.Fatal(err)
		}

		b.StopTimer()
		inst.Kill()
		if group != nil {
			if err := group.Delete(); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
}

// firstHealthy polls the plugin's health, as the agent's health gate does,
// until it first reports serving.
func firstHealthy(ctx context.Context, inst *launch.Instance) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		resp, err := inst.Lifecycle.Health(ctx, &pluginv1.HealthRequest{})
		if err == nil && resp.GetStatus() == pluginv1.HealthStatus_HEALTH_STATUS_SERVING {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("echo not healthy within 10s: %v %v", resp, err)
		case <-time.After(time.Millisecond):
		}
	}
}
