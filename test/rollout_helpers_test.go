package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/router"
	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// Helpers of the acceptance tests of issue #16 (cluster rollouts):
// test/rollout_*_test.go. Five agents, each in an upgrade domain of its
// own, in rollout order:
//
//	n1 ud1   n2 ud2   n3 ud3   n4 ud4   n5 ud5
var rolloutDomainOf = map[string]string{"n1": "ud1", "n2": "ud2", "n3": "ud3", "n4": "ud4", "n5": "ud5"}

// rolloutDomains is the upgrade domains above in rollout order.
var rolloutDomains = []string{"ud1", "ud2", "ud3", "ud4", "ud5"}

// newRolloutCluster starts the five agents above, with args for each.
func newRolloutCluster(t *testing.T, args ...string) []*ClusterAgent {
	t.Helper()
	return NewClusterEach(t, 5, func(i int) []string {
		return append([]string{"-upgrade-domain", rolloutDomainOf[fmt.Sprint("n", i+1)]}, args...)
	})
}

// rolloutPlugin describes a bundle for a rollout test: an every-node
// plugin (unless Placement says otherwise) serving echo.v1.EchoService,
// with quick health checks and an upgrade block.
type rolloutPlugin struct {
	Name, Version string
	// Fixture is the test/fixtures directory to build ("" builds the echo
	// plugin, ./plugins/echo).
	Fixture string
	// Package is the example plugin to build instead of echo, with the
	// services it serves (area accept2: counter as a singleton).
	Package  string
	Services []string
	// Config is the manifest's config object (nil: none).
	Config map[string]any
	// Placement is the manifest's placement (nil: every node).
	Placement map[string]any
	// Strategy is the node-level swap: overlap (the default) or restart.
	Strategy string
	// MinHealthy and HealthyDeadline go in both the health block (the
	// node-level swap's gate) and the upgrade block (the rollout's gate);
	// 0 means 1 s and 20 s.
	MinHealthy, HealthyDeadline time.Duration
	// SwapDeadline, when not 0, is the health block's healthy_deadline
	// alone: how long a node's swap waits for the new instance before it
	// falls back (the rollout's gate counts from its domain's start, bundle
	// fetch included).
	SwapDeadline time.Duration
	// Drain is the upgrade block's drain_timeout (0 means 1 s).
	Drain time.Duration
	// FailureAction is the upgrade block's failure_action ("" leaves it
	// out: rollback).
	FailureAction string
	// Upgrade holds more upgrade block fields (policy, max_parallel,
	// progress_deadline, ...), written as given.
	Upgrade map[string]any
}

// badRolloutTarget is a bad v2 of an every-node plugin name: the
// badtarget fixture, never healthy on nodes ("*" or none: every node) and,
// when crashAfter is not 0, crashing that long after it starts there; a
// healthy echo elsewhere.
func badRolloutTarget(name, version string, crashAfter time.Duration, nodes ...string) rolloutPlugin {
	cfg := map[string]any{}
	if len(nodes) > 0 {
		cfg["nodes"] = nodes
	}
	if crashAfter > 0 {
		cfg["crash_after_ms"] = crashAfter.Milliseconds()
	}
	return rolloutPlugin{Name: name, Version: version, Fixture: "badtarget", Config: cfg}
}

