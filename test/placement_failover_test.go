package test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/internal/testenv"
	counterv1 "github.com/plughost/plughost/plugins/counter/proto/counter/v1"
)

// TestPlacementSingletonFailover (issue #15, five agents in fault domains
// fd1, fd1, fd2, fd2, fd3): the example counter, bundled as a singleton,
// runs on one node; clients increment a counter through the other nodes
// while that node is killed -9. The counter serves again from another node,
// at a higher epoch, with exactly one active instance, and holds at least
// every increment a client was told succeeded. With `standby: 1` the warm
// standby is the one promoted, and a new standby is started on another
// node. (SIGSTOP fencing of the old active is area fence's test.)
func TestPlacementSingletonFailover(t *testing.T) {
	for _, standby := range []int{0, 1} {
		t.Run(fmt.Sprint("standby=", standby), func(t *testing.T) { singletonFailover(t, standby) })
	}
}

// singletonState is counter's singleton record and the instances serving
// it, once they agree.
type singletonState struct {
	Active, Standby string
	Epoch           int64
}

// waitSingleton waits until, seen through via, counter's singleton record
// names an active (not one of not) and, when standby is 1, a standby; the
// active node serves it as the only active instance on an alive node at the
// record's epoch, the standby node runs it as the only standby, and no
// other alive node runs it.
func waitSingleton(t *testing.T, via *ClusterAgent, standby int, not ...string) singletonState {
	t.Helper()
	var st singletonState
	testenv.WaitFor(t, 60*time.Second, fmt.Sprintf("counter's active (not on %v) and %d standby serving, seen from %s", not, standby, via.Node), func() error {
		rs, err := sysRecords[intent.Singleton](t, via, intent.SingletonKey("counter"))
		if err != nil {
			return err
		}
		r, ok := rs[intent.SingletonKey("counter")]
		if !ok || r.Value.Active == "" || (standby == 1) != (r.Value.Standby != "") {
			return fmt.Errorf("singleton record %+v", r.Value)
		}
		for _, n := range not {
			if r.Value.Active == n || r.Value.Standby == n {
				return fmt.Errorf("singleton record still names %s: %+v", n, r.Value)
			}
		}
		s, err := placedStatusOf(via, "counter")
		if err != nil {
			return err
		}
		actives, standbys := 0, 0
		for _, in := range s.Cluster {
			if in.NodeStatus != "alive" {
				continue
			}
			switch {
			case in.Node == r.Value.Active && in.Role == intent.RoleActive && in.State == "running" && in.Healthy && in.Epoch == r.ModRevision:
				actives++
			case in.Node == r.Value.Standby && in.Role == intent.RoleStandby && in.State == "running":
				standbys++
			default:
				return fmt.Errorf("instance %+v; the record is %+v at epoch %d", in, r.Value, r.ModRevision)
			}
		}
		if actives != 1 || standbys != standby {
			return fmt.Errorf("%d active and %d standby serving: %+v; the record is %+v at epoch %d", actives, standbys, s.Cluster, r.Value, r.ModRevision)
		}
		st = singletonState{Active: r.Value.Active, Standby: r.Value.Standby, Epoch: r.ModRevision}
		return nil
	})
	return st
}

