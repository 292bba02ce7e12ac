package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plughost/plughost/host/intent"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// t0 is when the test rollouts began.
var t0 = time.Date(2026, 12, 2, 13, 0, 0, 0, time.UTC)

func at(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(t0.Add(d)) }

// inUTC shows the CLI's local times in UTC for the test, for goldens that
// do not depend on the machine's zone.
func inUTC(t *testing.T) {
	old := time.Local
	time.Local = time.UTC
	t.Cleanup(func() { time.Local = old })
}

// rolloutSteps is one rollout of echo 1.0.0 -> 2.0.0 over three upgrade
// domains, as successive records: ud1 done, ud2 gating (n2 healthy for
// 1.5 s of 2 s, n3 down), then ud3 failing on n4 and the rollback, which
// completes with n3 pending.
func rolloutSteps() []*operatorv1.Rollout {
	policy := &operatorv1.RolloutPolicy{Mode: "auto", Strategy: "overlap", MaxParallel: 1, MinHealthyTimeMs: 2000,
		HealthyDeadlineMs: 5000, ProgressDeadlineMs: 600000, FailureAction: "rollback"}
	base := func() *operatorv1.Rollout {
		return &operatorv1.Rollout{Id: "echo-3", Plugin: "echo", Seq: 3, FromVersion: "1.0.0", ToVersion: "2.0.0", TargetVersion: "2.0.0",
			Trigger: "pin", Actor: "alice (accessor 1234)", Policy: policy, State: intent.RolloutRunning, Created: at(0), Revision: 10}
	}
	node := func(name, phase, version string) *operatorv1.RolloutNode {
		return &operatorv1.RolloutNode{Name: name, Phase: phase, Version: version}
	}
	dom := func(name, phase, from, version string, nodes ...*operatorv1.RolloutNode) *operatorv1.RolloutDomain {
		return &operatorv1.RolloutDomain{Name: name, Phase: phase, FromVersion: from, Version: version, Nodes: nodes}
	}
	s0 := base()
	s0.AsOf = at(0)
	s0.Domains = []*operatorv1.RolloutDomain{
		dom("ud1", intent.DomainUpdating, "1.0.0", "2.0.0", node("n1", intent.NodeUpdating, "1.0.0")),
		dom("ud2", intent.DomainWaiting, "1.0.0", "1.0.0", node("n2", intent.NodeWaiting, "1.0.0"), node("n3", intent.NodeWaiting, "1.0.0")),
		dom("ud3", intent.DomainWaiting, "1.0.0", "1.0.0", node("n4", intent.NodeWaiting, "1.0.0")),
	}
	s0.Domains[0].Started = at(0)
	s0.Domains[0].DeadlineLeftMs = 5000

	s1 := base()
	s1.AsOf = at(5500 * time.Millisecond)
	s1.Domains = []*operatorv1.RolloutDomain{
		dom("ud1", intent.DomainDone, "1.0.0", "2.0.0", node("n1", intent.NodeHealthy, "2.0.0")),
		dom("ud2", intent.DomainUpdating, "1.0.0", "2.0.0", node("n2", intent.NodeUpdating, "2.0.0"),
			&operatorv1.RolloutNode{Name: "n3", Phase: intent.NodeDown, DownSince: at(-time.Minute)}),
		dom("ud3", intent.DomainWaiting, "1.0.0", "1.0.0", node("n4", intent.NodeWaiting, "1.0.0")),
	}
	s1.Domains[0].Started, s1.Domains[0].Finished = at(0), at(3*time.Second)
	s1.Domains[1].Started, s1.Domains[1].DeadlineLeftMs = at(3*time.Second), 2500
	s1.Domains[1].Nodes[0].HealthySince, s1.Domains[1].Nodes[0].GateLeftMs = at(4*time.Second), 500

	s2 := base()
	s2.AsOf = at(20 * time.Second)
	s2.State, s2.TargetVersion = intent.RolloutRollingBack, "1.0.0"
	s2.Failure, s2.FailedNode = "not healthy within healthy_deadline 5s: health check: connection refused", "n4"
	s2.Domains = []*operatorv1.RolloutDomain{
		dom("ud1", intent.DomainDone, "1.0.0", "2.0.0", node("n1", intent.NodeHealthy, "2.0.0")),
		dom("ud2", intent.DomainRollingBack, "1.0.0", "1.0.0", node("n2", intent.NodeUpdating, "2.0.0"),
			&operatorv1.RolloutNode{Name: "n3", Phase: intent.NodeDown, DownSince: at(-time.Minute)}),
		dom("ud3", intent.DomainRollingBack, "1.0.0", "1.0.0",
			&operatorv1.RolloutNode{Name: "n4", Phase: intent.NodeFailed, Version: "1.0.0", Reason: "not healthy within 5s"}),
	}
	s2.Domains[0].Started, s2.Domains[0].Finished = at(0), at(3*time.Second)

	s3 := base()
	s3.AsOf = at(30 * time.Second)
	s3.State, s3.TargetVersion, s3.Failure, s3.FailedNode = intent.RolloutRolledBack, "1.0.0", s2.Failure, s2.FailedNode
	s3.Finished, s3.Pending = at(29*time.Second), []string{"n3"}
	s3.Domains = []*operatorv1.RolloutDomain{
		dom("ud1", intent.DomainRolledBack, "1.0.0", "1.0.0", node("n1", intent.NodeHealthy, "1.0.0")),
		dom("ud2", intent.DomainRolledBack, "1.0.0", "1.0.0", node("n2", intent.NodeHealthy, "1.0.0"),
			&operatorv1.RolloutNode{Name: "n3", Phase: intent.NodeDown, DownSince: at(-time.Minute)}),
		dom("ud3", intent.DomainRolledBack, "1.0.0", "1.0.0", node("n4", intent.NodeHealthy, "1.0.0")),
	}
	for _, d := range s3.Domains {
		d.Started, d.Finished = at(20*time.Second), at(28*time.Second)
	}
	return []*operatorv1.Rollout{s0, s1, s2, s3}
}

