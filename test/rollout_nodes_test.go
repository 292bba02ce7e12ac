package test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/metadata"

	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/router"
	"github.com/plughost/plughost/internal/testenv"
	counterv1 "github.com/plughost/plughost/plugins/counter/proto/counter/v1"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// The acceptance tests of issue #16 about nodes (down, returning) and
// placements (singleton, count) in a rollout: five agents, each its own
// upgrade domain ud1..ud5.

// TestRolloutDownNodeConvergesForwardAndBack (issue #16): echo runs on
// every node; n4 is killed -9 (n3 when n4 leads raft: the leader killed
// mid-rollout is another test), 1.1.0 is added (1.0.0 is pinned) and a
// pin of 1.1.0 starts a rollout. It completes without the node, the
// record naming it pending and down; restarted, the node converges to 1.1.0 without ever serving 1.0.0
// (neither to a call through it nor in its observation), and the record
// says converged. Then, with the node down again, a pin of 1.0.0 rolls
// back the same way, and on its return it converges to 1.0.0.
func TestRolloutDownNodeConvergesForwardAndBack(t *testing.T) {
	agents := newRolloutCluster(t)
	byName := agentsByName(agents)
	via := agents[0]
	bundleAdd(t, via, rolloutBundle(t, rolloutPlugin{Name: "echo", Version: "1.0.0"}))
	waitServingOnly(t, via, "echo", "1.0.0", nodeNames(agents), 90*time.Second)
	pinDetached(t, via, "echo", "1.0.0")
	v2 := rolloutBundle(t, rolloutPlugin{Name: "echo", Version: "1.1.0"})

	victim := byName["n4"]
	if l := leaderOf(t, agents); l == victim {
		victim = byName["n3"]
	}
	t.Logf("the node down during the rollouts: %s (%s)", victim.Node, rolloutDomainOf[victim.Node])
	pinVia := except(agents, victim.Node)[0]
	// 1.1.0 is added while the node is down: back, it fetches the bundle
	// from a peer, and must not serve 1.0.0 meanwhile.
	downRollout(t, agents, victim, "1.0.0", "1.1.0", func() {
		bundleAdd(t, pinVia, v2)
		if seq := lastRolloutSeq(t, []*ClusterAgent{pinVia}, "echo"); seq != 0 {
			t.Fatalf("a pin of the version that runs, or a bundle of a pinned plugin, started rollout %s", intent.RolloutID("echo", seq))
		}
		pinDetached(t, pinVia, "echo", "1.1.0")
	})
	downRollout(t, agents, victim, "1.1.0", "1.0.0", func() { pinDetached(t, pinVia, "echo", "1.0.0") })
}

