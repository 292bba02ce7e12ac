package intent

import (
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/host/bundle"
)

func validRollout() *Rollout {
	return &Rollout{ID: "counter-3", Plugin: "counter", Seq: 3, From: "1.0.0", To: "2.0.0", Trigger: TriggerPin, State: RolloutRunning,
		Policy: RolloutPolicy{Mode: PolicyAuto, Strategy: bundle.StrategyOverlap, MaxParallel: 1, MinHealthyTime: bundle.Dur(time.Second),
			HealthyDeadline: bundle.Dur(5 * time.Second), ProgressDeadline: bundle.Dur(time.Minute), FailureAction: FailureRollback},
		Domains: []RolloutDomain{
			{Name: "ud1", From: "1.0.0", Version: "2.0.0", Phase: DomainDone, Nodes: []RolloutNode{{Name: "n1", Phase: NodeHealthy}}},
			{Name: "ud2", From: "1.0.0", Version: "1.0.0", Phase: DomainWaiting, Nodes: []RolloutNode{{Name: "n2", Phase: NodeWaiting}}},
		}}
}

func TestRolloutRecord(t *testing.T) {
	r := validRollout()
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if r.Key() != "rollout/counter/0000000003" {
		t.Fatalf("key %q", r.Key())
	}
	if p, s, ok := ParseRolloutID(r.ID); !ok || p != "counter" || s != 3 {
		t.Fatalf("ParseRolloutID(%q) = %q %d %v", r.ID, p, s, ok)
	}
	for _, bad := range []string{"counter", "-3", "counter-0", "counter-x", "../x-1"} {
		if _, _, ok := ParseRolloutID(bad); ok {
			t.Errorf("ParseRolloutID(%q) accepted", bad)
		}
	}
	if got := r.VersionFor("ud1"); got != "2.0.0" {
		t.Errorf("ud1 gets %s", got)
	}
	if got := r.VersionFor("ud2"); got != "1.0.0" {
		t.Errorf("ud2 gets %s", got)
	}
	if got := r.VersionFor("ud9"); got != "2.0.0" {
		t.Errorf("a domain joined since gets %s, want the target", got)
	}
	r.State, r.Paused = RolloutPaused, RolloutRollingBack
	if r.Target() != "1.0.0" || r.Done() {
		t.Errorf("paused rollback: target %s done %v", r.Target(), r.Done())
	}
	r.State, r.Paused = RolloutRolledBack, ""
	if got := r.VersionFor("ud1"); got != "1.0.0" {
		t.Errorf("rolled back: ud1 gets %s", got)
	}

	for name, mut := range map[string]func(*Rollout){
		"id":        func(r *Rollout) { r.ID = "other-3" },
		"state":     func(r *Rollout) { r.State = "nope" },
		"paused":    func(r *Rollout) { r.State = RolloutPaused },
		"version":   func(r *Rollout) { r.Domains[0].Version = "../x" },
		"node":      func(r *Rollout) { r.Domains[0].Nodes[0].Name = "a/b" },
		"twice":     func(r *Rollout) { r.Domains[1].Name = "ud1" },
		"parallel":  func(r *Rollout) { r.Policy.MaxParallel = 0 },
		"trigger":   func(r *Rollout) { r.Trigger = "x" },
		"failure":   func(r *Rollout) { r.Failure = strings.Repeat("x", maxText+1) },
		"supersede": func(r *Rollout) { r.SupersededBy = "other-4" },
	} {
		r := validRollout()
		mut(r)
		if r.Validate() == nil {
			t.Errorf("%s: a bad rollout passed its checks", name)
		}
	}
}