// rolloutBundle builds p's executable and bundle.
func rolloutBundle(t testing.TB, p rolloutPlugin) string {
	t.Helper()
	minHealthy, deadline, drain := p.MinHealthy, p.HealthyDeadline, p.Drain
	if minHealthy == 0 {
		minHealthy = time.Second
	}
	if deadline == 0 {
		deadline = 20 * time.Second
	}
	if drain == 0 {
		drain = time.Second
	}
	strategy := p.Strategy
	if strategy == "" {
		strategy = "overlap"
	}
	pkg, stamped, services := "./plugins/echo", "", []string{"echo.v1.EchoService"}
	if p.Fixture != "" {
		pkg, stamped = "./test/fixtures/"+p.Fixture, p.Name
	}
	if p.Package != "" {
		pkg, services = p.Package, p.Services
	}
	exe := filepath.Join(t.TempDir(), p.Name)
	if err := goBuild(pkg, exe, p.Version, stamped); err != nil {
		t.Fatal(err)
	}
	swapDeadline := deadline
	if p.SwapDeadline != 0 {
		swapDeadline = p.SwapDeadline
	}
	built, err := bundle.Build(exe, swapManifest(p.Name, p.Version, strategy, minHealthy, swapDeadline, drain, services...), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return repackManifest(t, built, func(m map[string]any) {
		if p.Placement != nil {
			m["placement"] = p.Placement
		}
		if p.Config != nil {
			m["config"] = p.Config
		}
		up, _ := m["upgrade"].(map[string]any)
		if up == nil {
			up = map[string]any{}
		}
		up["min_healthy_time"] = minHealthy.String()
		up["healthy_deadline"] = deadline.String()
		if p.FailureAction != "" {
			up["failure_action"] = p.FailureAction
		}
		for k, v := range p.Upgrade {
			up[k] = v
		}
		m["upgrade"] = up
	})
}

// repackManifest repacks the bundle at src with its plugin.json edited by
// edit (the executable, and so its digest, is the same).
func repackManifest(t testing.TB, src string, edit func(m map[string]any)) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("tar", "-xzf", src, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v\n%s", src, err, out)
	}
	path := filepath.Join(dir, "plugin.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if raw, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(src))
	args := []string{"-czf", out, "-C", dir}
	for _, e := range entries {
		args = append(args, e.Name())
	}
	if b, err := exec.Command("tar", args...).CombinedOutput(); err != nil {
		t.Fatalf("packing %s: %v\n%s", src, err, b)
	}
	return out
}

// echoLoad is an open-loop load of echo.v1.EchoService/Echo calls at a
// fixed rate, spread over every agent given in turn, bounded in time and
// in calls in flight. It counts the calls that failed and those the
// router held (trailer plughost-held-ms), and which version answered
// through which node.
type echoLoad struct {
	mu       sync.Mutex
	ok       int
	failed   []string
	held     int
	maxHeld  time.Duration
	dropped  int                       // ticks skipped: maxInFlight calls were in flight
	versions map[string]map[string]int // node -> version -> answers
	inFlight int
	wg       sync.WaitGroup
	cancel   context.CancelFunc
	done     chan struct{}
}

// echoLoadResult is what an echoLoad counted.
type echoLoadResult struct {
	OK, Failed, Held, Dropped int
	MaxHeld                   time.Duration
	Failures                  []string // the first 10
	Versions                  map[string]map[string]int
}

func (r echoLoadResult) String() string {
	return fmt.Sprintf("%d ok, %d failed, %d held (longest %v), %d ticks dropped; versions by node %v",
		r.OK, r.Failed, r.Held, r.MaxHeld, r.Dropped, r.Versions)
}

// maxLoadInFlight bounds an echoLoad's calls in flight.
const maxLoadInFlight = 400

// startEchoLoad calls Echo rate times a second through via in turn, until
// Stop or within has passed. Each call has 20 s (the router's hold
// timeout is shorter).
func startEchoLoad(t testing.TB, via []*ClusterAgent, rate int, within time.Duration) *echoLoad {
	t.Helper()
	clients := make([]echov1.EchoServiceClient, len(via))
	for i, a := range via {
		clients[i] = echov1.NewEchoServiceClient(a.Conn())
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	l := &echoLoad{versions: map[string]map[string]int{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			l.mu.Lock()
			if l.inFlight >= maxLoadInFlight {
				l.dropped++
				l.mu.Unlock()
				continue
			}
			l.inFlight++
			l.mu.Unlock()
			a, c := via[i%len(via)], clients[i%len(via)]
			l.wg.Go(func() { l.call(a.Node, c) })
		}
	}()
	return l
}

func (l *echoLoad) call(node string, c echov1.EchoServiceClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var trailer metadata.MD
	resp, err := c.Echo(ctx, &echov1.EchoRequest{Message: "rollout"}, grpc.Trailer(&trailer))
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
	if v := trailer.Get(router.HeldTrailer); len(v) > 0 {
		if ms, perr := strconv.ParseInt(v[0], 10, 64); perr == nil {
			l.held++
			l.maxHeld = max(l.maxHeld, time.Duration(ms)*time.Millisecond)
		}
	}
	if err != nil {
		l.failed = append(l.failed, fmt.Sprintf("%s via %s: %v", time.Now().Format("15:04:05.000"), node, err))
		return
	}
	l.ok++
	if l.versions[node] == nil {
		l.versions[node] = map[string]int{}
	}
	l.versions[node][resp.GetVersion()]++
}

// counts is the calls answered and failed so far.
func (l *echoLoad) counts() (ok, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, len(l.failed)
}

// Stop ends the load, waits for the calls in flight and returns the
// counts. It may be called again.
func (l *echoLoad) Stop() echoLoadResult {
	l.cancel()
	<-l.done
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return echoLoadResult{OK: l.ok, Failed: len(l.failed), Held: l.held, Dropped: l.dropped, MaxHeld: l.maxHeld,
		Failures: slices.Clone(l.failed[:min(10, len(l.failed))]), Versions: l.versions}
}

// waitLoadAnswers waits until the load has had n more answers than it
// had when called (it reaches every node: the plugin serves).
func waitLoadAnswers(t testing.TB, l *echoLoad, n int, within time.Duration) {
	t.Helper()
	start, _ := l.counts()
	testenv.WaitFor(t, within, fmt.Sprintf("%d calls answered", n), func() error {
		if ok, failed := l.counts(); ok < start+n {
			return fmt.Errorf("%d answered, %d failed", ok-start, failed)
		}
		return nil
	})
}

// rolloutsOf reads plugin's rollout records through a's store API,
// oldest first.
func rolloutsOf(a *ClusterAgent, plugin string) ([]intent.Rollout, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := a.Store().List(ctx, &storev1.ListRequest{Namespace: "_sys", Prefix: []byte(intent.RolloutPrefix(plugin))})
	if err != nil {
		return nil, fmt.Errorf("listing %s's rollouts through %s: %w", plugin, a.Node, err)
	}
	var out []intent.Rollout
	for _, kv := range resp.GetKvs() {
		it, err := intent.Decode[intent.Rollout](kv)
		if err != nil {
			return nil, err
		}
		out = append(out, it.Value)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}

// rolloutsVia is rolloutsOf through the first of via that answers (one
// may be down).
func rolloutsVia(via []*ClusterAgent, plugin string) ([]intent.Rollout, error) {
	var errs []string
	for _, a := range via {
		rs, err := rolloutsOf(a, plugin)
		if err == nil {
			return rs, nil
		}
		errs = append(errs, err.Error())
	}
	return nil, fmt.Errorf("no agent answered: %s", strings.Join(errs, "; "))
}

// lastRolloutSeq is the seq of plugin's newest rollout, 0 when none.
func lastRolloutSeq(t testing.TB, via []*ClusterAgent, plugin string) int64 {
	t.Helper()
	rs, err := rolloutsVia(via, plugin)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) == 0 {
		return 0
	}
	return rs[len(rs)-1].Seq
}

// waitRolloutOf waits for plugin's first rollout after seq after for
// which ok returns nil, and returns it.
func waitRolloutOf(t testing.TB, via []*ClusterAgent, plugin string, after int64, within time.Duration, what string, ok func(r intent.Rollout) error) intent.Rollout {
	t.Helper()
	var got intent.Rollout
	testenv.WaitFor(t, within, what, func() error {
		rs, err := rolloutsVia(via, plugin)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Seq > after {
				got = r
				return ok(r)
			}
		}
		return fmt.Errorf("no rollout of %s after #%d yet", plugin, after)
	})
	return got
}

// waitRolloutStarted waits for plugin's first rollout after seq after to
// be recorded.
func waitRolloutStarted(t testing.TB, via []*ClusterAgent, plugin string, after int64, within time.Duration) intent.Rollout {
	t.Helper()
	return waitRolloutOf(t, via, plugin, after, within, "a rollout of "+plugin, func(intent.Rollout) error { return nil })
}

// waitRolloutDone waits for plugin's first rollout after seq after to
// finish (completed, rolled back or superseded) and returns it.
func waitRolloutDone(t testing.TB, via []*ClusterAgent, plugin string, after int64, within time.Duration) intent.Rollout {
	t.Helper()
	return waitRolloutOf(t, via, plugin, after, within, "the rollout of "+plugin+" to finish", func(r intent.Rollout) error {
		if !r.Done() {
			return fmt.Errorf("rollout %s is %s: %s", r.ID, r.State, domainPhases(r))
		}
		return nil
	})
}

// domainPhases is "ud1 done, ud2 updating, ..." of r.
func domainPhases(r intent.Rollout) string {
	var s []string
	for _, d := range r.Domains {
		s = append(s, d.Name+" "+d.Phase+"@"+d.Version)
	}
	return strings.Join(s, ", ")
}

// rolloutDomain is r's domain named name.
func rolloutDomain(r intent.Rollout, name string) (intent.RolloutDomain, bool) {
	for _, d := range r.Domains {
		if d.Name == name {
			return d, true
		}
	}
	return intent.RolloutDomain{}, false
}

// checkDomainOrder checks that r lists the domains want in that order
// and that each of them started after the one before it finished.
func checkDomainOrder(t testing.TB, r intent.Rollout, want []string) {
	t.Helper()
	var names []string
	for _, d := range r.Domains {
		names = append(names, d.Name)
	}
	if !slices.Equal(names, want) {
		t.Errorf("rollout %s lists domains %v, want %v", r.ID, names, want)
	}
	var prev intent.RolloutDomain
	for i, name := range want {
		d, ok := rolloutDomain(r, name)
		if !ok {
			continue
		}
		if d.Started.IsZero() || d.Finished.IsZero() {
			t.Errorf("rollout %s: domain %s started %v, finished %v", r.ID, name, d.Started, d.Finished)
			continue
		}
		if i > 0 && d.Started.Before(prev.Finished) {
			t.Errorf("rollout %s: domain %s started at %v, before %s finished at %v", r.ID, name,
				d.Started.Format(time.StampMilli), prev.Name, prev.Finished.Format(time.StampMilli))
		}
		prev = d
	}
}

// logRollout logs r's figures: total time, each domain's, the failure.
func logRollout(t testing.TB, r intent.Rollout) {
	t.Helper()
	end := r.Finished
	if end.IsZero() {
		end = r.Updated
	}
	t.Logf("rollout %s %s → %s (%s): %s in %v; failure %q (node %q); pending %v", r.ID, r.From, r.To, r.Trigger, r.State,
		end.Sub(r.Created).Round(time.Millisecond), r.Failure, r.FailedNode, r.Pending)
	for _, d := range r.Domains {
		took := "-"
		if !d.Started.IsZero() && !d.Finished.IsZero() {
			took = d.Finished.Sub(d.Started).Round(time.Millisecond).String()
		}
		var nodes []string
		for _, n := range d.Nodes {
			nodes = append(nodes, fmt.Sprintf("%s %s %s %s", n.Name, n.Phase, n.Version, n.Reason))
		}
		t.Logf("  %s %s %s → %s: %s [%s]", d.Name, d.Phase, d.From, d.Version, took, strings.Join(nodes, "; "))
	}
}

// clusterEvents reads plugin's events (every node's) through a, oldest
// first.
func clusterEvents(t testing.TB, a *ClusterAgent, plugin string) []*operatorv1.PluginEvent {
	t.Helper()
	var evs []*operatorv1.PluginEvent
	testenv.WaitFor(t, 10*time.Second, plugin+"'s events", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := a.Operator().ListEvents(ctx, &operatorv1.ListEventsRequest{Name: plugin, Limit: 5000})
		if err != nil {
			return err
		}
		evs = resp.GetEvents()
		return nil
	})
	return evs
}

