package test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPinFollowsTheClusterRollout: on three agents in three upgrade
// domains, `plugin pin` of a plugin that runs follows the cluster rollout
// it starts, from any node, a line a change, and exits 0 once it
// completes; a pin of a version that is never healthy on n2 exits 1 once
// the rollout rolled back, naming n2 and why; `plugin rollback` goes back
// to the from version of the newest completed rollout; -detach returns at
// once; a pin that changes nothing says so. The first install is no
// rollout.
func TestPinFollowsTheClusterRollout(t *testing.T) {
	agents := NewClusterEach(t, 3, func(i int) []string { return []string{"-upgrade-domain", fmt.Sprint("ud", i+1)} })
	nodes := nodeNames(agents)
	v1 := rolloutBundle(t, rolloutPlugin{Name: "echo", Version: "1.0.0"})
	v2 := rolloutBundle(t, rolloutPlugin{Name: "echo", Version: "1.1.0"})
	bad := rolloutBundle(t, badRolloutTarget("echo", "1.2.0", 0, "n2"))
	cli := func(a *ClusterAgent, want int, args ...string) string {
		t.Helper()
		out, errOut, code := a.CLI(args...)
		t.Logf("plughost %s (via %s): exit %d\n%s%s", strings.Join(args, " "), a.Node, code, out, errOut)
		if code != want {
			t.Fatalf("%s on %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), a.Node, code, want, out, errOut)
		}
		return out + errOut
	}

	// First install: runs everywhere with no rollout.
	cli(agents[0], 0, "bundle", "add", v1)
	waitServingOnly(t, agents[0], "echo", "1.0.0", nodes, 60*time.Second)
	if seq := lastRolloutSeq(t, agents, "echo"); seq != 0 {
		t.Fatalf("the first install made rollout %d", seq)
	}
	// A pin to what runs everywhere starts nothing, and says so.
	if out := cli(agents[1], 0, "plugin", "pin", "echo", "1.0.0"); !strings.Contains(out, "nothing to roll out") {
		t.Fatalf("pin to the running version:\n%s", out)
	}
	cli(agents[0], 0, "bundle", "add", v2) // pinned: no rollout
	cli(agents[0], 0, "bundle", "add", bad)

	// Pin 1.1.0 through n3: the rollout goes ud1, ud2, ud3 and completes.
	out := cli(agents[2], 0, "plugin", "pin", "echo", "1.1.0")
	for _, want := range []string{"echo 1.0.0 -> 1.1.0 over 3 upgrade domain(s) (ud1, ud2, ud3), pin by", "domain ud1 done on 1.1.0",
		"domain ud2 done on 1.1.0", "domain ud3 done on 1.1.0", "] completed in"} {
		if !strings.Contains(out, want) {
			t.Errorf("pin 1.1.0 lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "domain ud1 done") > strings.Index(out, "domain ud2 done") || strings.Index(out, "domain ud2 done") > strings.Index(out, "domain ud3 done") {
		t.Errorf("the domains were not done in rollout order:\n%s", out)
	}
	waitServingOnly(t, agents[0], "echo", "1.1.0", nodes, 30*time.Second)

	// Pin 1.2.0, never healthy on n2: rolled back everywhere, exit 1
	// naming n2, said once.
	out = cli(agents[0], 1, "plugin", "pin", "echo", "1.2.0")
	for _, want := range []string{"domain ud1 done on 1.2.0", "rolled back to 1.1.0", "node n2"} {
		if !strings.Contains(out, want) {
			t.Errorf("pin of the bad 1.2.0 lacks %q:\n%s", want, out)
		}
	}
	waitServingOnly(t, agents[0], "echo", "1.1.0", nodes, 60*time.Second)

	// rollback: the from version of the newest completed rollout (1.0.0),
	// not the version that served before the failed 1.2.0.
	out = cli(agents[1], 0, "plugin", "rollback", "echo")
	if !strings.Contains(out, "echo 1.1.0 -> 1.0.0") || !strings.Contains(out, "rollback by") || !strings.Contains(out, "] completed") {
		t.Errorf("rollback:\n%s", out)
	}
	waitServingOnly(t, agents[0], "echo", "1.0.0", nodes, 30*time.Second)

	// -detach: at once, the rollout in the background.
	seq := lastRolloutSeq(t, agents, "echo")
	if out := cli(agents[0], 0, "plugin", "pin", "-detach", "echo", "1.1.0"); !strings.Contains(out, "recorded") {
		t.Errorf("pin -detach:\n%s", out)
	}
	r := waitRolloutDone(t, agents, "echo", seq, 90*time.Second)
	if r.State != "completed" || r.To != "1.1.0" {
		t.Errorf("the detached pin's rollout: %s to %s (%s)", r.State, r.To, r.Failure)
	}

	// history: the rollouts with outcome and reason.
	out = cli(agents[2], 0, "plugin", "history", "echo")
	if !strings.Contains(out, "rollout") || !strings.Contains(out, "n2") {
		t.Errorf("history lacks the rollouts or the failed node:\n%s", out)
	}
	out = cli(agents[1], 0, "rollout", "list", "-plugin", "echo")
	if strings.Count(out, "echo-") != 4 {
		t.Errorf("rollout list: want 4 rollouts:\n%s", out)
	}
}
