package test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/rollout"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// The acceptance tests of issue #16 (cluster rollouts) on five agents in
// five upgrade domains (rollout_helpers_test.go), with steady calls
// through every node.

// rolloutLoadRate is the calls a second of the load through every node.
const rolloutLoadRate = 100

// startRolloutOf adds bundle on via (a newer bundle of an unpinned plugin
// of policy auto starts a rollout) and returns the rollout it started.
func startRolloutOf(t *testing.T, agents []*ClusterAgent, via *ClusterAgent, plugin, bundle string) (intent.Rollout, time.Time) {
	t.Helper()
	before := lastRolloutSeq(t, agents, plugin)
	start := time.Now()
	bundleAdd(t, via, bundle)
	r := waitRolloutStarted(t, agents, plugin, before, time.Minute)
	if r.Seq != before+1 {
		t.Errorf("the new rollout is #%d, want #%d", r.Seq, before+1)
	}
	return r, start
}

// checkLoad stops the load and fails the test if a call failed.
func checkLoad(t *testing.T, l *echoLoad) echoLoadResult {
	t.Helper()
	res := l.Stop()
	t.Logf("load at %d/s through every node: %v", rolloutLoadRate, res)
	if res.Failed != 0 {
		t.Errorf("%d calls failed:\n%s", res.Failed, strings.Join(res.Failures, "\n"))
	}
	return res
}

// A healthy every-node rollout moves one upgrade domain at a time, in
// order ud1..ud5, as its record and the plugin's events show, and no call
// through any node fails.
func TestRolloutHealthyEveryNode(t *testing.T) {
	agents := newRolloutCluster(t)
	v1 := rolloutBundle(t, rolloutPlugin{Name: "echo", Version: "1.0.0", MinHealthy: time.Second})
	v2 := rolloutBundle(t, rolloutPlugin{Name: "echo", Version: "2.0.0", MinHealthy: time.Second})
	bundleAdd(t, agents[0], v1)
	waitServingOnly(t, agents[0], "echo", "1.0.0", nodeNames(agents), time.Minute)
	if rs, err := rolloutsVia(agents, "echo"); err != nil || len(rs) != 0 {
		t.Fatalf("the first install is not a rollout; rollouts %+v (%v)", rs, err)
	}

	load := startEchoLoad(t, agents, rolloutLoadRate, 5*time.Minute)
	waitLoadAnswers(t, load, 2*rolloutLoadRate, 30*time.Second)
	r, start := startRolloutOf(t, agents, agents[1], "echo", v2)
	r = waitRolloutDone(t, agents, "echo", r.Seq-1, 3*time.Minute)
	took := time.Since(start)
	waitServingOnly(t, agents[2], "echo", "2.0.0", nodeNames(agents), time.Minute)
	waitLoadAnswers(t, load, rolloutLoadRate, 30*time.Second)
	res := checkLoad(t, load)
	logRollout(t, r)
	t.Logf("bundle add to every node serving 2.0.0 alone: %v", took.Round(time.Millisecond))

	if r.State != intent.RolloutCompleted || r.From != "1.0.0" || r.To != "2.0.0" || r.Trigger != intent.TriggerBundle {
		t.Errorf("rollout %s: %s %s → %s (%s), want completed 1.0.0 → 2.0.0 (bundle); failure %q", r.ID, r.State, r.From, r.To, r.Trigger, r.Failure)
	}
	if len(r.Pending) != 0 || r.Failure != "" {
		t.Errorf("rollout %s: pending %v, failure %q", r.ID, r.Pending, r.Failure)
	}
	checkDomainOrder(t, r, rolloutDomains)
	for _, d := range r.Domains {
		if d.Phase != intent.DomainDone || d.Version != "2.0.0" || d.From != "1.0.0" {
			t.Errorf("domain %s: %s %s → %s, want done 1.0.0 → 2.0.0", d.Name, d.Phase, d.From, d.Version)
		}
		for _, n := range d.Nodes {
			if n.Phase != intent.NodeHealthy || rolloutDomainOf[n.Name] != d.Name {
				t.Errorf("domain %s: node %s %s (%s)", d.Name, n.Name, n.Phase, n.Reason)
			}
		}
		if len(d.Nodes) != 1 {
			t.Errorf("domain %s lists nodes %+v, want its one node", d.Name, d.Nodes)
		}
	}

	// The plugin's events: each node swapped to 2.0.0 once, in domain
	// order, and each began its swap after the one before had swapped.
	evs := eventsWhen(t, agents[3], "echo", "every node's swap to 2.0.0 in the events", eventsOf("swapped", "2.0.0", 5, start))
	want := []string{"n1", "n2", "n3", "n4", "n5"}
	if got := eventNodes(evs, "swap-started", "2.0.0", start); !slices.Equal(got, want) {
		t.Errorf("nodes began swapping to 2.0.0 in the order %v, want %v; events:\n%s", got, want, formatEvents(evs))
	}
	if got := eventNodes(evs, "swapped", "2.0.0", start); !slices.Equal(got, want) {
		t.Errorf("nodes swapped to 2.0.0 in the order %v, want %v; events:\n%s", got, want, formatEvents(evs))
	}
	checkSwapsAfterPreviousDomain(t, r, evs, "2.0.0", want, start)
	logNodeTimes(t, r, evs, "2.0.0", start)
	// The controller's events: each domain updating, then done, one after
	// the other.
	checkEventSequence(t, evs, start, []string{rollout.EventDomainUpdating, rollout.EventDomainDone}, 5)
	// Every node answered calls, and each ended on 2.0.0.
	for _, a := range agents {
		if res.Versions[a.Node]["2.0.0"] == 0 {
			t.Errorf("no call through %s was answered by 2.0.0: %v", a.Node, res.Versions[a.Node])
		}
	}
}

