package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/internal/testenv"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// putRecord writes a _sys record straight into the agent's store, as its
// one writer would (here: the rollout controller's records, which this
// test fakes to see the operator's surface render and act on them).
func putRecord(t *testing.T, a *Agent, r intent.Record) {
	t.Helper()
	val, err := intent.Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t, 10*time.Second)
	if _, err := storev1.NewStoreServiceClient(a.Conn()).Put(ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(r.Key()), Value: val}); err != nil {
		t.Fatalf("put %s: %v", r.Key(), err)
	}
}

// fakeRollout is rollout seq of plugin (registered nowhere) from 1.0.0 to
// 2.0.0 over ud1 (n1) and ud2 (n2), paused while ud1 updates, or
// completed. The rollout controller, when it runs, leaves both be: a
// paused rollout waits for an operator, a completed one with nothing
// pending is done.
func fakeRollout(plugin string, seq int64, state string) *intent.Rollout {
	created := time.Now().UTC().Add(time.Duration(seq) * time.Second)
	r := &intent.Rollout{
		ID: intent.RolloutID(plugin, seq), Plugin: plugin, Seq: seq, From: "1.0.0", To: "2.0.0", Trigger: intent.TriggerPin, Actor: "tester",
		Policy: intent.RolloutPolicy{Mode: intent.PolicyAuto, Strategy: "overlap", MaxParallel: 1,
			MinHealthyTime: bundle.Duration{Duration: 2 * time.Second}, HealthyDeadline: bundle.Duration{Duration: time.Minute},
			ProgressDeadline: bundle.Duration{Duration: 10 * time.Minute}, FailureAction: intent.FailureRollback},
		State: state, Created: created,
		Domains: []intent.RolloutDomain{
			{Name: "ud1", From: "1.0.0", Version: "2.0.0", Phase: intent.DomainUpdating, Started: created,
				Nodes: []intent.RolloutNode{{Name: "n1", Phase: intent.NodeUpdating, Version: "1.0.0"}}},
			{Name: "ud2", From: "1.0.0", Version: "1.0.0", Phase: intent.DomainWaiting,
				Nodes: []intent.RolloutNode{{Name: "n2", Phase: intent.NodeWaiting, Version: "1.0.0"}}},
		},
	}
	switch state {
	case intent.RolloutPaused:
		r.Paused, r.Failure = intent.RolloutRunning, "paused by tester"
	case intent.RolloutCompleted:
		for i := range r.Domains {
			r.Domains[i].Phase, r.Domains[i].Version = intent.DomainDone, "2.0.0"
			r.Domains[i].Nodes[0].Phase, r.Domains[i].Nodes[0].Version = intent.NodeHealthy, "2.0.0"
		}
		r.Finished = created.Add(10 * time.Second)
	}
	return r
}

func rolloutReason(err error) string { return operatorv1.RolloutErrorReason(err) }

