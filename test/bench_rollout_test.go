package test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
)

// benchRolloutRun is what the test reads of 'plughost bench rollout
// -format json'.
type benchRolloutRun struct {
	From      string               `json:"from"`
	To        string               `json:"to"`
	Outcome   string               `json:"outcome"`
	Failure   string               `json:"failure"`
	Domains   []benchRolloutDomain `json:"domains"`
	Killed    string               `json:"killed_node"`
	Serving   float64              `json:"serving_seconds"`
	Calls     int                  `json:"calls"`
	Failed    int                  `json:"failed"`
	Versions  map[string]int       `json:"answered_by_version"`
	AfterEnd  map[string]int       `json:"answered_after_end_by_version"`
	Final     map[string]string    `json:"final_versions"`
	FirstErr  string               `json:"first_error"`
	RolloutID string               `json:"rollout"`
}

type benchRolloutDomain struct {
	Name  string   `json:"name"`
	Nodes []string `json:"nodes"`
	Phase string   `json:"phase"`
}

// benchRollout runs 'plughost bench rollout' briefly on three agents with
// args and returns its one run. Interrupted at the test's deadline, the
// bench stops its agents itself.
func benchRollout(t *testing.T, args ...string) benchRolloutRun {
	t.Helper()
	v1 := filepath.Join(t.TempDir(), "echo")
	if err := goBuild("./plugins/echo", v1, "1.0.0", ""); err != nil {
		t.Fatal(err)
	}
	v2 := filepath.Join(t.TempDir(), "echo")
	if err := goBuild("./plugins/echo", v2, "2.0.0", ""); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(args, "-bad") {
		v2 = fixture(t, "badtarget", "echo", "2.0.0")
	}
	ctx := testenv.Context(t, 4*time.Minute)
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "plughost"), append([]string{"bench", "rollout",
		"-exe", v1, "-target-exe", v2, "-nodes", "3", "-rate", "50", "-min-healthy-time", "500ms",
		"-healthy-deadline", "3s", "-swap-min-healthy-time", "200ms", "-health-interval", "200ms",
		"-before", "500ms", "-after", "500ms", "-within", "2m", "-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 45 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench rollout %v: %v\n%s%s", args, err, stdout.String(), stderr.String())
	}
	var runs []benchRolloutRun
	if err := json.Unmarshal(stdout.Bytes(), &runs); err != nil || len(runs) != 1 {
		t.Fatalf("bench rollout -format json: %v, %d runs\n%s", err, len(runs), stdout.String())
	}
	r := runs[0]
	t.Logf("bench rollout %v: %s", args, stdout.String())
	if r.Calls == 0 || len(r.Domains) != 3 {
		t.Fatalf("bench rollout made %d calls over %d domains, want calls over 3", r.Calls, len(r.Domains))
	}
	for i, d := range r.Domains {
		if want := "ud" + strconv.Itoa(i+1); d.Name != want {
			t.Errorf("domain %d is %s, want %s (the rollout's order)", i, d.Name, want)
		}
	}
	return r
}

// TestBenchRolloutCompletes: the bench rolls a healthy version out over
// three upgrade domains with an agent killed during the rollout: it
// completes, every domain done, and the killed agent, started again,
// serves the new version; calls after the end are answered by it.
func TestBenchRolloutCompletes(t *testing.T) {
	buildAll(t)
	r := benchRollout(t, "-kill-node", "during")
	if r.Outcome != "completed" {
		t.Fatalf("outcome %s (%s), want completed", r.Outcome, r.Failure)
	}
	for _, d := range r.Domains {
		if d.Phase != "done" {
			t.Errorf("domain %s ended %s, want done", d.Name, d.Phase)
		}
	}
	if r.Killed == "" || r.Serving == 0 {
		t.Errorf("killed %q, serving after its restart at %.2fs: want a node killed and serving again", r.Killed, r.Serving)
	}
	for node, v := range r.Final {
		if v != r.To {
			t.Errorf("%s ends on %s, want %s", node, v, r.To)
		}
	}
	if len(r.Final) != 3 || len(r.AfterEnd) != 1 || r.AfterEnd[r.To] == 0 {
		t.Errorf("final versions %v, answered after the end by %v: want every node and every call on %s", r.Final, r.AfterEnd, r.To)
	}
}

// TestBenchRolloutRollsBackABadVersion: a target that is never healthy is
// rolled back: the rollout ends rolled_back, naming why, and every node
// ends on the version it started with.
func TestBenchRolloutRollsBackABadVersion(t *testing.T) {
	buildAll(t)
	r := benchRollout(t, "-bad", "never-healthy")
	if r.Outcome != "rolled_back" || r.Failure == "" {
		t.Fatalf("outcome %s (failure %q), want rolled_back with the reason", r.Outcome, r.Failure)
	}
	if !slices.ContainsFunc(r.Domains, func(d benchRolloutDomain) bool { return d.Phase == "rolled_back" }) {
		t.Errorf("no domain rolled back: %+v", r.Domains)
	}
	for node, v := range r.Final {
		if v != r.From {
			t.Errorf("%s ends on %s, want %s", node, v, r.From)
		}
	}
	if r.Versions[r.To] != 0 {
		t.Errorf("%d calls answered by the bad version %s", r.Versions[r.To], r.To)
	}
}