// eventNodes is the nodes of the events of type typ with version, after
// since, in the order of their first such event.
func eventNodes(evs []*operatorv1.PluginEvent, typ, version string, since time.Time) []string {
	evs = slices.Clone(evs)
	slices.SortStableFunc(evs, func(a, b *operatorv1.PluginEvent) int { return a.GetTime().AsTime().Compare(b.GetTime().AsTime()) })
	var nodes []string
	for _, e := range evs {
		if e.GetType() == typ && e.GetVersion() == version && !e.GetTime().AsTime().Before(since) && !slices.Contains(nodes, e.GetNode()) {
			nodes = append(nodes, e.GetNode())
		}
	}
	return nodes
}

// formatEvents is evs one a line, for a failure message.
func formatEvents(evs []*operatorv1.PluginEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s %s %s %s: %s\n", e.GetTime().AsTime().Format("15:04:05.000"), e.GetNode(), e.GetVersion(), e.GetType(), e.GetReason())
	}
	return b.String()
}

// pluginHistory reads plugin's history through a.
func pluginHistory(t testing.TB, a *ClusterAgent, plugin string) []*operatorv1.HistoryRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := a.Operator().GetHistory(ctx, &operatorv1.GetHistoryRequest{Name: plugin})
	if err != nil {
		t.Fatalf("history of %s through %s: %v", plugin, a.Node, err)
	}
	return resp.GetRecords()
}