// TestRolloutStatusView: `rollout status` of a rollout at each step, and
// the live view's frame, which counts the gates' time left on from the
// record's as_of.
func TestRolloutStatusView(t *testing.T) {
	inUTC(t)
	var b bytes.Buffer
	for i, r := range rolloutSteps() {
		b.WriteString("--- step " + string(rune('0'+i)) + "\n")
		renderRollout(&b, r, r.GetAsOf().AsTime(), false)
	}
	golden(t, "rollout/status.golden", b.String())

	// The live frame of step 1, 300 ms after the record was read: n2 has
	// 200 ms of its min_healthy_time left, ud2 2.2 s of its deadline.
	r := rolloutSteps()[1]
	b.Reset()
	renderRollout(&b, r, r.GetAsOf().AsTime().Add(300*time.Millisecond), true)
	got := b.String()
	for _, want := range []string{"[##########..........] 1/2  updating", "200ms of min_healthy_time left", "healthy_deadline: 2.2s left",
		"[####################] 1/1  done", "node n3 down since 2026-12-02T12:59:00Z: skipped"} {
		if !strings.Contains(got, want) {
			t.Errorf("live frame lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "Created:") {
		t.Errorf("the live frame shows what does not change:\n%s", got)
	}

	// A node draining its old version shows the calls still in flight.
	r = rolloutSteps()[1]
	r.Domains[0].Nodes[0].Draining, r.Domains[0].Nodes[0].InFlight = "1.0.0", 7
	b.Reset()
	renderRollout(&b, r, r.GetAsOf().AsTime(), true)
	if got := b.String(); !strings.Contains(got, "draining 1.0.0: 7 calls in flight") {
		t.Errorf("the live frame does not show the drain:\n%s", got)
	}
}

// TestRolloutFollowLines: the plain lines of `rollout status -follow`
// (stdout not a terminal) and of a pin following its rollout: one a
// change, the outcome naming the node and reason.
func TestRolloutFollowLines(t *testing.T) {
	inUTC(t)
	steps := rolloutSteps()
	i := 0
	var b bytes.Buffer
	last, err := followLines(&b, func() (*operatorv1.Rollout, error) {
		if i == len(steps) {
			return nil, io.EOF
		}
		i++
		return steps[i-1], nil
	})
	if err != nil || last != steps[len(steps)-1] {
		t.Fatalf("followLines: %v, last %v", err, last.GetState())
	}
	golden(t, "rollout/follow.golden", b.String())
}

// TestRolloutCompletedPending: a completed rollout with a node down says
// so in the words the issue gives: "completed, 1 node pending: n4 (down
// since …)".
func TestRolloutCompletedPending(t *testing.T) {
	inUTC(t)
	r := rolloutSteps()[3]
	r.State, r.TargetVersion, r.Failure, r.FailedNode = intent.RolloutCompleted, "2.0.0", "", ""
	got := stateLine(r)
	if want := "completed in 29s, 1 node pending: n3 (down since 2026-12-02T12:59:00Z)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestRolloutCompletedConverged: once the node that was down serves the
// target, the record lists none pending and sets converged: the state
// line names the node and when (area accept2: the line said nothing).
func TestRolloutCompletedConverged(t *testing.T) {
	inUTC(t)
	r := rolloutSteps()[3]
	r.State, r.TargetVersion, r.Failure, r.FailedNode = intent.RolloutCompleted, "2.0.0", "", ""
	r.Pending, r.Converged = nil, r.GetFinished()
	got := stateLine(r)
	if want := "completed in 29s; n3, down then, converged 2026-12-02T13:00:29Z"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestRolloutListTable: newest first as the agent sends them, the domains
// through, and a note saying why one failed.
func TestRolloutListTable(t *testing.T) {
	inUTC(t)
	steps := rolloutSteps()
	older := rolloutSteps()[3]
	older.Id, older.Seq, older.State, older.Failure, older.FailedNode, older.Pending = "echo-2", 2, intent.RolloutSuperseded, "", "", nil
	older.SupersededBy = "echo-3"
	var b bytes.Buffer
	if err := rolloutTable(&b, []*operatorv1.Rollout{steps[1], steps[3], older}); err != nil {
		t.Fatal(err)
	}
	golden(t, "rollout/list.golden", b.String())
}

// TestRolloutJSON holds every field of the record.
func TestRolloutJSON(t *testing.T) {
	inUTC(t)
	r := rolloutSteps()[1]
	r.Snapshot = &operatorv1.RolloutSnapshot{Namespace: "echo", Keys: 3, Bytes: 120, Sha256: "ab12", Revision: 9, Taken: at(0)}
	r.Control = &operatorv1.RolloutControl{Id: "echo-3", Action: "pause", Actor: "bob", At: at(time.Second)}
	raw, err := json.Marshal(toRolloutJSON(r))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "plugin", "seq", "from", "to", "target", "trigger", "actor", "policy", "state", "domains", "created",
		"pending", "snapshot", "restore_data", "revision", "control"} {
		if _, ok := got[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, raw)
		}
	}
	d := got["domains"].([]any)[1].(map[string]any)
	n := d["nodes"].([]any)[0].(map[string]any)
	if d["phase"] != "updating" || n["gate_left_ms"] != float64(500) || n["healthy_since"] != "2026-12-02T13:00:04Z" {
		t.Errorf("domain ud2 in JSON: %v", d)
	}
}

// TestHistoryTableShowsRollouts: a rollout's history record names the
// rollout and, when it failed, the node.
func TestHistoryTableShowsRollouts(t *testing.T) {
	inUTC(t)
	var b bytes.Buffer
	err := historyTable(&b, []*operatorv1.HistoryRecord{
		{Time: at(0), Actor: "alice", Action: "pin", FromVersion: "1.0.0", ToVersion: "2.0.0"},
		{Time: at(30 * time.Second), Actor: "rollout controller", Action: "rollout", FromVersion: "1.0.0", ToVersion: "2.0.0",
			Outcome: "rolled back", Reason: "not healthy within healthy_deadline 5s", Node: "n4", RolloutId: "echo-3"},
		{Time: at(time.Minute), Actor: "rollout controller", Action: "rollout", FromVersion: "1.0.0", ToVersion: "1.1.0",
			Outcome: "completed", RolloutId: "echo-4"},
	})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "rollout/history.golden", b.String())
}

// TestRolloutUsage: command lines `rollout` cannot run exit 2 without
// contacting an agent.
func TestRolloutUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"rollout"}, "use list, status, pause, resume or abort"},
		{[]string{"rollout", "list", "echo"}, "rollout list takes no arguments"},
		{[]string{"rollout", "status", "a", "b"}, "at most one"},
		{[]string{"rollout", "pause"}, "rollout pause takes one rollout ID or plugin name"},
		{[]string{"rollout", "abort", "-restore-data"}, "rollout abort takes one"},
		{[]string{"rollout", "resume", "-restore-data", "echo"}, "flag provided but not defined"},
	} {
		var out, errOut bytes.Buffer
		code := exitCode(run(t.Context(), tc.args, &out, &errOut), &errOut)
		if code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 saying %q", tc.args, code, errOut.String(), tc.want)
		}
	}
}

// TestRolloutLiveViewRedrawsInPlace: on a terminal, each record redraws
// the view over the one before (cursor up its line count, clear below),
// and the stream's end leaves the last frame.
func TestRolloutLiveViewRedrawsInPlace(t *testing.T) {
	inUTC(t)
	steps := rolloutSteps()
	i := 0
	var b bytes.Buffer
	err := liveView(t.Context(), &b, func() (*operatorv1.Rollout, error) {
		if i == 2 {
			return nil, io.EOF
		}
		i++
		return steps[i-1], nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := b.String()
	first := strings.Count(renderString(steps[0]), "\n")
	if !strings.Contains(got, fmt.Sprintf("\x1b[%dA\x1b[J", first)) {
		t.Errorf("no redraw over the first frame's %d lines:\n%q", first, got)
	}
	if !strings.HasSuffix(got, "      node n4 waiting\n") || !strings.Contains(got, "1/2  updating") {
		t.Errorf("the last frame is not step 1's:\n%s", got)
	}
}

func renderString(r *operatorv1.Rollout) string {
	var b bytes.Buffer
	renderRollout(&b, r, r.GetAsOf().AsTime(), true)
	return b.String()
}