// downRollout kills victim, starts a rollout of echo from old to target
// with start under load through the live nodes, checks that it completes
// with victim pending, then restarts victim and checks that it converges
// to target without serving old.
func downRollout(t *testing.T, agents []*ClusterAgent, victim *ClusterAgent, old, target string, start func()) {
	t.Helper()
	live := except(agents, victim.Node)
	via := live[0]
	before := lastRolloutSeq(t, live, "echo")

	victim.Kill9()
	killed := time.Now()
	waitNodeStatus(t, live, victim.Node, "failed")
	t.Logf("%s killed; every live node lists it failed after %s", victim.Node, time.Since(killed).Round(time.Millisecond))

	load := startEchoLoad(t, live, 100, 5*time.Minute)
	defer load.Stop()
	waitLoadAnswers(t, load, 50, 30*time.Second)
	start()
	r := waitRolloutDone(t, live, "echo", before, 3*time.Minute)
	logRollout(t, r)
	waitServingOnly(t, via, "echo", target, nodeNames(live), 60*time.Second)
	waitLoadAnswers(t, load, 50, 30*time.Second)
	res := load.Stop()
	t.Logf("FIGURE rollout %s %s -> %s with %s down: %s in %s; echo calls through %v: %s", r.ID, r.From, r.To, victim.Node,
		r.State, r.Finished.Sub(r.Created).Round(time.Millisecond), nodeNames(live), res)
	if res.Failed > 0 {
		t.Errorf("%d echo calls failed during rollout %s; the first:\n%s", res.Failed, r.ID, strings.Join(res.Failures, "\n"))
	}
	if r.State != intent.RolloutCompleted || r.From != old || r.To != target {
		t.Fatalf("rollout %s: %s from %s to %s (failure %q), want completed from %s to %s", r.ID, r.State, r.From, r.To, r.Failure, old, target)
	}
	if later := lastRolloutSeq(t, live, "echo"); later != r.Seq {
		t.Errorf("rollout %s was followed by %s", r.ID, intent.RolloutID("echo", later))
	}
	if !slices.Equal(r.Pending, []string{victim.Node}) {
		t.Errorf("rollout %s: pending %v, want [%s]", r.ID, r.Pending, victim.Node)
	}
	if !r.Converged.IsZero() {
		t.Errorf("rollout %s: converged at %s while %s is down", r.ID, r.Converged, victim.Node)
	}
	// What the operator reads: "completed in 11s, 1 node pending: n4 (down since ...)".
	want := ", 1 node pending: " + victim.Node + " (down since "
	if out, errOut, code := via.CLI("rollout", "status", r.ID); code != 0 || !strings.Contains(out, "completed") || !strings.Contains(out, want) {
		t.Errorf("rollout status %s: exit %d, want it completed with %q:\n%s%s", r.ID, code, want, out, errOut)
	}
	for _, d := range r.Domains {
		for _, n := range d.Nodes {
			if down := n.Name == victim.Node; down != (n.Phase == intent.NodeDown) || (down && n.DownSince.IsZero()) {
				t.Errorf("rollout %s, domain %s: node %+v (%s is the one down)", r.ID, d.Name, n, victim.Node)
			}
		}
		if d.Version != target || d.Phase != intent.DomainDone {
			t.Errorf("rollout %s: domain %s %s on %s, want done on %s", r.ID, d.Name, d.Phase, d.Version, target)
		}
	}

	// The victim returns: no write of its observation of echo names old
	// running or starting, and no call through it is answered by old.
	obsKey := intent.ObserveKey(victim.Node, "echo")
	watch := watchSys(t, via, intent.ObservePrefix(victim.Node), 0, func(ev *storev1.Event) error {
		kv := ev.GetKv()
		if ev.GetType() != storev1.EventType_EVENT_TYPE_PUT || string(kv.GetKey()) != obsKey {
			return nil
		}
		o, err := intent.Decode[intent.Observation](kv)
		if err != nil {
			return err
		}
		if o.Value.Version == old && (o.Value.State == "running" || o.Value.State == "starting") {
			return fmt.Errorf("%s reported echo %s %s after it returned (rollout %s to %s): %+v", victim.Node, old, o.Value.State, r.ID, target, o.Value)
		}
		return nil
	})
	probe := startVersionProbe(t, victim)
	victim.Start()
	rejoined := time.Now()
	probe.apiAnswers()
	conv := waitRolloutOf(t, live, "echo", r.Seq-1, 60*time.Second, "rollout "+r.ID+" to say converged", func(c intent.Rollout) error {
		if c.Seq != r.Seq || c.Converged.IsZero() || len(c.Pending) > 0 {
			return fmt.Errorf("rollout %s: pending %v, converged %v", c.ID, c.Pending, c.Converged)
		}
		return nil
	})
	recorded := time.Since(rejoined)
	waitServingOnly(t, via, "echo", target, nodeNames(agents), 60*time.Second)
	waitProbed(t, probe, target, 20)
	probe.stop()
	watch.stop()
	if err := watch.err(); err != nil {
		t.Error(err)
	}
	t.Logf("FIGURE %s rejoined (its API answers) -> rollout %s converged (record's time) %s, seen in the record %s after; calls through it: %s",
		victim.Node, r.ID, conv.Converged.Sub(rejoined).Round(time.Millisecond), recorded.Round(time.Millisecond), probe.summary())
	if n := probe.answeredBy(old); n > 0 {
		t.Errorf("%d calls through %s after it returned were answered by echo %s (rollout %s's target is %s)", n, victim.Node, old, r.ID, target)
	}
	if conv.State != intent.RolloutCompleted {
		t.Errorf("rollout %s is %s once converged", r.ID, conv.State)
	}
	if out, errOut, code := victim.CLI("rollout", "status", r.ID); code != 0 || !strings.Contains(out, "converged") || strings.Contains(out, "pending") {
		t.Errorf("rollout status %s through %s: exit %d, want it converged, nothing pending:\n%s%s", r.ID, victim.Node, code, out, errOut)
	}
	if later := lastRolloutSeq(t, agents, "echo"); later != r.Seq {
		t.Errorf("the return of %s started rollout %s", victim.Node, intent.RolloutID("echo", later))
	}
}

