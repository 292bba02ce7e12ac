package catalog

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/store"
)

func newCatalog(t *testing.T) *Catalog {
	t.Helper()
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return New(st)
}

func manifest(name, version, digest string) *bundle.Manifest {
	m := &bundle.Manifest{Name: name, Version: version, APIVersions: []int{1}, Executable: name,
		SHA256: strings.Repeat(digest, 64/len(digest)), Services: []string{"echo.v1.EchoService"}}
	m.SetDefaults()
	return m
}

func register(t *testing.T, c *Catalog, versions ...string) {
	t.Helper()
	for _, v := range versions {
		if _, err := c.Register(context.Background(), manifest("echo", v, "ab"), "test"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRegisterIsIdempotentAndImmutable(t *testing.T) {
	c := newCatalog(t)
	ctx := context.Background()
	already, err := c.Register(ctx, manifest("echo", "1.0.0", "ab"), "test")
	if err != nil || already {
		t.Fatalf("first register: already=%v err=%v", already, err)
	}
	already, err = c.Register(ctx, manifest("echo", "1.0.0", "ab"), "test")
	if err != nil || !already {
		t.Fatalf("same digest again: already=%v err=%v, want already", already, err)
	}
	_, err = c.Register(ctx, manifest("echo", "1.0.0", "cd"), "test")
	if !errors.Is(err, ErrImmutable) || !strings.Contains(err.Error(), "echo 1.0.0 is already registered") {
		t.Fatalf("other digest: %v, want ErrImmutable naming echo 1.0.0", err)
	}
}

func TestDesiredFollowsPinElseHighestSemver(t *testing.T) {
	c := newCatalog(t)
	ctx := context.Background()
	register(t, c, "1.2.0", "1.10.0", "1.9.0", "2.0.0-rc.1")
	e, pin, err := c.Desired(ctx, "echo")
	if err != nil || pin != nil || e.Version != "2.0.0-rc.1" {
		t.Fatalf("unpinned desired = %v %v %v, want 2.0.0-rc.1 (semver, not string order)", e, pin, err)
	}
	if err := c.SetPin(ctx, "echo", "1.9.0", "op"); err != nil {
		t.Fatal(err)
	}
	e, pin, err = c.Desired(ctx, "echo")
	if err != nil || pin == nil || e.Version != "1.9.0" || pin.Actor != "op" {
		t.Fatalf("pinned desired = %v %v %v, want 1.9.0 pinned by op", e, pin, err)
	}
	if err := c.SetPin(ctx, "echo", "3.0.0", "op"); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("pin of an unregistered version: %v, want ErrUnknownVersion", err)
	}
	if err := c.ClearPin(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Desired(ctx, "nope"); !errors.Is(err, ErrUnknownPlugin) {
		t.Fatalf("unknown plugin: %v", err)
	}
	vs, _ := c.Versions(ctx, "echo")
	var got []string
	for _, v := range vs {
		got = append(got, v.Version)
	}
	if strings.Join(got, " ") != "1.2.0 1.9.0 1.10.0 2.0.0-rc.1" {
		t.Fatalf("versions in order %v", got)
	}
}

func TestEffectiveSkipsVersionsThatFailedHere(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name    string
		pin     string
		pinLate bool // pinned again after the failure
		failed  []string
		running string
		node    string
		want    string
	}{
		{name: "nothing failed", want: "1.2.0"},
		{name: "highest failed, unpinned: next highest", failed: []string{"1.2.0"}, want: "1.1.0"},
		{name: "highest failed, something runs: keep it", failed: []string{"1.2.0"}, running: "1.0.0", want: "1.0.0"},
		{name: "failed on another node only", failed: []string{"1.2.0"}, node: "n2", want: "1.2.0"},
		{name: "pinned version failed after the pin: keep what runs", pin: "1.1.0", failed: []string{"1.1.0"}, running: "1.0.0", want: "1.0.0"},
		{name: "pinned again after the failure: try it", pin: "1.1.0", pinLate: true, failed: []string{"1.1.0"}, running: "1.0.0", want: "1.1.0"},
		{name: "every version failed: the desired one", failed: []string{"1.0.0", "1.1.0", "1.2.0"}, want: "1.2.0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCatalog(t)
			register(t, c, "1.0.0", "1.1.0", "1.2.0")
			if tc.pin != "" {
				if err := c.SetPin(ctx, "echo", tc.pin, "op"); err != nil {
					t.Fatal(err)
				}
			}
			node := tc.node
			if node == "" {
				node = "n1"
			}
			for _, v := range tc.failed {
				if err := c.MarkFailed(ctx, node, "echo", v, "not healthy"); err != nil {
					t.Fatal(err)
				}
			}
			if tc.pinLate {
				// A re-pin counts when its time is after the failure's.
				fs, err := c.Failures(ctx, node, "echo")
				if err != nil {
					t.Fatal(err)
				}
				for !time.Now().After(fs[tc.pin].At) {
				}
				if err := c.SetPin(ctx, "echo", tc.pin, "op"); err != nil {
					t.Fatal(err)
				}
			}
			e, _, err := c.Effective(ctx, "n1", "echo", tc.running)
			if err != nil {
				t.Fatal(err)
			}
			if e.Version != tc.want {
				t.Fatalf("effective = %s, want %s", e.Version, tc.want)
			}
		})
	}
}

// TestAssignedFallsBackLikeEffective: the version a node is assigned runs
// there unless it failed there; then what runs stays, else the highest
// version that has not failed there.
func TestAssignedFallsBackLikeEffective(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name, assigned, running, want string
		failed                        []string
	}{
		{name: "nothing failed: the assigned version, even below the highest", assigned: "1.1.0", want: "1.1.0"},
		{name: "assigned failed here, something runs: keep it", assigned: "1.2.0", failed: []string{"1.2.0"}, running: "1.0.0", want: "1.0.0"},
		{name: "assigned failed here, nothing runs: highest not failed", assigned: "1.2.0", failed: []string{"1.2.0"}, want: "1.1.0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCatalog(t)
			register(t, c, "1.0.0", "1.1.0", "1.2.0")
			for _, v := range tc.failed {
				if err := c.MarkFailed(ctx, "n1", "echo", v, "not healthy"); err != nil {
					t.Fatal(err)
				}
			}
			e, _, err := c.Assigned(ctx, "n1", "echo", tc.assigned, tc.running)
			if err != nil {
				t.Fatal(err)
			}
			if e.Version != tc.want {
				t.Fatalf("assigned %s runs %s, want %s", tc.assigned, e.Version, tc.want)
			}
		})
	}
	c := newCatalog(t)
	register(t, c, "1.0.0")
	if _, _, err := c.Assigned(ctx, "n1", "echo", "9.9.9", ""); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("assigned an unregistered version: %v, want ErrUnknownVersion", err)
	}
}

