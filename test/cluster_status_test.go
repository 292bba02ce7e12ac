package test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
	counterv1 "github.com/plughost/plughost/plugins/counter/proto/counter/v1"
)

// clusterInstanceJSON is one node's instance in 'plugin list|status
// -format json'.
type clusterInstanceJSON struct {
	Node       string `json:"node"`
	Version    string `json:"version"`
	Role       string `json:"role"`
	Epoch      int64  `json:"epoch"`
	State      string `json:"state"`
	Healthy    bool   `json:"healthy"`
	Since      string `json:"since"`
	NodeStatus string `json:"node_status"`
}

type pluginListJSON struct {
	Name    string                `json:"name"`
	Cluster []clusterInstanceJSON `json:"cluster"`
}

// clusterInstances runs 'plugin list -format json' on a and returns the
// instances of plugin it shows, by node.
func clusterInstances(a *Agent, plugin string) (map[string]clusterInstanceJSON, error) {
	out, errOut, code := a.CLI("plugin", "list", "-format", "json")
	if code != 0 {
		return nil, fmt.Errorf("plugin list on %s: exit %d: %s", a.Node, code, errOut)
	}
	var list []pluginListJSON
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("plugin list on %s printed %q: %v", a.Node, out, err)
	}
	for _, p := range list {
		if p.Name == plugin {
			byNode := map[string]clusterInstanceJSON{}
			for _, in := range p.Cluster {
				byNode[in.Node] = in
			}
			return byNode, nil
		}
	}
	return nil, fmt.Errorf("plugin list on %s has no %s:\n%s", a.Node, plugin, out)
}

// wantInstances checks that instances are exactly nodes, each running
// version, healthy, on a node gossip sees alive.
func wantInstances(instances map[string]clusterInstanceJSON, version string, nodes ...string) error {
	var have []string
	for n := range instances {
		have = append(have, n)
	}
	slices.Sort(have)
	if !slices.Equal(have, nodes) {
		return fmt.Errorf("instances on %v, want on %v", have, nodes)
	}
	for _, in := range instances {
		if in.Version != version || in.State != "running" || !in.Healthy || in.NodeStatus != "alive" || in.Since == "-" {
			return fmt.Errorf("instance %+v, want %s running, healthy, on an alive node, with a since", in, version)
		}
	}
	return nil
}