// waitNodeStatus waits until every agent of seers lists node with status
// ('plughost nodes').
func waitNodeStatus(t *testing.T, seers []*ClusterAgent, node, status string) {
	t.Helper()
	for _, a := range seers {
		testenv.WaitFor(t, 60*time.Second, fmt.Sprintf("%s to list %s %s", a.Node, node, status), func() error {
			nodes, err := listNodes(a)
			if err != nil {
				return err
			}
			if got := nodes[node].Status; got != status {
				return fmt.Errorf("%s is %q", node, got)
			}
			return nil
		})
	}
}

// sysWatch follows _sys keys under a prefix through one agent's Watch,
// calling check on every change, and keeps the first error.
type sysWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	first  error
}

// watchSys watches _sys keys under prefix through a from revision from
// (0: from now on). An error of check, or the end of the watch before
// stop, is kept for err.
func watchSys(t *testing.T, a *ClusterAgent, prefix string, from int64, check func(ev *storev1.Event) error) *sysWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &sysWatch{cancel: cancel, done: make(chan struct{})}
	t.Cleanup(w.stop)
	stream, err := a.Store().Watch(ctx, &storev1.WatchRequest{Namespace: "_sys", Prefix: []byte(prefix), StartRevision: from})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(w.done)
		for {
			resp, err := stream.Recv()
			if err != nil {
				if ctx.Err() == nil {
					w.fail(fmt.Errorf("watch of %s through %s ended: %w", prefix, a.Node, err))
				}
				return
			}
			for _, ev := range resp.GetEvents() {
				if err := check(ev); err != nil {
					w.fail(err)
				}
			}
		}
	}()
	return w
}

func (w *sysWatch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.first == nil {
		w.first = err
	}
}

// stop ends the watch; it may be called again.
func (w *sysWatch) stop() {
	w.cancel()
	<-w.done
}

// err is the first error seen.
func (w *sysWatch) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.first
}

// versionProbe calls echo through one agent, one call at a time, and
// counts the answers by version and the failures.
type versionProbe struct {
	mu       sync.Mutex
	versions map[string]int
	failed   int // after answered
	lastErr  error
	answered time.Time // when the agent's API answered again
	cancel   context.CancelFunc
	done     chan struct{}
}