func TestUnpinnedAndRollbackTarget(t *testing.T) {
	c := newCatalog(t)
	ctx := context.Background()
	register(t, c, "1.0.0", "1.1.0", "2.0.0")
	if err := c.MarkFailed(ctx, "n1", "echo", "2.0.0", "crashed"); err != nil {
		t.Fatal(err)
	}
	e, err := c.Unpinned(ctx, "n1", "echo")
	if err != nil || e.Version != "1.1.0" {
		t.Fatalf("unpinned = %v %v, want 1.1.0 (2.0.0 failed here)", e, err)
	}
	if _, err := c.LastHealthyBefore(ctx, "echo", "1.1.0"); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("rollback target with no swaps: %v", err)
	}
	for _, r := range []Record{
		{Action: "swap", From: "1.0.0", To: "1.1.0", Outcome: "done"},
		{Action: "swap", From: "1.1.0", To: "2.0.0", Outcome: "fell back"},
		{Action: "pin", From: "1.1.0", To: "1.0.0"},
	} {
		if err := c.AddHistory(ctx, "echo", r); err != nil {
			t.Fatal(err)
		}
	}
	prev, err := c.LastHealthyBefore(ctx, "echo", "1.1.0")
	if err != nil || prev != "1.0.0" {
		t.Fatalf("rollback target = %q %v, want 1.0.0", prev, err)
	}
	h, err := c.History(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, r := range h {
		actions = append(actions, r.Action)
	}
	if strings.Join(actions, ",") != "register,register,register,swap,swap,pin" {
		t.Fatalf("history order %v", actions)
	}
}

func TestPluginOfKey(t *testing.T) {
	for key, want := range map[string]string{
		"catalog/echo/1.0.0": "echo",
		"pins/counter":       "counter",
		"history/echo/1":     "",
		"events/echo/1":      "",
		"catalog/":           "",
	} {
		got, ok := PluginOfKey([]byte(key))
		if got != want || ok != (want != "") {
			t.Errorf("PluginOfKey(%q) = %q %v, want %q", key, got, ok, want)
		}
	}
}

// TestSetPinAsRecordsWhatMadeIt: a rollback's pin says so, and whether its
// rollout restores data; a plain pin says neither.
func TestSetPinAsRecordsWhatMadeIt(t *testing.T) {
	c := newCatalog(t)
	ctx := context.Background()
	register(t, c, "1.0.0", "1.1.0")
	if err := c.SetPinAs(ctx, "echo", Pin{Version: "1.0.0", Actor: "op", Action: "rollback", RestoreData: true}); err != nil {
		t.Fatal(err)
	}
	pin, err := c.GetPin(ctx, "echo")
	if err != nil || pin == nil || pin.Version != "1.0.0" || pin.Action != "rollback" || !pin.RestoreData || pin.At.IsZero() {
		t.Fatalf("rollback pin = %+v, %v", pin, err)
	}
	if err := c.SetPin(ctx, "echo", "1.1.0", "op"); err != nil {
		t.Fatal(err)
	}
	if pin, _ := c.GetPin(ctx, "echo"); pin.Action != "" || pin.RestoreData {
		t.Fatalf("plain pin = %+v: it kept the rollback's action or restore_data", pin)
	}
	if err := c.SetPinAs(ctx, "echo", Pin{Version: "9.0.0", Action: "rollback"}); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("rollback pin of an unregistered version: %v", err)
	}
}