// versionFailures reads plugin's cluster-wide version failures through a,
// by version.
func versionFailures(t testing.TB, a *ClusterAgent, plugin string) map[string]intent.VersionFailure {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := a.Store().List(ctx, &storev1.ListRequest{Namespace: "_sys", Prefix: []byte(intent.PrefixVersionFail + plugin + "/")})
	if err != nil {
		t.Fatalf("version failures of %s through %s: %v", plugin, a.Node, err)
	}
	out := map[string]intent.VersionFailure{}
	for _, kv := range resp.GetKvs() {
		it, err := intent.Decode[intent.VersionFailure](kv)
		if err != nil {
			t.Fatal(err)
		}
		out[it.Value.Version] = it.Value
	}
	return out
}

// waitServingOnly waits until every node of nodes serves plugin at version
// (running, healthy, alive) and no other instance of it runs on them.
func waitServingOnly(t testing.TB, via *ClusterAgent, plugin, version string, nodes []string, within time.Duration) {
	t.Helper()
	testenv.WaitFor(t, within, fmt.Sprintf("%s %s serving alone on %v", plugin, version, nodes), func() error {
		s, err := placedStatusOf(via, plugin)
		if err != nil {
			return err
		}
		return servingOnly(s, version, nodes)
	})
}

// servingOnly checks that every node of nodes serves s's plugin at version
// and runs no other instance of it.
func servingOnly(s placedStatus, version string, nodes []string) error {
	byNode := map[string][]placedInstance{}
	for _, in := range s.Cluster {
		byNode[in.Node] = append(byNode[in.Node], in)
	}
	for _, n := range nodes {
		ins := byNode[n]
		if len(ins) != 1 || ins[0].Version != version || ins[0].State != "running" || !ins[0].Healthy || ins[0].NodeStatus != "alive" {
			return fmt.Errorf("%s runs %+v", n, ins)
		}
	}
	return nil
}

// nodeNames is the agents' node names.
func nodeNames(agents []*ClusterAgent) []string {
	var ns []string
	for _, a := range agents {
		ns = append(ns, a.Node)
	}
	return ns
}