// TestRolloutOperatorSurface: on a real agent holding rollout records, the
// operator's rollout commands list, show, follow and request, and refuse
// what does not apply with a reason a client can branch on.
func TestRolloutOperatorSurface(t *testing.T) {
	a := NewAgent(t, AgentOptions{})
	ctx := testenv.Context(t, 2*time.Minute)
	op := a.Operator()
	putRecord(t, a, fakeRollout("ghost", 1, intent.RolloutCompleted))
	putRecord(t, a, fakeRollout("ghost", 2, intent.RolloutPaused))

	// list: newest first, every field.
	out, errOut, code := a.CLI("rollout", "list", "-format", "json")
	if code != 0 {
		t.Fatalf("rollout list: exit %d: %s", code, errOut)
	}
	var list []struct {
		ID      string `json:"id"`
		State   string `json:"state"`
		Paused  string `json:"paused"`
		Domains []struct {
			Name  string `json:"name"`
			Nodes []struct {
				Name  string `json:"name"`
				Phase string `json:"phase"`
			} `json:"nodes"`
		} `json:"domains"`
		Policy struct {
			MinHealthyTimeMs int64 `json:"min_healthy_time_ms"`
		} `json:"policy"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("rollout list -format json: %v\n%s", err, out)
	}
	if len(list) != 2 || list[0].ID != "ghost-2" || list[0].State != "paused" || list[0].Paused != "running" || list[1].ID != "ghost-1" ||
		list[1].State != "completed" || len(list[0].Domains) != 2 || list[0].Domains[0].Nodes[0].Phase != "updating" || list[0].Policy.MinHealthyTimeMs != 2000 {
		t.Fatalf("rollout list: %s", out)
	}
	if out, _, code := a.CLI("rollout", "list", "-plugin", "nosuch"); code != 0 || strings.Count(out, "\n") != 1 {
		t.Fatalf("rollout list -plugin nosuch: exit %d:\n%s", code, out)
	}

	// status: by plugin (its newest), by ID.
	out, errOut, code = a.CLI("rollout", "status", "ghost")
	if code != 0 || !strings.Contains(out, "Rollout ghost-2: ghost 1.0.0 -> 2.0.0") || !strings.Contains(out, "State:    paused: paused by tester") ||
		!strings.Contains(out, "node n1 updating to 2.0.0") {
		t.Fatalf("rollout status ghost: exit %d: %s\n%s", code, errOut, out)
	}
	if out, _, code := a.CLI("rollout", "status", "ghost-1"); code != 0 || !strings.Contains(out, "State:    completed") {
		t.Fatalf("rollout status ghost-1: exit %d:\n%s", code, out)
	}
	_, err := op.GetRollout(ctx, &operatorv1.GetRolloutRequest{Id: "ghost-9"})
	if status.Code(err) != codes.NotFound || rolloutReason(err) != operatorv1.ReasonRolloutNotFound {
		t.Fatalf("GetRollout ghost-9: %v, want NOT_FOUND ROLLOUT_NOT_FOUND", err)
	}
	if _, errOut, code := a.CLI("rollout", "status", "nosuch"); code != 1 || !strings.Contains(errOut, "plugin nosuch has had no rollout") {
		t.Fatalf("rollout status nosuch: exit %d: %s", code, errOut)
	}

	// Requests that do not apply are refused, with reasons.
	_, err = op.ResumeRollout(ctx, &operatorv1.ResumeRolloutRequest{Name: "ghost", Id: "ghost-1"})
	if status.Code(err) != codes.FailedPrecondition || rolloutReason(err) != operatorv1.ReasonRolloutFinished {
		t.Fatalf("resume of finished ghost-1: %v, want FAILED_PRECONDITION ROLLOUT_FINISHED", err)
	}
	_, err = op.PauseRollout(ctx, &operatorv1.PauseRolloutRequest{Name: "ghost"})
	if status.Code(err) != codes.FailedPrecondition || rolloutReason(err) != operatorv1.ReasonRolloutState {
		t.Fatalf("pause of paused ghost-2: %v, want FAILED_PRECONDITION ROLLOUT_STATE", err)
	}
	if _, errOut, code := a.CLI("rollout", "pause", "ghost-2"); code != 1 || !strings.Contains(errOut, "paused already") {
		t.Fatalf("rollout pause of a paused rollout: exit %d: %s", code, errOut)
	}
	if _, errOut, code := a.CLI("rollout", "abort", "-restore-data", "ghost"); code != 1 || !strings.Contains(errOut, "took no snapshot") {
		t.Fatalf("rollout abort -restore-data without a snapshot: exit %d: %s", code, errOut)
	}

	// A rollout paused because a node fell back: the node does not try the
	// version again until it is pinned again, so resume alone is refused,
	// saying what to do, and status does not offer it.
	fb := fakeRollout("phantom", 1, intent.RolloutPaused)
	fb.FailedNode = "n1"
	fb.Failure = "n1 fell back from 2.0.0: port in use; n1 " + intent.NoRetry +
		": 'plughost plugin pin phantom 2.0.0' has it try again, then 'plughost rollout resume phantom-1'; or 'plughost rollout abort phantom-1' rolls back"
	putRecord(t, a, fb)
	_, err = op.ResumeRollout(ctx, &operatorv1.ResumeRolloutRequest{Name: "phantom"})
	if status.Code(err) != codes.FailedPrecondition || rolloutReason(err) != operatorv1.ReasonRolloutState {
		t.Fatalf("resume of phantom-1 paused by a fallback: %v, want FAILED_PRECONDITION ROLLOUT_STATE", err)
	}
	if _, errOut, code := a.CLI("rollout", "resume", "phantom-1"); code != 1 || !strings.Contains(errOut, "cannot resume yet") ||
		!strings.Contains(errOut, "'plughost plugin pin phantom 2.0.0' has it try again") {
		t.Fatalf("rollout resume phantom-1: exit %d: %s", code, errOut)
	}
	if out, _, code := a.CLI("rollout", "status", "phantom"); code != 0 || !strings.Contains(out, "State:    paused: node n1: n1 fell back from 2.0.0") ||
		strings.Contains(out, "goes on") {
		t.Fatalf("rollout status phantom: exit %d:\n%s", code, out)
	}

	// resume: the request is recorded for the controller.
	out, errOut, code = a.CLI("rollout", "resume", "ghost")
	if code != 0 || !strings.Contains(out, "Asked rollout ghost-2 (paused) to resume, running") {
		t.Fatalf("rollout resume ghost: exit %d: %s\n%s", code, errOut, out)
	}
	kv, err := storev1.NewStoreServiceClient(a.Conn()).Get(ctx, &storev1.GetRequest{Namespace: store.SystemNamespace, Key: []byte(intent.RolloutCtlKey("ghost"))})
	if err != nil {
		t.Fatal(err)
	}
	var ctl intent.RolloutControl
	if err := json.Unmarshal(kv.GetKv().GetValue(), &ctl); err != nil || ctl.Action != intent.ControlResume || ctl.ID != "ghost-2" || ctl.Actor == "" || ctl.At.IsZero() {
		t.Fatalf("rolloutctl/ghost after resume: %v %+v", err, ctl)
	}
	resp, err := op.GetRollout(ctx, &operatorv1.GetRolloutRequest{Id: "ghost-2"})
	if err != nil || resp.GetRollout().GetControl().GetAction() != "resume" {
		t.Fatalf("GetRollout ghost-2 shows no resume request: %v %v", err, resp.GetRollout().GetControl())
	}

	// status -follow, not on a terminal: a line a change, until done.
	phantom := fakeRollout("phantom", 1, intent.RolloutPaused)
	putRecord(t, a, phantom)
	cmd := exec.Command(filepath.Join(binDir, "plughost"), "rollout", "status", "-follow", "phantom-1")
	cmd.Env = append(withoutToken(os.Environ()), "PLUGHOST_ADDR="+a.API, "PLUGHOST_TOKEN="+a.Token())
	var follow, followErr testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &follow, &followErr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	testenv.Eventually(t, 20*time.Second, "the follow's first line", func() bool {
		return strings.Contains(follow.String(), "[phantom-1] phantom 1.0.0 -> 2.0.0")
	})
	now := time.Now().UTC()
	phantom.Domains[0].Phase, phantom.Domains[0].Finished = intent.DomainDone, now
	phantom.Domains[0].Nodes[0].Phase, phantom.Domains[0].Nodes[0].Version = intent.NodeHealthy, "2.0.0"
	phantom.Domains[1].Phase, phantom.Domains[1].Version, phantom.Domains[1].Started = intent.DomainUpdating, "2.0.0", now
	phantom.Domains[1].Nodes[0].Phase, phantom.Domains[1].Nodes[0].DownSince = intent.NodeDown, now.Add(-time.Minute)
	putRecord(t, a, phantom)
	testenv.Eventually(t, 20*time.Second, "the follow's domain line", func() bool { return strings.Contains(follow.String(), "domain ud1 done on 2.0.0") })
	phantom.State, phantom.Paused, phantom.Failure, phantom.Finished = intent.RolloutCompleted, "", "", now
	phantom.Pending, phantom.Converged = []string{"n2"}, now.Add(time.Second)
	phantom.Domains[1].Phase = intent.DomainDone
	putRecord(t, a, phantom)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("rollout status -follow: %v: %s", err, followErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("rollout status -follow did not end once the rollout completed:\n%s", follow.String())
	}
	got := follow.String()
	for _, want := range []string{"node n2 down since", "domain ud2 done on 2.0.0", "] completed", "n2, down then, converged"} {
		if !strings.Contains(got, want) {
			t.Errorf("rollout status -follow lacks %q:\n%s", want, got)
		}
	}
	// Finished now: a request on it is refused.
	if _, errOut, code := a.CLI("rollout", "abort", "phantom"); code != 1 || !strings.Contains(errOut, "phantom-1 is completed") {
		t.Fatalf("rollout abort of a completed rollout: exit %d: %s", code, errOut)
	}
}