// startVersionProbe calls echo through a every 20 ms from now on (a is
// down: the calls fail until it answers).
func startVersionProbe(t *testing.T, a *ClusterAgent) *versionProbe {
	t.Helper()
	conn := a.dial(grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.5, MaxDelay: 200 * time.Millisecond},
		MinConnectTimeout: time.Second,
	}))
	echo := echov1.NewEchoServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	p := &versionProbe{versions: map[string]int{}, cancel: cancel, done: make(chan struct{})}
	t.Cleanup(p.stop)
	go func() {
		defer close(p.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			sent := time.Now()
			resp, err := echo.Echo(cctx, &echov1.EchoRequest{Message: "probe"})
			ccancel()
			p.mu.Lock()
			switch {
			case err == nil:
				p.versions[resp.GetVersion()]++
			case ctx.Err() == nil && !p.answered.IsZero() && sent.After(p.answered):
				p.failed++
				p.lastErr = err
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// apiAnswers tells p that the agent's API answers again: the calls
// sent from now on that fail are counted.
func (p *versionProbe) apiAnswers() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answered = time.Now()
}

func (p *versionProbe) stop() {
	p.cancel()
	<-p.done
}

// answeredBy counts the calls version answered.
func (p *versionProbe) answeredBy(version string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.versions[version]
}

func (p *versionProbe) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("answered by version %v, %d sent once its API answered failed (the last: %v)", p.versions, p.failed, p.lastErr)
}

// waitProbed waits for n more calls of p answered by version.
func waitProbed(t *testing.T, p *versionProbe, version string, n int) {
	t.Helper()
	from := p.answeredBy(version)
	testenv.WaitFor(t, 30*time.Second, fmt.Sprint(n, " probe calls answered by ", version), func() error {
		if got := p.answeredBy(version) - from; got < n {
			return fmt.Errorf("%d: %s", got, p.summary())
		}
		return nil
	})
}

// TestRolloutSingletonAndCountUnderLoad (issue #16): counter as a
// singleton (restart swaps; without, then with a standby) and echo with
// count: 3 (overlap swaps) are
// rolled out together to 1.1.0 while calls of both go through every node.
// Every change to their observations is checked: never two nodes running
// counter as the active, never fewer than two nodes serving echo. No call
// of either fails (counter's are held while it restarts), and the counter
// holds every acknowledged increment.
func TestRolloutSingletonAndCountUnderLoad(t *testing.T) {
	for _, standby := range []int{0, 1} {
		t.Run(fmt.Sprint("standby=", standby), func(t *testing.T) { singletonAndCountRollout(t, standby) })
	}
}

func singletonAndCountRollout(t *testing.T, standby int) {
	agents := newRolloutCluster(t)
	via := agents[0]
	single := map[string]any{"mode": "singleton"}
	if standby > 0 {
		single["standby"] = standby
	}
	counter := func(version string) string {
		// A drain of 5 s: an increment in flight when the old version
		// stops may take over a second on a loaded machine (its store
		// write), and the drain timeout would cut it off.
		return rolloutBundle(t, rolloutPlugin{Name: "counter", Version: version, Package: "./plugins/counter",
			Services: []string{"counter.v1.CounterService"}, Strategy: "restart", Placement: single, Drain: 5 * time.Second})
	}
	echo := func(version string) string {
		return rolloutBundle(t, rolloutPlugin{Name: "echo", Version: version, Placement: map[string]any{"mode": "count", "count": 3}})
	}
	bundleAdd(t, via, counter("1.0.0"))
	bundleAdd(t, via, echo("1.0.0"))
	counterV2, echoV2 := counter("1.1.0"), echo("1.1.0")
	before := waitSingleton(t, via, standby)
	var echoNodes []string
	testenv.WaitFor(t, 90*time.Second, "echo 1.0.0 serving on 3 nodes", func() error {
		s, err := placedStatusOf(via, "echo")
		if err != nil {
			return err
		}
		if echoNodes = nodesOf(s.serving()); len(echoNodes) != 3 {
			return fmt.Errorf("serving on %v: %+v", echoNodes, s.Cluster)
		}
		return nil
	})
	t.Logf("counter active on %s at epoch %d, standby %q; echo on %v", before.Active, before.Epoch, before.Standby, echoNodes)

	// Every observation change from here on, applied in order to what was
	// observed before it.
	obs := &observed{byKey: map[string]intent.Observation{}, epochs: map[int64]string{}}
	list, err := via.Store().List(testenv.Context(t, 5*time.Second), &storev1.ListRequest{Namespace: "_sys", Prefix: []byte(intent.PrefixObserve)})
	if err != nil {
		t.Fatal(err)
	}
	if err := obs.load(list.GetKvs()); err != nil {
		t.Fatal(err)
	}
	watch := watchSys(t, via, intent.PrefixObserve, list.GetRevision()+1, obs.apply)

	counters := map[string]counterv1.CounterServiceClient{}
	for _, a := range agents {
		counters[a.Node] = counterv1.NewCounterServiceClient(a.Conn())
	}
	var ackMu sync.Mutex
	var maxAcked int64
	var held int
	var maxHeld time.Duration
	var leaderLost []string
	incs := startCalls(4, agents, 5*time.Minute, func(a *ClusterAgent, _ int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var trailer metadata.MD
		resp, err := counters[a.Node].Increment(ctx, &counterv1.IncrementRequest{Name: "rollout"}, grpc.Trailer(&trailer))
		ackMu.Lock()
		defer ackMu.Unlock()
		if v := trailer.Get(router.HeldTrailer); len(v) > 0 {
			if ms, perr := strconv.ParseInt(v[0], 10, 64); perr == nil {
				held++
				maxHeld = max(maxHeld, time.Duration(ms)*time.Millisecond)
			}
		}
		if err == nil {
			maxAcked = max(maxAcked, resp.GetValue())
		}
		if reason, _ := errorInfo(err); reason == storev1.ReasonOutcomeUnknown || reason == storev1.ReasonNotLeader {
			// The raft leader stepped down under the increment's store
			// write (a starved machine): not the rollout's doing.
			leaderLost = append(leaderLost, fmt.Sprintf("%s via %s: %v", time.Now().Format("15:04:05.000"), a.Node, err))
		}
		return err
	})
	defer incs.Stop()
	echoes := startEchoLoad(t, agents, 100, 5*time.Minute)
	defer echoes.Stop()
	waitCalls(t, incs, 20, "increments before the rollout")
	waitLoadAnswers(t, echoes, 50, 30*time.Second)

	counterSeq, echoSeq := lastRolloutSeq(t, agents, "counter"), lastRolloutSeq(t, agents, "echo")
	started := time.Now()
	bundleAdd(t, via, counterV2)
	bundleAdd(t, via, echoV2)
	cr := waitRolloutDone(t, agents, "counter", counterSeq, 3*time.Minute)
	er := waitRolloutDone(t, agents, "echo", echoSeq, 3*time.Minute)
	logRollout(t, cr)
	logRollout(t, er)
	t.Logf("FIGURE counter (singleton, restart) rollout %s %s in %s; echo (count 3, overlap) rollout %s %s in %s; both done %s after the bundles were added",
		cr.ID, cr.State, cr.Finished.Sub(cr.Created).Round(time.Millisecond), er.ID, er.State, er.Finished.Sub(er.Created).Round(time.Millisecond),
		time.Since(started).Round(time.Millisecond))
	for _, r := range []intent.Rollout{cr, er} {
		if r.State != intent.RolloutCompleted || r.To != "1.1.0" || r.From != "1.0.0" {
			t.Errorf("rollout %s: %s from %s to %s (failure %q), want completed from 1.0.0 to 1.1.0", r.ID, r.State, r.From, r.To, r.Failure)
		}
	}
	after := waitSingleton(t, via, standby)
	s, err := placedStatusOf(via, "counter")
	if err != nil {
		t.Fatal(err)
	}
	if in := s.serving()[after.Active]; in.Version != "1.1.0" {
		t.Errorf("counter's active on %s serves %q after the rollout: %+v", after.Active, in.Version, s.Cluster)
	}
	waitServingOnly(t, via, "echo", "1.1.0", echoNodes, 60*time.Second)
	waitCalls(t, incs, 20, "increments after the rollout")
	waitLoadAnswers(t, echoes, 50, 30*time.Second)
	incs.Stop()
	eres := echoes.Stop()
	watch.stop()
	if err := watch.err(); err != nil {
		t.Error(err)
	}

	iok, ifailed := incs.counts()
	_, longest, _ := incs.firstOkAfter(started)
	o := obs.summary()
	t.Logf("FIGURE counter: %d increments, %d failed, %d held (longest hold %s), the longest took %s; echo: %s",
		iok, ifailed, held, maxHeld, longest.Round(time.Millisecond), eres)
	t.Logf("observations: %d changes; counter actives at once at most %d, echo serving at least %d; counter's active epochs %v; active from %s epoch %d to %s epoch %d",
		o.changes, o.maxActives, o.minServing, o.epochList, before.Active, before.Epoch, after.Active, after.Epoch)
	if len(leaderLost) > 0 {
		t.Logf("%d increments failed as the raft leader stepped down under their store write:\n%s", len(leaderLost), strings.Join(leaderLost, "\n"))
	}
	if ifailed > len(leaderLost) {
		t.Errorf("%d increments failed; the first:\n%s", ifailed, incs.failures(5))
	}
	if eres.Failed > 0 {
		t.Errorf("%d echo calls failed; the first:\n%s", eres.Failed, strings.Join(eres.Failures, "\n"))
	}
	if o.maxActives > 1 {
		t.Errorf("%d nodes reported running counter as the active at once: %s", o.maxActives, o.twoActives)
	}
	if o.minServing < 2 {
		t.Errorf("only %d nodes reported serving echo at once: %s", o.minServing, o.fewServing)
	}
	if after.Epoch < before.Epoch {
		t.Errorf("counter's epoch went from %d to %d", before.Epoch, after.Epoch)
	}
	got, err := counters[agents[1].Node].Get(testenv.Context(t, 10*time.Second), &counterv1.GetRequest{Name: "rollout"})
	if err != nil {
		t.Fatal(err)
	}
	if v := got.GetValue(); v < int64(iok) || v < maxAcked || v > int64(iok+ifailed) {
		t.Errorf("counter is %d after %d acknowledged increments (highest acknowledged value %d) and %d failed ones", v, iok, maxAcked, ifailed)
	}
}

// observed is every node's observations, kept up to date change by
// change, and what the singleton and count checks saw.
type observed struct {
	mu         sync.Mutex
	byKey      map[string]intent.Observation
	changes    int
	maxActives int
	twoActives string // the observations when two actives ran
	minServing int    // of echo
	fewServing string
	epochs     map[int64]string // counter's active epochs, by node
	epochList  []int64
}

// load takes the observations as listed at one revision, and checks them.
func (o *observed) load(kvs []*storev1.KeyValue) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, kv := range kvs {
		it, err := intent.Decode[intent.Observation](kv)
		if err != nil {
			return err
		}
		o.byKey[string(kv.GetKey())] = it.Value
	}
	o.minServing = -1
	o.check()
	return nil
}

