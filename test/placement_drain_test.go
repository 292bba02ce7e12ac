package test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jhump/protoreflect/grpcreflect"

	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/internal/testenv"
	counterv1 "github.com/plughost/plughost/plugins/counter/proto/counter/v1"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// TestPlacementCallsAnyNodeAndDrain (issue #15, five agents in fault
// domains fd1, fd1, fd2, fd2, fd3): a plain gRPC client of every node
// reaches the singleton counter that runs on one node only, and reflection
// on every node lists it; then a node running echo (count 2) is drained
// while clients call echo through the other nodes: no call fails, the node
// ends up running nothing, and 'node eligible' brings it back into
// placement (the every-node plugin runs there again).
func TestPlacementCallsAnyNodeAndDrain(t *testing.T) {
	agents := newDomainCluster(t)
	byName := agentsByName(agents)
	n1, n2, n3 := agents[0], agents[1], agents[2]
	bundleAdd(t, n1, placedBundle(t, bundlePath("echo", "1.0.0"), map[string]any{"mode": "count", "count": 2}))
	bundleAdd(t, n2, placedBundle(t, bundlePath("counter", "1.0.0"), map[string]any{"mode": "singleton"}))
	bundleAdd(t, n3, fixtureBundleBuilt(t, "interop", "edge", "1.0.0")) // every-node

	// Clients, one connection per node, made here (Conn may fail the test).
	counters := map[string]counterv1.CounterServiceClient{}
	echos := map[string]echov1.EchoServiceClient{}
	for _, a := range agents {
		counters[a.Node] = counterv1.NewCounterServiceClient(a.Conn())
		echos[a.Node] = echov1.NewEchoServiceClient(a.Conn())
	}

	// The singleton runs on one node only.
	var active string
	testenv.WaitFor(t, 60*time.Second, "counter serving as the one active instance", func() error {
		s, err := placedStatusOf(n3, "counter")
		if err != nil {
			return err
		}
		up := s.serving()
		if len(s.Cluster) != 1 || len(up) != 1 {
			return fmt.Errorf("instances %+v", s.Cluster)
		}
		for n, in := range up {
			if in.Role != intent.RoleActive {
				return fmt.Errorf("instance %+v", in)
			}
			active = n
		}
		return nil
	})
	t.Logf("counter runs on %s only", active)

	// Every node answers a plain gRPC client's calls to it, and its
	// reflection lists it.
	var want int64
	for _, a := range agents {
		c := counters[a.Node]
		testenv.WaitFor(t, 30*time.Second, "a call through "+a.Node+" to reach counter on "+active, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := c.Increment(ctx, &counterv1.IncrementRequest{Name: "any-node"})
			if err == nil {
				want = resp.GetValue()
			}
			return err
		})
		for i := range 10 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := c.Increment(ctx, &counterv1.IncrementRequest{Name: "any-node"})
			cancel()
			if err != nil || resp.GetValue() != want+1 {
				t.Fatalf("increment %d through %s: %v, %v; want value %d", i, a.Node, resp, err, want+1)
			}
			want++
		}
		testenv.WaitFor(t, 10*time.Second, a.Node+"'s reflection to list counter, echo and edge", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			rc := grpcreflect.NewClientAuto(ctx, a.Conn())
			defer rc.Reset()
			svcs, err := rc.ListServices()
			if err != nil {
				return err
			}
			for _, s := range []string{"counter.v1.CounterService", "echo.v1.EchoService", "grpc.testing.TestService"} {
				if !slices.Contains(svcs, s) {
					return fmt.Errorf("it lists %v, not %s", svcs, s)
				}
			}
			sd, err := rc.ResolveService("counter.v1.CounterService")
			if err != nil {
				return err
			}
			if sd.FindMethodByName("Increment") == nil {
				return fmt.Errorf("counter.v1.CounterService has no Increment")
			}
			return nil
		})
	}
	ctx := testenv.Context(t, 10*time.Second)
	if got, err := counters["n5"].Get(ctx, &counterv1.GetRequest{Name: "any-node"}); err != nil || got.GetValue() != want {
		t.Fatalf("Get through n5: %v, %v; want %d", got, err, want)
	}

	// Drain a node that runs echo (and not counter) under load.
	var echoNodes []string
	testenv.WaitFor(t, 60*time.Second, "echo on 2 nodes", func() error {
		s, err := placedStatusOf(n1, "echo")
		if err != nil {
			return err
		}
		if echoNodes = nodesOf(s.serving()); len(echoNodes) != 2 || len(s.Cluster) != 2 {
			return fmt.Errorf("instances %+v", s.Cluster)
		}
		return nil
	})
	drained := echoNodes[0]
	if drained == active {
		drained = echoNodes[1]
	}
	callers := except(agents, drained)
	load := startCalls(4, callers, 2*time.Minute, func(a *ClusterAgent, i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		msg := fmt.Sprint("m", i)
		resp, err := echos[a.Node].Echo(ctx, &echov1.EchoRequest{Message: msg})
		if err == nil && resp.GetMessage() != msg {
			err = fmt.Errorf("echoed %q, sent %q", resp.GetMessage(), msg)
		}
		return err
	})
	defer load.Stop()
	waitCalls(t, load, 50, "echo calls before the drain")
	via := callers[0]
	started := time.Now()
	if out, errOut, code := via.CLI("node", "drain", drained); code != 0 {
		t.Fatalf("node drain %s through %s: exit %d\n%s%s", drained, via.Node, code, out, errOut)
	}
	var moved []string
	testenv.WaitFor(t, 60*time.Second, drained+" to run nothing and echo to run on 2 other nodes", func() error {
		obs, err := sysRecords[intent.Observation](t, via, intent.ObservePrefix(drained))
		if err != nil {
			return err
		}
		if len(obs) != 0 {
			var what []string
			for _, o := range obs {
				what = append(what, fmt.Sprintf("%s %s %s", o.Value.Plugin, o.Value.Version, o.Value.State))
			}
			return fmt.Errorf("%s still reports %v", drained, what)
		}
		s, err := placedStatusOf(via, "echo")
		if err != nil {
			return err
		}
		moved = nodesOf(s.serving())
		if len(moved) != 2 || len(s.Cluster) != 2 || slices.Contains(moved, drained) {
			return fmt.Errorf("echo instances %+v", s.Cluster)
		}
		return nil
	})
	t.Logf("FIGURE drain of %s: echo moved from %v to %v, %s from the drain command to %s running nothing",
		drained, echoNodes, moved, time.Since(started).Round(time.Millisecond), drained)
	waitCalls(t, load, 50, "echo calls after the drain")
	load.Stop()
	ok, failed := load.counts()
	t.Logf("FIGURE echo calls through %d other nodes during the drain: %d succeeded, %d failed", len(callers), ok, failed)
	if failed != 0 {
		t.Errorf("%d echo calls failed during the drain of %s; the first:\n%s", failed, drained, load.failures(10))
	}
	if out, errOut, code := via.CLI("nodes"); code == 0 {
		t.Logf("plughost nodes after the drain:\n%s", out)
	} else {
		t.Errorf("plughost nodes: exit %d\n%s%s", code, out, errOut)
	}

	// Eligible again: the every-node plugin comes back to it; echo, healthy
	// where it is, is not moved back.
	if out, errOut, code := byName[drained].CLI("node", "eligible", drained); code != 0 {
		t.Fatalf("node eligible %s: exit %d\n%s%s", drained, code, out, errOut)
	}
	testenv.WaitFor(t, 60*time.Second, "edge serving on "+drained+" again", func() error {
		s, err := placedStatusOf(via, "edge")
		if err != nil {
			return err
		}
		if ns := nodesOf(s.serving()); !slices.Equal(ns, []string{"n1", "n2", "n3", "n4", "n5"}) {
			return fmt.Errorf("edge serving on %v: %+v", ns, s.Cluster)
		}
		return nil
	})
	s, err := placedStatusOf(via, "echo")
	if err != nil {
		t.Fatal(err)
	}
	if ns := nodesOf(s.serving()); !slices.Equal(ns, moved) || len(s.Cluster) != 2 {
		t.Errorf("echo moved when %s became eligible: %+v, was on %v", drained, s.Cluster, moved)
	}
}

// waitCalls waits for n more successful calls of l, failing the test if
// they do not come within a minute.
func waitCalls(t *testing.T, l *callLoad, n int, what string) {
	t.Helper()
	from, _ := l.counts()
	testenv.WaitFor(t, 60*time.Second, fmt.Sprint(n, " ", what), func() error {
		if ok, failed := l.counts(); ok < from+n {
			return fmt.Errorf("%d succeeded, %d failed", ok-from, failed)
		}
		return nil
	})
}
