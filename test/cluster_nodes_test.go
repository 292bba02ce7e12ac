package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/internal/testenv"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// listedNode is one node of `plughost nodes -format json`.
type listedNode struct {
	Name             string            `json:"name"`
	Status           string            `json:"status"`
	FaultDomain      string            `json:"fault_domain"`
	UpgradeDomain    string            `json:"upgrade_domain"`
	Tags             map[string]string `json:"tags"`
	Eligible         bool              `json:"eligible"`
	EligibilitySince *time.Time        `json:"eligibility_since"`
	EligibilityActor string            `json:"eligibility_actor"`
	APIAddress       string            `json:"api_address"`
	Plugins          []listedPlugin    `json:"plugins"`
	Invalid          string            `json:"invalid"`
}

// listedPlugin is one plugin instance a node runs, in `plughost nodes -format json`.
type listedPlugin struct {
	Plugin  string `json:"plugin"`
	Version string `json:"version"`
	State   string `json:"state"`
	Healthy bool   `json:"healthy"`
}

func listNodes(a *ClusterAgent) (map[string]listedNode, error) {
	out, errOut, code := a.CLI("nodes", "-format", "json")
	if code != 0 {
		return nil, fmt.Errorf("nodes on %s: exit %d: %s", a.Node, code, errOut)
	}
	var nodes []listedNode
	if err := json.Unmarshal([]byte(out), &nodes); err != nil {
		return nil, fmt.Errorf("nodes on %s printed %q: %v", a.Node, out, err)
	}
	m := map[string]listedNode{}
	for _, n := range nodes {
		m[n.Name] = n
	}
	return m, nil
}