// TestClusterStatusShowsEveryNode: 'plugin list' and 'plugin status' on
// every node show the plugin's instances on all three nodes, from the
// nodes' observations; a node whose plugin stops (the node is drained, or
// the agent is stopped) disappears from them, and a node that starts again
// removes its records of plugins it no longer runs.
func TestClusterStatusShowsEveryNode(t *testing.T) {
	agents := NewCluster(t, 3)
	for _, a := range agents {
		a.Drop(bundlePath("echo", "1.0.0"))
	}
	for _, a := range agents {
		a.WaitRunning("echo", "1.0.0")
	}
	for _, a := range agents {
		testenv.WaitFor(t, 20*time.Second, "plugin list on "+a.Node+" to show echo on n1, n2 and n3", func() error {
			ins, err := clusterInstances(a.Agent, "echo")
			if err != nil {
				return err
			}
			return wantInstances(ins, "1.0.0", "n1", "n2", "n3")
		})
		out, errOut, code := a.CLI("plugin", "status", "echo")
		if code != 0 {
			t.Fatalf("plugin status echo on %s: exit %d: %s", a.Node, code, errOut)
		}
		t.Logf("plugin status echo on %s:\n%s", a.Node, out)
		_, table, ok := strings.Cut(out, "Instances in the cluster:\n")
		if !ok {
			t.Fatalf("plugin status on %s has no cluster instances:\n%s", a.Node, out)
		}
		for _, n := range []string{"n1", "n2", "n3"} {
			if !slices.ContainsFunc(strings.Split(table, "\n"), func(line string) bool {
				f := strings.Fields(line)
				return len(f) >= 5 && f[0] == n && f[1] == "1.0.0" && f[3] == "running" && f[4] == "healthy"
			}) {
				t.Fatalf("plugin status on %s lacks a line 'n%s 1.0.0 - running healthy':\n%s", a.Node, n, out)
			}
		}
		// This node's own instance is still shown in detail.
		if !strings.Contains(out, "Instance echo-1_0_0-") || !strings.Contains(out, " on "+a.Node+"\n") {
			t.Fatalf("plugin status on %s lacks its own instance's detail:\n%s", a.Node, out)
		}
		text, _, _ := a.CLI("plugin", "list")
		for _, col := range []string{"NODE", "VERSION", "ROLE", "STATE", "HEALTH", "SINCE", "n1", "n2", "n3"} {
			if !strings.Contains(text, col) {
				t.Fatalf("plugin list on %s lacks %q:\n%s", a.Node, col, text)
			}
		}
	}

	// n2 is drained (the operator's node/n2 record, as 'plughost node
	// drain n2' writes it): echo stops there and leaves its observations,
	// on every node; made eligible again, it comes back.
	setEligible := func(node string, eligible bool) {
		t.Helper()
		rec := fmt.Sprintf(`{"node":%q,"eligible":%t,"since":%q,"actor":"test"}`, node, eligible, time.Now().UTC().Format(time.RFC3339Nano))
		if out, errOut, code := agents[0].CLI("store", "put", "-ns", "_sys", "node/"+node, rec); code != 0 {
			t.Fatalf("store put node/%s: exit %d: %s%s", node, code, out, errOut)
		}
	}
	setEligible("n2", false)
	for _, a := range agents {
		testenv.WaitFor(t, 30*time.Second, "plugin list on "+a.Node+" to show echo on n1 and n3 only", func() error {
			ins, err := clusterInstances(a.Agent, "echo")
			if err != nil {
				return err
			}
			return wantInstances(ins, "1.0.0", "n1", "n3")
		})
	}
	if out, _, _ := agents[1].CLI("plugin", "status", "echo"); !strings.Contains(out, "State:     stopped") {
		t.Fatalf("plugin status on the drained n2:\n%s", out)
	}
	if pids := agents[1].PluginProcesses(); len(pids) != 0 {
		t.Fatalf("the drained n2 still runs plugin processes %v", pids)
	}
	setEligible("n2", true)
	agents[1].WaitRunning("echo", "1.0.0")
	testenv.WaitFor(t, 30*time.Second, "echo to be back on n2", func() error {
		ins, err := clusterInstances(agents[0].Agent, "echo")
		if err != nil {
			return err
		}
		return wantInstances(ins, "1.0.0", "n1", "n2", "n3")
	})

	// n3 stops: its plugin stops with it, and its record goes.
	n3 := agents[2]
	n3.Stop()
	for _, a := range agents[:2] {
		testenv.WaitFor(t, 20*time.Second, "plugin list on "+a.Node+" to show echo on n1 and n2 only", func() error {
			ins, err := clusterInstances(a.Agent, "echo")
			if err != nil {
				return err
			}
			return wantInstances(ins, "1.0.0", "n1", "n2")
		})
	}

	// A record of n3 for a plugin it does not run (left by a crash, say)
	// is removed when n3 starts again; its echo comes back.
	const stale = `{"node":"n3","plugin":"gone","version":"1.0.0","state":"running","healthy":true,"since":"2026-01-01T00:00:00Z","restarts":0}`
	if out, errOut, code := agents[0].CLI("store", "put", "-ns", "_sys", "observe/n3/gone", stale); code != 0 {
		t.Fatalf("store put: exit %d: %s%s", code, out, errOut)
	}
	n3.Start()
	n3.WaitRunning("echo", "1.0.0")
	testenv.WaitFor(t, 30*time.Second, "n3's stale record to be removed and its echo to be back", func() error {
		if out, _, code := agents[0].CLI("store", "get", "-ns", "_sys", "observe/n3/gone"); code == 0 {
			return fmt.Errorf("observe/n3/gone is still there: %s", out)
		}
		ins, err := clusterInstances(agents[0].Agent, "echo")
		if err != nil {
			return err
		}
		return wantInstances(ins, "1.0.0", "n1", "n2", "n3")
	})
}