// logNodeTimes logs, for each node of r, how long its swap to version
// took (swap-started to swapped) and how long after it its domain was
// done: the node's swap and the rollout's gate.
func logNodeTimes(t *testing.T, r intent.Rollout, evs []*operatorv1.PluginEvent, version string, since time.Time) {
	t.Helper()
	started, swapped := map[string]time.Time{}, map[string]time.Time{}
	for _, e := range sortedEvents(evs) {
		at := e.GetTime().AsTime()
		if e.GetVersion() != version || at.Before(since) {
			continue
		}
		if _, ok := started[e.GetNode()]; !ok && e.GetType() == "swap-started" {
			started[e.GetNode()] = at
		}
		if _, ok := swapped[e.GetNode()]; !ok && e.GetType() == "swapped" {
			swapped[e.GetNode()] = at
		}
	}
	for _, d := range r.Domains {
		for _, n := range d.Nodes {
			if s, ok := started[n.Name]; ok && !swapped[n.Name].IsZero() && !d.Finished.IsZero() {
				t.Logf("  %s %s: domain start to swap start %v, swap %v, swapped to domain done %v", d.Name, n.Name,
					s.Sub(d.Started).Round(time.Millisecond), swapped[n.Name].Sub(s).Round(time.Millisecond), d.Finished.Sub(swapped[n.Name]).Round(time.Millisecond))
			}
		}
	}
}

// checkEventSequence checks that the events of the types in pair after
// since come as pair n times over (a domain's step and its end, domain
// after domain).
func checkEventSequence(t *testing.T, evs []*operatorv1.PluginEvent, since time.Time, pair []string, n int) {
	t.Helper()
	var got, want []string
	for _, e := range sortedEvents(evs) {
		if slices.Contains(pair, e.GetType()) && !e.GetTime().AsTime().Before(since) {
			got = append(got, e.GetType())
		}
	}
	for range n {
		want = append(want, pair...)
	}
	if !slices.Equal(got, want) {
		t.Errorf("the rollout's events are %v, want %v; events:\n%s", got, want, formatEvents(evs))
	}
}

// sortedEvents is evs by time.
func sortedEvents(evs []*operatorv1.PluginEvent) []*operatorv1.PluginEvent {
	evs = slices.Clone(evs)
	slices.SortStableFunc(evs, func(a, b *operatorv1.PluginEvent) int { return a.GetTime().AsTime().Compare(b.GetTime().AsTime()) })
	return evs
}

