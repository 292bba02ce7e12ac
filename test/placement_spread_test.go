package test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/internal/testenv"
	counterv1 "github.com/plughost/plughost/plugins/counter/proto/counter/v1"
)

// TestPlacementSpreadConstraintAndJoin (issue #15, five agents in fault
// domains fd1, fd1, fd2, fd2, fd3): a `count: 3` plugin runs on three nodes
// of three different fault domains, as 'plugin status' on every node and
// the nodes' observations show; a count 3 plugin whose constraint matches
// two nodes runs on those two and its status carries the warning "count 3
// wanted, 2 placed: ..."; an every-node plugin follows a sixth node that
// joins later, which fetches the bundle from a peer, while the others stay
// where they are.
func TestPlacementSpreadConstraintAndJoin(t *testing.T) {
	agents := newDomainCluster(t)
	byName := agentsByName(agents)
	n1, n2, n3 := agents[0], agents[1], agents[2]

	bundleAdd(t, n1, placedBundle(t, bundlePath("echo", "1.0.0"), map[string]any{"mode": "count", "count": 3}))
	edge := fixtureBundleBuilt(t, "interop", "edge", "1.0.0")
	const constraint = `disk == "ssd"` // n1 and n3
	bundleAdd(t, n2, placedBundle(t, edge, map[string]any{"mode": "count", "count": 3, "constraint": constraint}))
	bundleAdd(t, n3, bundlePath("counter", "1.0.0")) // every-node, the default

	// count 3: three nodes, three fault domains, the same answer on every
	// node.
	var echoNodes []string
	for _, a := range agents {
		testenv.WaitFor(t, 60*time.Second, "plugin status echo on "+a.Node+" to show 3 instances in 3 fault domains", func() error {
			s, err := placedStatusOf(a, "echo")
			if err != nil {
				return err
			}
			if len(s.Cluster) != 3 {
				return fmt.Errorf("%d instances: %+v", len(s.Cluster), s.Cluster)
			}
			up := s.serving()
			ns := nodesOf(up)
			if len(ns) != 3 {
				return fmt.Errorf("serving on %v: %+v", ns, s.Cluster)
			}
			fds := map[string]bool{}
			for _, n := range ns {
				fds[domainOf[n]] = true
				if up[n].Version != "1.0.0" || up[n].Role != "" {
					return fmt.Errorf("instance %+v", up[n])
				}
			}
			if len(fds) != 3 {
				return fmt.Errorf("echo on %v: fault domains %v", ns, fds)
			}
			if s.Placement != nil {
				return fmt.Errorf("a placement diagnostic for a fully placed plugin: %+v", *s.Placement)
			}
			if echoNodes != nil && !slices.Equal(ns, echoNodes) {
				return fmt.Errorf("%s says echo runs on %v, another node said %v", a.Node, ns, echoNodes)
			}
			echoNodes = ns
			return nil
		})
	}
	t.Logf("echo count 3 runs on %v", echoNodes)
	// The nodes' own observations and the assignments say the same.
	testenv.WaitFor(t, 10*time.Second, "echo's observations and assignments on the same three nodes", func() error {
		obs, err := sysRecords[intent.Observation](t, n2, intent.PrefixObserve)
		if err != nil {
			return err
		}
		as, err := sysRecords[intent.Assignment](t, n2, intent.PrefixAssign)
		if err != nil {
			return err
		}
		var observed, assigned []string
		for _, o := range obs {
			if o.Value.Plugin == "echo" && o.Value.State == "running" && o.Value.Healthy {
				observed = append(observed, o.Value.Node)
			}
		}
		for _, a := range as {
			if a.Value.Plugin == "echo" {
				assigned = append(assigned, a.Value.Node)
			}
		}
		slices.Sort(observed)
		slices.Sort(assigned)
		if !slices.Equal(observed, echoNodes) || !slices.Equal(assigned, echoNodes) {
			return fmt.Errorf("observed running on %v, assigned to %v, status said %v", observed, assigned, echoNodes)
		}
		return nil
	})

	// A constraint two nodes match: two placed, and the warning.
	for _, a := range agents {
		testenv.WaitFor(t, 60*time.Second, "plugin status edge on "+a.Node+" to show n1 and n3 and the warning", func() error {
			s, err := placedStatusOf(a, "edge")
			if err != nil {
				return err
			}
			if ns := nodesOf(s.serving()); !slices.Equal(ns, []string{"n1", "n3"}) || len(s.Cluster) != 2 {
				return fmt.Errorf("serving on %v: %+v", ns, s.Cluster)
			}
			p := s.Placement
			if p == nil {
				return fmt.Errorf("no placement diagnostic")
			}
			if p.Severity != "warning" || p.Wanted != 3 || p.Placed != 2 ||
				!strings.HasPrefix(p.Message, "count 3 wanted, 2 placed: ") || !strings.Contains(p.Message, constraint) {
				return fmt.Errorf("placement diagnostic %+v", *p)
			}
			return nil
		})
	}
	if out, errOut, code := n2.CLI("plugin", "status", "edge"); code != 0 || !strings.Contains(out, "Placement: warning: count 3 wanted, 2 placed: ") {
		t.Fatalf("plugin status edge: exit %d\n%s%s", code, out, errOut)
	} else {
		t.Logf("plugin status edge:\n%s", out)
	}

	// every-node: on all five.
	for _, a := range agents {
		testenv.WaitFor(t, 60*time.Second, "counter on every node, seen from "+a.Node, func() error {
			s, err := placedStatusOf(a, "counter")
			if err != nil {
				return err
			}
			if ns := nodesOf(s.serving()); !slices.Equal(ns, []string{"n1", "n2", "n3", "n4", "n5"}) {
				return fmt.Errorf("serving on %v: %+v", ns, s.Cluster)
			}
			return nil
		})
	}

	// A sixth node joins: it fetches counter from a peer and serves it;
	// echo and edge stay where they are.
	started := time.Now()
	n6 := joinLater(t, agents, "n6")
	joined := time.Now()
	testenv.WaitFor(t, 60*time.Second, "counter serving on n6, seen from n1", func() error {
		s, err := placedStatusOf(n1, "counter")
		if err != nil {
			return err
		}
		if _, ok := s.serving()["n6"]; !ok {
			return fmt.Errorf("instances %+v", s.Cluster)
		}
		return nil
	})
	t.Logf("FIGURE n6 runs counter %s after its API answered with a leader, %s after its process started",
		time.Since(joined).Round(time.Millisecond), time.Since(started).Round(time.Millisecond))
	if !strings.Contains(n6.Log(), "bundle fetched from a peer and installed") {
		t.Errorf("n6 does not log fetching counter from a peer:\n%s", n6.Log())
	}
	// n6 answers a call itself (a local instance, not relayed: its own
	// status says it runs it).
	ctx := testenv.Context(t, 30*time.Second)
	if _, err := counterv1.NewCounterServiceClient(n6.Conn()).Increment(ctx, &counterv1.IncrementRequest{Name: "joined"}); err != nil {
		t.Fatalf("Increment through n6: %v", err)
	}
	for _, plugin := range []string{"echo", "edge"} {
		s, err := placedStatusOf(byName["n4"], plugin)
		if err != nil {
			t.Fatal(err)
		}
		want := echoNodes
		if plugin == "edge" {
			want = []string{"n1", "n3"}
		}
		if ns := nodesOf(s.serving()); !slices.Equal(ns, want) || len(s.Cluster) != len(want) {
			t.Errorf("%s moved when n6 joined: %+v, was on %v", plugin, s.Cluster, want)
		}
	}
}