// TestClusterPinFromANodeWithoutTheInstance: a singleton runs on one node
// of three; every node's 'plugin list' shows that one active instance with
// its epoch, and a pin and a rollback made through a node that does not
// run it wait for the swap on the node that does.
func TestClusterPinFromANodeWithoutTheInstance(t *testing.T) {
	agents := NewCluster(t, 3)
	for _, v := range []string{"1.0.0", "1.1.0"} {
		b := withPlacement(t, "echo", v, map[string]any{"mode": "singleton"})
		if _, errOut, code := agents[0].CLI("bundle", "add", b); code != 0 {
			t.Fatalf("bundle add echo %s: %s", v, errOut)
		}
	}
	// one waits until every node's list shows echo's single instance at
	// version, active with an epoch, and returns its node.
	one := func(version string) string {
		t.Helper()
		var node string
		for _, a := range agents {
			testenv.WaitFor(t, 60*time.Second, "plugin list on "+a.Node+" to show one active echo "+version, func() error {
				ins, err := clusterInstances(a.Agent, "echo")
				if err != nil {
					return err
				}
				if len(ins) != 1 {
					return fmt.Errorf("%d instances: %+v", len(ins), ins)
				}
				for n, in := range ins {
					if err := wantInstances(ins, version, n); err != nil {
						return err
					}
					if in.Role != "active" || in.Epoch <= 0 {
						return fmt.Errorf("instance %+v, want active with an epoch", in)
					}
					if node != "" && n != node {
						return fmt.Errorf("echo on %s, %s said %s", n, agents[0].Node, node)
					}
					node = n
				}
				return nil
			})
		}
		return node
	}
	active := one("1.1.0")
	var other *ClusterAgent
	for _, a := range agents {
		if a.Node != active {
			other = a
			break
		}
	}
	out, _, _ := other.CLI("plugin", "status", "echo")
	t.Logf("plugin status echo on %s:\n%s", other.Node, out)
	if !strings.Contains(out, "State:     stopped") || !strings.Contains(out, active+" ") {
		t.Fatalf("plugin status on %s, which does not run echo:\n%s", other.Node, out)
	}

	// A pin of a plugin that runs follows its rollout (area: surface).
	out, errOut, code := other.CLI("plugin", "pin", "echo", "1.0.0")
	if code != 0 || !strings.Contains(out, "node "+active+" healthy on 1.0.0") || !strings.Contains(out, "] completed") {
		t.Fatalf("pin through %s: exit %d\n%s%s", other.Node, code, out, errOut)
	}
	if got := one("1.0.0"); got != active {
		t.Fatalf("echo moved from %s to %s on a pin", active, got)
	}
	out, errOut, code = other.CLI("plugin", "rollback", "echo")
	if code != 0 || !strings.Contains(out, "node "+active+" healthy on 1.1.0") || !strings.Contains(out, "] completed") {
		t.Fatalf("rollback through %s: exit %d\n%s%s", other.Node, code, out, errOut)
	}
	one("1.1.0")
}

// TestClusterSingletonStandbyIsNotRouted: a singleton with a warm standby
// shows as one active (with its epoch) and one standby in every node's
// 'plugin list'; the standby is healthy but gets no calls: increments
// through its node (which reach the store only from the active, the
// standby's writes being refused) all succeed, and all count.
func TestClusterSingletonStandbyIsNotRouted(t *testing.T) {
	agents := NewCluster(t, 3)
	counter := withPlacement(t, "counter", "1.0.0", map[string]any{"mode": "singleton", "standby": 1})
	if _, errOut, code := agents[0].CLI("bundle", "add", counter); code != 0 {
		t.Fatalf("bundle add counter: %s", errOut)
	}
	var active, standby string
	for _, a := range agents {
		testenv.WaitFor(t, 60*time.Second, "plugin list on "+a.Node+" to show counter's active and standby", func() error {
			ins, err := clusterInstances(a.Agent, "counter")
			if err != nil {
				return err
			}
			active, standby = "", ""
			for n, in := range ins {
				if in.Version != "1.0.0" || in.State != "running" || !in.Healthy {
					return fmt.Errorf("instance %+v", in)
				}
				switch {
				case in.Role == "active" && in.Epoch > 0:
					active = n
				case in.Role == "standby" && in.Epoch == 0:
					standby = n
				default:
					return fmt.Errorf("instance %+v", in)
				}
			}
			if len(ins) != 2 || active == "" || standby == "" {
				return fmt.Errorf("instances %+v, want one active and one standby", ins)
			}
			return nil
		})
	}
	t.Logf("counter active on %s, standby on %s", active, standby)
	var through *ClusterAgent
	for _, a := range agents {
		if a.Node == standby {
			through = a
		}
	}
	const n = 20
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := counterv1.NewCounterServiceClient(through.Conn()).Increment(ctx, &counterv1.IncrementRequest{Name: "standby", Delta: 1})
		cancel()
		if err != nil {
			t.Fatalf("increment %d through the standby's node %s: %v", i, standby, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := counterv1.NewCounterServiceClient(agents[0].Conn()).Get(ctx, &counterv1.GetRequest{Name: "standby"})
	if err != nil || resp.GetValue() != n {
		t.Fatalf("counter = %d (%v), want %d", resp.GetValue(), err, n)
	}
}
