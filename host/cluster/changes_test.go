package cluster

import (
	"path/filepath"
	"testing"
	"time"
)

func TestMemberChangesTellsOfAJoinAndALeave(t *testing.T) {
	n0 := startNode(t, "n0", filepath.Join(t.TempDir(), "n0"), nodeOptions{Expect: 1})
	changes, stop := n0.c.MemberChanges()
	defer stop()
	drain := func() {
		for {
			select {
			case <-changes:
			default:
				return
			}
		}
	}
	status := func(name string) string {
		for _, m := range n0.c.Members() {
			if m.Name == name {
				return m.Status
			}
		}
		return ""
	}
	// until checks want only after each change told, so the change that
	// makes it hold must have been told.
	until := func(what string, want func() bool) {
		t.Helper()
		deadline := time.After(15 * time.Second)
		for {
			select {
			case <-changes:
			case <-deadline:
				t.Fatalf("no change told of %s (members %+v)", what, n0.c.Members())
			}
			if want() {
				return
			}
		}
	}
	drain()
	n1 := startNode(t, "n1", filepath.Join(t.TempDir(), "n1"), nodeOptions{Join: []string{n0.c.Addr()}})
	until("n1 joining", func() bool { return status("n1") == "alive" })
	drain()
	n1.leave()
	until("n1 leaving", func() bool { s := status("n1"); return s == "left" || s == "failed" })
}