// checkSwapsAfterPreviousDomain checks that each node of order began its
// swap to version (after since) once, and not before the previous node's
// domain was done in r (the rollout's gate is on the new version serving
// healthy; the node's own swap ends later, once the old one drained).
func checkSwapsAfterPreviousDomain(t *testing.T, r intent.Rollout, evs []*operatorv1.PluginEvent, version string, order []string, since time.Time) {
	t.Helper()
	started := map[string][]time.Time{}
	for _, e := range evs {
		if at := e.GetTime().AsTime(); e.GetVersion() == version && !at.Before(since) && e.GetType() == "swap-started" {
			started[e.GetNode()] = append(started[e.GetNode()], at)
		}
	}
	for i, n := range order {
		if len(started[n]) != 1 {
			t.Errorf("%s began swapping to %s %d times", n, version, len(started[n]))
			continue
		}
		if i == 0 {
			continue
		}
		prev, _ := rolloutDomain(r, rolloutDomainOf[order[i-1]])
		if started[n][0].Before(prev.Finished) {
			t.Errorf("%s began swapping to %s at %s, before %s was done (%s)", n, version,
				started[n][0].Format("15:04:05.000"), prev.Name, prev.Finished.Format("15:04:05.000"))
		}
	}
}

// eventsWhen reads plugin's events through a until ok accepts them (a
// node records its events in the store a moment after they happen).
func eventsWhen(t *testing.T, a *ClusterAgent, plugin, what string, ok func(evs []*operatorv1.PluginEvent) error) []*operatorv1.PluginEvent {
	t.Helper()
	var evs []*operatorv1.PluginEvent
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs = clusterEvents(t, a, plugin)
		if err = ok(evs); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("waiting for %s: %v; events:\n%s", what, err, formatEvents(evs))
	}
	return evs
}

// eventsOf is an eventsWhen condition: n events of type typ and version
// after since.
func eventsOf(typ, version string, n int, since time.Time) func([]*operatorv1.PluginEvent) error {
	return func(evs []*operatorv1.PluginEvent) error {
		got := 0
		for _, e := range evs {
			if e.GetType() == typ && (version == "" || e.GetVersion() == version) && !e.GetTime().AsTime().Before(since) {
				got++
			}
		}
		if got < n {
			return fmt.Errorf("%d %s events of %s, want %d", got, typ, version, n)
		}
		return nil
	}
}