func singletonFailover(t *testing.T, standby int) {
	agents := newDomainCluster(t)
	byName := agentsByName(agents)
	placement := map[string]any{"mode": "singleton"}
	if standby == 1 {
		placement["standby"] = 1
	}
	bundleAdd(t, agents[0], placedBundle(t, bundlePath("counter", "1.0.0"), placement))
	counters := map[string]counterv1.CounterServiceClient{}
	for _, a := range agents {
		counters[a.Node] = counterv1.NewCounterServiceClient(a.Conn())
	}
	before := waitSingleton(t, agents[1], standby)
	t.Logf("counter active on %s (%s), standby %q, epoch %d", before.Active, domainOf[before.Active], before.Standby, before.Epoch)
	if standby == 1 && domainOf[before.Standby] == domainOf[before.Active] {
		t.Errorf("the standby %s is in the active %s's fault domain %s", before.Standby, before.Active, domainOf[before.Active])
	}

	// The bundle was added on n1 only: a new active can start only once
	// another node holds it too (bundles travel ahead of need).
	added := time.Now()
	testenv.WaitFor(t, 60*time.Second, "counter's bundle held by a node besides the active", func() error {
		held, err := sysRecords[intent.Held](t, agents[1], intent.PrefixHeld)
		if err != nil {
			return err
		}
		var holders []string
		for _, h := range held {
			if h.Value.Node != before.Active && h.Value.Has("counter", "1.0.0") {
				holders = append(holders, h.Value.Node)
			}
		}
		if len(holders) == 0 {
			return fmt.Errorf("held: %+v", held)
		}
		t.Logf("FIGURE counter's bundle held besides %s by %v %s after the active served", before.Active, holders, time.Since(added).Round(time.Millisecond))
		return nil
	})

	// Clients increment one counter through every node but the active's.
	callers := except(agents, before.Active)
	var mu sync.Mutex
	var maxAcked int64
	load := startCalls(4, callers, 3*time.Minute, func(a *ClusterAgent, _ int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := counters[a.Node].Increment(ctx, &counterv1.IncrementRequest{Name: "failover"})
		if err == nil {
			mu.Lock()
			maxAcked = max(maxAcked, resp.GetValue())
			mu.Unlock()
		}
		return err
	})
	defer load.Stop()
	waitCalls(t, load, 30, "increments before the kill")

	victim := byName[before.Active]
	killed := time.Now()
	victim.Kill9()
	after := waitSingleton(t, callers[0], standby, victim.Node)
	served := time.Since(killed)
	waitCalls(t, load, 30, "increments after the failover")
	load.Stop()
	ok, failed := load.counts()
	first, longest, sawOK := load.firstOkAfter(killed)
	if !sawOK {
		t.Fatalf("no increment started after the kill succeeded")
	}
	t.Logf("FIGURE singleton standby=%d: kill -9 of %s -> first successful increment started after it: %s; new active %s serving (status) after %s; calls: %d succeeded, %d failed, the longest success took %s",
		standby, victim.Node, first.Sub(killed).Round(time.Millisecond), after.Active, served.Round(time.Millisecond), ok, failed, longest.Round(time.Millisecond))
	if failed > 0 {
		t.Logf("the first failed calls:\n%s", load.failures(5))
	}
	t.Logf("counter active on %s, standby %q, epoch %d", after.Active, after.Standby, after.Epoch)
	if after.Epoch <= before.Epoch {
		t.Errorf("the epoch went from %d to %d", before.Epoch, after.Epoch)
	}
	if standby == 1 && after.Active != before.Standby {
		t.Errorf("the warm standby on %s was not promoted: the active is %s", before.Standby, after.Active)
	}

	// Every other node sees the one active, and the counter holds every
	// acknowledged increment (and no more than were sent).
	for _, a := range callers {
		if st := waitSingleton(t, a, standby, victim.Node); st != after {
			t.Errorf("%s sees %+v, %s saw %+v", a.Node, st, callers[0].Node, after)
		}
	}
	ctx := testenv.Context(t, 10*time.Second)
	got, err := counters[callers[1].Node].Get(ctx, &counterv1.GetRequest{Name: "failover"})
	if err != nil {
		t.Fatalf("Get through %s: %v", callers[1].Node, err)
	}
	t.Logf("counter is %d: %d increments acknowledged (the highest value acknowledged %d), %d failed", got.GetValue(), ok, maxAcked, failed)
	if v := got.GetValue(); v < int64(ok) || v < maxAcked || v > int64(ok+failed) {
		t.Errorf("counter is %d after %d acknowledged increments (highest acknowledged value %d) and %d failed ones", v, ok, maxAcked, failed)
	}
}