// apply takes one change in and checks the observations after it.
func (o *observed) apply(ev *storev1.Event) error {
	kv := ev.GetKv()
	o.mu.Lock()
	defer o.mu.Unlock()
	if ev.GetType() == storev1.EventType_EVENT_TYPE_PUT {
		it, err := intent.Decode[intent.Observation](kv)
		if err != nil {
			return err
		}
		o.byKey[string(kv.GetKey())] = it.Value
	} else {
		delete(o.byKey, string(kv.GetKey()))
	}
	o.changes++
	o.check()
	return nil
}

// check counts counter's actives and echo's serving nodes now.
func (o *observed) check() {
	actives, serving := 0, 0
	for _, ob := range o.byKey {
		switch {
		case ob.Plugin == "counter" && ob.Role == intent.RoleActive && ob.State == "running":
			actives++
			if _, seen := o.epochs[ob.Epoch]; !seen {
				o.epochs[ob.Epoch] = ob.Node
				o.epochList = append(o.epochList, ob.Epoch)
			}
		case ob.Plugin == "echo" && ob.State == "running" && ob.Healthy:
			serving++
		}
	}
	if actives > o.maxActives {
		o.maxActives = actives
		if actives > 1 {
			o.twoActives = o.describe("counter")
		}
	}
	if o.minServing < 0 || serving < o.minServing {
		o.minServing = serving
		if serving < 2 {
			o.fewServing = o.describe("echo")
		}
	}
}

// describe lists plugin's observations.
func (o *observed) describe(plugin string) string {
	var parts []string
	for _, ob := range o.byKey {
		if ob.Plugin == plugin {
			parts = append(parts, fmt.Sprintf("%s %s %s role %q epoch %d healthy %v", ob.Node, ob.Version, ob.State, ob.Role, ob.Epoch, ob.Healthy))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

type observedSummary struct {
	changes, maxActives, minServing int
	twoActives, fewServing          string
	epochList                       []int64
}

func (o *observed) summary() observedSummary {
	o.mu.Lock()
	defer o.mu.Unlock()
	return observedSummary{o.changes, o.maxActives, o.minServing, o.twoActives, o.fewServing, slices.Clone(o.epochList)}
}