// A target that is never healthy on the third domain's node: the rollout
// rolls domains 2 and 1 back, newest first, every node ends on the old
// version, no call fails, the history and the version's cluster-wide
// failure name the node and why, and restarting agents does not try the
// version again.
func TestRolloutRollsBackUnhealthyThirdDomain(t *testing.T) {
	agents := newRolloutCluster(t)
	byName := agentsByName(agents)
	// A node's swap falls back after 5 s without health; the rollout's
	// gate, which counts from its domain's start (bundle fetch included),
	// allows 20 s.
	const swapDeadline = 5 * time.Second
	v1 := rolloutBundle(t, rolloutPlugin{Name: "echo", Version: "1.0.0", MinHealthy: time.Second, SwapDeadline: swapDeadline})
	bad := badRolloutTarget("echo", "2.0.0", 0, "n3")
	bad.MinHealthy, bad.SwapDeadline = time.Second, swapDeadline
	v2 := rolloutBundle(t, bad)
	bundleAdd(t, agents[0], v1)
	waitServingOnly(t, agents[0], "echo", "1.0.0", nodeNames(agents), time.Minute)

	load := startEchoLoad(t, agents, rolloutLoadRate, 5*time.Minute)
	waitLoadAnswers(t, load, 2*rolloutLoadRate, 30*time.Second)
	r, start := startRolloutOf(t, agents, agents[4], "echo", v2)
	running := waitRolloutOf(t, agents, "echo", r.Seq-1, 3*time.Minute, "the rollout to roll back", func(r intent.Rollout) error {
		if !r.Back() {
			return fmt.Errorf("rollout %s is %s: %s", r.ID, r.State, domainPhases(r))
		}
		return nil
	})
	detected := time.Since(start)
	r = waitRolloutDone(t, agents, "echo", r.Seq-1, 3*time.Minute)
	rolledBack := time.Since(start)
	waitServingOnly(t, agents[1], "echo", "1.0.0", nodeNames(agents), time.Minute)
	waitLoadAnswers(t, load, rolloutLoadRate, 30*time.Second)
	checkLoad(t, load)
	logRollout(t, r)
	t.Logf("bundle add to rolling back: %v (%s); to rolled back: %v", detected.Round(time.Millisecond), running.Failure, rolledBack.Round(time.Millisecond))

	if r.State != intent.RolloutRolledBack || r.From != "1.0.0" || r.To != "2.0.0" {
		t.Errorf("rollout %s: %s %s → %s, want rolled_back 1.0.0 → 2.0.0", r.ID, r.State, r.From, r.To)
	}
	if r.FailedNode != "n3" || r.Failure == "" {
		t.Errorf("rollout %s: failed node %q, failure %q; want n3 and why", r.ID, r.FailedNode, r.Failure)
	}
	for _, d := range r.Domains {
		switch d.Name {
		case "ud1", "ud2", "ud3":
			if d.Phase != intent.DomainRolledBack || d.Version != "1.0.0" || d.Started.IsZero() {
				t.Errorf("domain %s: %s on %s (started %v), want rolled_back on 1.0.0", d.Name, d.Phase, d.Version, d.Started)
			}
		default:
			if d.Phase != intent.DomainWaiting || d.Version != "1.0.0" || !d.Started.IsZero() {
				t.Errorf("domain %s: %s on %s (started %v), want waiting on 1.0.0, never started", d.Name, d.Phase, d.Version, d.Started)
			}
		}
	}
	// Newest first: ud3 (where it failed), then ud2, then ud1, each once
	// the one before was back.
	var prev intent.RolloutDomain
	for _, name := range []string{"ud3", "ud2", "ud1"} {
		d, _ := rolloutDomain(r, name)
		if d.Finished.IsZero() || (prev.Name != "" && d.Finished.Before(prev.Finished)) {
			t.Errorf("domain %s was back on 1.0.0 at %v, %s at %v: want newest first", name, d.Finished, prev.Name, prev.Finished)
		}
		prev = d
	}
	// The events: n1 and n2 swapped to 2.0.0 in order, n3 never served it
	// and n4, n5 never began; then n2 swapped back before n1.
	evs := eventsWhen(t, agents[2], "echo", "n1's and n2's swaps back in the events", func(evs []*operatorv1.PluginEvent) error {
		if got := eventNodes(evs, "swapped", "1.0.0", start); !slices.Contains(got, "n1") || !slices.Contains(got, "n2") {
			return fmt.Errorf("swapped back to 1.0.0: %v", got)
		}
		return eventsOf(rollout.EventRolledBack, "", 1, start)(evs)
	})
	if got := eventNodes(evs, "swapped", "2.0.0", start); !slices.Equal(got, []string{"n1", "n2"}) {
		t.Errorf("nodes swapped to 2.0.0 in the order %v, want [n1 n2]; events:\n%s", got, formatEvents(evs))
	}
	if got := eventNodes(evs, "swap-started", "2.0.0", start); !slices.Equal(got, []string{"n1", "n2", "n3"}) {
		t.Errorf("nodes began swapping to 2.0.0 in the order %v, want [n1 n2 n3]; events:\n%s", got, formatEvents(evs))
	}
	var back []string
	for _, n := range eventNodes(evs, "swap-started", "1.0.0", start) {
		if n != "n3" {
			back = append(back, n)
		}
	}
	if !slices.Equal(back, []string{"n2", "n1"}) {
		t.Errorf("nodes began swapping back to 1.0.0 in the order %v, want [n2 n1] (newest domain first); events:\n%s", back, formatEvents(evs))
	}
	checkRolledBackAfterFailure(t, evs, start)
	checkEventSequence(t, evs, start, []string{rollout.EventDomainRollback, rollout.EventDomainRolledBck}, 3)

	// The history names the node and why; the version failed cluster-wide.
	var hist []string
	named := false
	for _, h := range pluginHistory(t, agents[3], "echo") {
		hist = append(hist, fmt.Sprintf("%s %s %s→%s %s node=%s: %s", h.GetAction(), h.GetActor(), h.GetFromVersion(), h.GetToVersion(), h.GetOutcome(), h.GetNode(), h.GetReason()))
		if h.GetAction() == "rollout" && h.GetToVersion() == "2.0.0" && h.GetReason() != "" &&
			(h.GetNode() == "n3" || strings.Contains(h.GetReason(), "n3")) {
			named = true
		}
	}
	if !named {
		t.Errorf("no rollout record of the history names n3 and why:\n%s", strings.Join(hist, "\n"))
	}
	if out, errOut, code := agents[3].CLI("plugin", "history", "echo"); code != 0 || !strings.Contains(out, "n3") {
		t.Errorf("plugin history echo: exit %d, does not name n3:\n%s%s", code, out, errOut)
	}
	vf, ok := versionFailures(t, agents[4], "echo")["2.0.0"]
	if !ok || vf.Node != "n3" || vf.Rollout != r.ID || vf.Reason == "" {
		t.Errorf("echo 2.0.0's cluster-wide failure: %+v (found %v), want node n3, rollout %s and why", vf, ok, r.ID)
	}

	// Restart the failed node and the leader: neither they nor the new
	// leader try 2.0.0 again. The next rollout (to a healthy 3.0.0) is
	// the next record and starts from 1.0.0.
	restarted := time.Now()
	restart := []*ClusterAgent{byName["n3"]}
	if l := leaderOf(t, agents); l.Node != "n3" {
		restart = append(restart, l)
	}
	for _, a := range restart {
		a.Stop()
		a.Start()
		waitServingOnly(t, a, "echo", "1.0.0", nodeNames(agents), time.Minute)
	}
	v3 := rolloutBundle(t, rolloutPlugin{Name: "echo", Version: "3.0.0", MinHealthy: time.Second})
	next, _ := startRolloutOf(t, agents, agents[0], "echo", v3)
	if next.From != "1.0.0" || next.To != "3.0.0" {
		t.Errorf("the rollout after the restarts is %s %s → %s, want 1.0.0 → 3.0.0", next.ID, next.From, next.To)
	}
	next = waitRolloutDone(t, agents, "echo", next.Seq-1, 3*time.Minute)
	logRollout(t, next)
	if next.State != intent.RolloutCompleted {
		t.Errorf("rollout %s to 3.0.0 is %s (%s)", next.ID, next.State, next.Failure)
	}
	evs = eventsWhen(t, agents[0], "echo", "the rollout to 3.0.0 completed in the events", eventsOf(rollout.EventCompleted, "3.0.0", 1, restarted))
	for _, e := range evs {
		if e.GetVersion() == "2.0.0" && e.GetTime().AsTime().After(restarted) {
			t.Errorf("2.0.0 was tried again after the restarts: %s %s %s: %s", e.GetTime().AsTime().Format("15:04:05.000"), e.GetNode(), e.GetType(), e.GetReason())
		}
	}
}