// TestNodesIdentityAndDrain: three agents started with fault domains,
// upgrade domains and tags; `plughost nodes` on each lists all three with
// their identity; a drain through one node shows on another, with who did
// it; a drain of an unknown node names it; eligible brings the node back.
func TestNodesIdentityAndDrain(t *testing.T) {
	agents := NewClusterEach(t, 3, func(i int) []string {
		return [][]string{
			{"-fault-domain", "fd1", "-upgrade-domain", "ud1", "-tag", "disk=ssd"},
			{"-fault-domain", "fd2", "-upgrade-domain", "ud2", "-tag", "disk=hdd"},
			{"-fault-domain", "fd:/dc1/r3", "-tag", "disk=ssd", "-tag", "gpu=a100"},
		}[i]
	})
	n1, n2, n3 := agents[0], agents[1], agents[2]
	want := map[string]listedNode{
		"n1": {Name: "n1", Status: "alive", FaultDomain: "fd1", UpgradeDomain: "ud1", Tags: map[string]string{"disk": "ssd", "zone": "n1"}, Eligible: true, APIAddress: n1.API, Plugins: []listedPlugin{}},
		"n2": {Name: "n2", Status: "alive", FaultDomain: "fd2", UpgradeDomain: "ud2", Tags: map[string]string{"disk": "hdd", "zone": "n2"}, Eligible: true, APIAddress: n2.API, Plugins: []listedPlugin{}},
		// No -upgrade-domain: the node is an upgrade domain of its own.
		"n3": {Name: "n3", Status: "alive", FaultDomain: "fd:/dc1/r3", UpgradeDomain: "n3", Tags: map[string]string{"disk": "ssd", "gpu": "a100", "zone": "n3"}, Eligible: true, APIAddress: n3.API, Plugins: []listedPlugin{}},
	}
	for _, a := range agents {
		testenv.WaitFor(t, 20*time.Second, "nodes on "+a.Node+" to list every node with its identity", func() error {
			got, err := listNodes(a)
			if err != nil {
				return err
			}
			if !reflect.DeepEqual(got, want) {
				return fmt.Errorf("got %+v", got)
			}
			return nil
		})
	}
	// drain -wait returns once the node runs nothing: n3 runs nothing yet.
	out, errOut, code := n1.CLI("node", "drain", "-wait", "-timeout", "30s", "n3")
	if code != 0 || !strings.Contains(out, "Node n3 drained") || !strings.Contains(out, "Node n3 runs nothing now.") {
		t.Fatalf("node drain -wait n3: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := n1.CLI("node", "eligible", "n3"); code != 0 || !strings.Contains(out, "Node n3 is eligible again") {
		t.Fatalf("node eligible n3: exit %d\n%s%s", code, out, errOut)
	}

	// What a node runs comes from its observations.
	n1.Drop(bundlePath("echo", "1.0.0"))
	n1.WaitRunning("echo", "1.0.0")
	// echo runs on every node (it is every-node, and its bundle travels).
	runsEcho := func(on *ClusterAgent, nodes ...string) func() error {
		return func() error {
			got, err := listNodes(on)
			if err != nil {
				return err
			}
			for _, n := range nodes {
				if want := []listedPlugin{{"echo", "1.0.0", "running", true}}; !reflect.DeepEqual(got[n].Plugins, want) {
					return fmt.Errorf("%s runs %+v, want %+v", n, got[n].Plugins, want)
				}
			}
			return nil
		}
	}
	testenv.WaitFor(t, 60*time.Second, "nodes on n3 to show echo running on every node", runsEcho(n3, "n1", "n2", "n3"))
	out, errOut, code = n1.CLI("nodes")
	if code != 0 || !strings.Contains(out, "FAULT DOMAIN") || !strings.Contains(out, "fd:/dc1/r3") || !strings.Contains(out, "disk=ssd,gpu=a100,zone=n3") ||
		!strings.Contains(out, "echo@1.0.0") {
		t.Fatalf("nodes: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("plughost nodes:\n%s", out)

	// Drain n2 through n3; n1 sees it, with who and when.
	before := time.Now()
	out, errOut, code = n3.CLI("node", "drain", "-wait", "-timeout", "60s", "n2")
	if code != 0 || !strings.Contains(out, "Node n2 drained") || !strings.Contains(out, "Node n2 runs nothing now.") {
		t.Fatalf("node drain -wait n2: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("node drain -wait n2:\n%s", out)
	testenv.WaitFor(t, 10*time.Second, "n1 to list n2 drained", func() error {
		got, err := listNodes(n1)
		if err != nil {
			return err
		}
		n := got["n2"]
		if n.Eligible || n.EligibilitySince == nil || n.EligibilitySince.Before(before.Add(-time.Second)) || n.EligibilityActor == "" {
			return fmt.Errorf("n2 listed %+v", n)
		}
		if !got["n1"].Eligible || !got["n3"].Eligible {
			return fmt.Errorf("others listed %+v", got)
		}
		return nil
	})
	if out, _, _ := n1.CLI("nodes"); !strings.Contains(out, "drained") {
		t.Fatalf("nodes does not show the drain:\n%s", out)
	}
	if out, errOut, code := n1.CLI("node", "drain", "n2"); code != 0 || !strings.Contains(out, "drained already") {
		t.Fatalf("second drain: exit %d\n%s%s", code, out, errOut)
	}

	// An unknown node: an error naming it and where to look, with a
	// machine-readable reason.
	_, errOut, code = n1.CLI("node", "drain", "nope")
	if code != 1 || !strings.Contains(errOut, `node "nope" is not a member`) || !strings.Contains(errOut, "plughost nodes") {
		t.Fatalf("drain of an unknown node: exit %d, %s", code, errOut)
	}
	ctx := testenv.Context(t, 10*time.Second)
	_, err := n1.Operator().SetNodeEligibility(ctx, &operatorv1.SetNodeEligibilityRequest{Node: "nope"})
	if st, _ := status.FromError(err); st.Code() != codes.NotFound || reason(st) != operatorv1.ReasonNodeUnknown {
		t.Fatalf("SetNodeEligibility of an unknown node: %v", err)
	}

	// A token with operator = "read" lists nodes and may not drain one.
	createPolicy(t, n1.Agent, "ops-read", `operator = "read"`)
	secret, _ := createToken(t, n1.Agent, "nodes reader", "ops-read")
	testenv.WaitFor(t, 10*time.Second, "nodes with an operator = \"read\" token", func() error {
		if out, errOut, code := asToken(n1.Agent, secret, "nodes"); code != 0 || !strings.Contains(out, "n2") {
			return fmt.Errorf("exit %d\n%s%s", code, out, errOut)
		}
		return nil
	})
	if _, errOut, code := asToken(n1.Agent, secret, "node", "eligible", "n2"); code != 1 || !strings.Contains(errOut, `operator = \"write\"`) && !strings.Contains(errOut, `operator = "write"`) {
		t.Fatalf("node eligible with operator read: exit %d, %s", code, errOut)
	}

	// Eligible again, through n2 itself.
	if out, errOut, code := n2.CLI("node", "eligible", "n2"); code != 0 || !strings.Contains(out, "eligible again") {
		t.Fatalf("node eligible n2: exit %d\n%s%s", code, out, errOut)
	}
	testenv.WaitFor(t, 10*time.Second, "n3 to list n2 eligible", func() error {
		got, err := listNodes(n3)
		if err != nil {
			return err
		}
		if !got["n2"].Eligible {
			return fmt.Errorf("n2 listed %+v", got["n2"])
		}
		return nil
	})
	testenv.WaitFor(t, 60*time.Second, "n2 to run echo again", runsEcho(n1, "n1", "n2", "n3"))
}

// reason is the ErrorInfo reason st carries, or "".
func reason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// TestAgentRefusesBadNodeIdentity: an agent given a reserved or malformed
// tag or domain does not start, and says which and why.
func TestAgentRefusesBadNodeIdentity(t *testing.T) {
	buildAll(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-tag", "role=edge"}, `tag "role" is reserved for plughost`},
		{[]string{"-tag", "fault_domain=fd1"}, `tag "fault_domain" is reserved for plughost`},
		{[]string{"-tag", "disk=fast ssd"}, `tag disk="fast ssd"`},
		{[]string{"-tag", "disk"}, `-tag "disk": use key=value`},
		{[]string{"-fault-domain", "rack 1"}, `-fault-domain "rack 1"`},
		{[]string{"-upgrade-domain", "/ud"}, `-upgrade-domain "/ud"`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append([]string{"agent", "-dev", "-data-dir", t.TempDir(), "-api", testenv.FreeAddr(t), "-http", testenv.FreeAddr(t),
				"-rpc", testenv.FreeAddr(t), "-serf", testenv.FreeAddr(t)}, tc.args...)
			cmd := exec.Command(filepath.Join(binDir, "plughost"), args...)
			done := make(chan struct{})
			var out []byte
			var err error
			go func() { out, err = cmd.CombinedOutput(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("the agent started with %v:\n%s", tc.args, out)
			}
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("agent %v: %v\n%s\nwant a refusal with %q", tc.args, err, out, tc.want)
			}
		})
	}
}

// TestNodeFailureDetection measures how long gossip takes to declare a
// kill -9'd agent failed on every other agent of five (the figure a
// singleton's failover starts from), twice: it logs the figures and
// asserts none (README "Node identity and failure detection").
func TestNodeFailureDetection(t *testing.T) {
	agents := NewCluster(t, 5)
	for _, a := range agents {
		testenv.WaitFor(t, 20*time.Second, a.Node+" to see five alive nodes", func() error {
			got, err := listNodes(a)
			if err != nil {
				return err
			}
			for _, n := range got {
				if n.Status != "alive" {
					return fmt.Errorf("%s is %s", n.Name, n.Status)
				}
			}
			if len(got) != 5 {
				return fmt.Errorf("%d nodes", len(got))
			}
			return nil
		})
	}
	alive := append([]*ClusterAgent(nil), agents...)
	for round := 1; round <= 2; round++ {
		// Kill a follower, so the others' listings (which read the
		// node records through raft) do not wait for an election.
		leader := leaderName(t, alive[0])
		var victim *ClusterAgent
		for i := len(alive) - 1; i >= 0; i-- {
			if alive[i].Node != leader {
				victim = alive[i]
				alive = append(alive[:i:i], alive[i+1:]...)
				break
			}
		}
		killed := time.Now()
		victim.Kill9()
		seen := map[string]time.Duration{}
		testenv.WaitFor(t, 60*time.Second, "every other agent to list "+victim.Node+" failed", func() error {
			for _, a := range alive {
				if _, ok := seen[a.Node]; ok {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				resp, err := a.Operator().ListNodes(ctx, &operatorv1.ListNodesRequest{})
				cancel()
				if err != nil {
					continue
				}
				for _, n := range resp.GetNodes() {
					if n.GetName() == victim.Node && n.GetStatus() == "failed" {
						seen[a.Node] = time.Since(killed)
					}
				}
			}
			if len(seen) < len(alive) {
				return fmt.Errorf("seen failed by %v", seen)
			}
			return nil
		})
		var ds []time.Duration
		for _, d := range seen {
			ds = append(ds, d)
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		t.Logf("round %d: kill -9 of %s (cluster of %d) -> member failed: first agent %v, last of %d %v (all %v)",
			round, victim.Node, len(alive)+1, ds[0].Round(time.Millisecond), len(ds), ds[len(ds)-1].Round(time.Millisecond), seen)
	}
}

// leaderName is the raft leader's name as a sees it.
func leaderName(t *testing.T, a *ClusterAgent) string {
	t.Helper()
	var leader string
	testenv.WaitFor(t, 15*time.Second, "a leader", func() error {
		resp, err := a.Operator().ListMembers(testenv.Context(t, 5*time.Second), &operatorv1.ListMembersRequest{})
		if err != nil {
			return err
		}
		if leader = resp.GetLeader(); leader == "" {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	return leader
}