// checkRolledBackAfterFailure checks that the rollout failed once and
// that no node began a swap back to 1.0.0 before.
func checkRolledBackAfterFailure(t *testing.T, evs []*operatorv1.PluginEvent, since time.Time) {
	t.Helper()
	var failed []time.Time
	for _, e := range evs {
		if e.GetType() == rollout.EventFailed && !e.GetTime().AsTime().Before(since) {
			failed = append(failed, e.GetTime().AsTime())
		}
	}
	if len(failed) != 1 {
		t.Errorf("%d %s events, want 1; events:\n%s", len(failed), rollout.EventFailed, formatEvents(evs))
		return
	}
	for _, e := range evs {
		if at := e.GetTime().AsTime(); e.GetType() == "swap-started" && e.GetVersion() == "1.0.0" && at.After(since) && at.Before(failed[0]) {
			t.Errorf("%s began swapping back at %s, before the rollout failed at %s", e.GetNode(), at.Format("15:04:05.000"), failed[0].Format("15:04:05.000"))
		}
	}
}

// The raft leader killed (kill -9) while a rollout runs: the new leader
// resumes it from the store, it completes once, and no domain is started
// twice (the record keeps each domain's start; each node began its swap
// once).
func TestRolloutResumesAfterLeaderKilled(t *testing.T) {
	agents := newRolloutCluster(t)
	v1 := rolloutBundle(t, rolloutPlugin{Name: "echo", Version: "1.0.0", MinHealthy: 2 * time.Second})
	v2 := rolloutBundle(t, rolloutPlugin{Name: "echo", Version: "2.0.0", MinHealthy: 2 * time.Second})
	bundleAdd(t, agents[0], v1)
	waitServingOnly(t, agents[0], "echo", "1.0.0", nodeNames(agents), time.Minute)

	r, start := startRolloutOf(t, agents, agents[0], "echo", v2)
	// Kill the leader once the first domain is done and the second
	// updating.
	before := waitRolloutOf(t, agents, "echo", r.Seq-1, 2*time.Minute, "ud1 done and ud2 updating", func(r intent.Rollout) error {
		if d1, _ := rolloutDomain(r, "ud1"); d1.Phase != intent.DomainDone {
			return fmt.Errorf("%s", domainPhases(r))
		}
		if d2, _ := rolloutDomain(r, "ud2"); d2.Phase != intent.DomainUpdating {
			return fmt.Errorf("%s", domainPhases(r))
		}
		return nil
	})
	leader := leaderOf(t, agents)
	killed := time.Now()
	leader.Kill9()
	rest := except(agents, leader.Node)
	next := leaderOf(t, rest)
	t.Logf("killed the leader %s with %s; %s leads %v later", leader.Node, domainPhases(before), next.Node, time.Since(killed).Round(time.Millisecond))
	leader.Start()

	r = waitRolloutDone(t, rest, "echo", r.Seq-1, 3*time.Minute)
	waitServingOnly(t, rest[0], "echo", "2.0.0", nodeNames(agents), time.Minute)
	logRollout(t, r)
	t.Logf("bundle add to every node serving 2.0.0 alone: %v", time.Since(start).Round(time.Millisecond))

	rs, err := rolloutsVia(agents, "echo")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Errorf("%d rollouts, want 1: %+v", len(rs), rs)
	}
	if r.State != intent.RolloutCompleted || r.To != "2.0.0" {
		t.Errorf("rollout %s: %s → %s (%s), want completed to 2.0.0", r.ID, r.State, r.To, r.Failure)
	}
	checkDomainOrder(t, r, rolloutDomains)
	// What the killed leader recorded stands: the domains it had done or
	// started keep their start (and finish).
	for _, d0 := range before.Domains {
		d, _ := rolloutDomain(r, d0.Name)
		if !d0.Started.IsZero() && !d.Started.Equal(d0.Started) {
			t.Errorf("domain %s started at %v before the kill and at %v after: started again", d0.Name, d0.Started, d.Started)
		}
		if !d0.Finished.IsZero() && !d.Finished.Equal(d0.Finished) {
			t.Errorf("domain %s finished at %v before the kill and at %v after", d0.Name, d0.Finished, d.Finished)
		}
	}
	// Each node but the killed one began its swap to 2.0.0 once, in
	// domain order (the killed one may start 2.0.0 afresh on its return).
	evs := eventsWhen(t, rest[0], "echo", "the rollout completed in the events", eventsOf(rollout.EventCompleted, "2.0.0", 1, start))
	var order []string
	for _, n := range []string{"n1", "n2", "n3", "n4", "n5"} {
		if n != leader.Node {
			order = append(order, n)
		}
	}
	if got := eventNodes(evs, "swap-started", "2.0.0", start); !slices.Equal(slices.DeleteFunc(got, func(n string) bool { return n == leader.Node }), order) {
		t.Errorf("nodes began swapping to 2.0.0 in the order %v, want %v; events:\n%s", got, order, formatEvents(evs))
	}
	checkSwapsAfterPreviousDomain(t, r, evs, "2.0.0", order, start)
	logNodeTimes(t, r, evs, "2.0.0", start)
	// The controller's events: one start and one end; no domain began
	// twice (the killed leader may have died before writing its last
	// event, never after a new leader wrote one again).
	counts := map[string]int{}
	for _, e := range evs {
		if !e.GetTime().AsTime().Before(start) {
			counts[e.GetType()]++
		}
	}
	t.Logf("events by type: %v", counts)
	if counts[rollout.EventStarted] > 1 || counts[rollout.EventCompleted] != 1 || counts[rollout.EventDomainUpdating] > len(rolloutDomains) {
		t.Errorf("%d %s, %d %s and %d %s events, want at most 1, 1 and at most %d; events:\n%s", counts[rollout.EventStarted], rollout.EventStarted,
			counts[rollout.EventCompleted], rollout.EventCompleted, counts[rollout.EventDomainUpdating], rollout.EventDomainUpdating, len(rolloutDomains), formatEvents(evs))
	}
}
