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
	wait := func(what string) {
		t.Helper()
		select {
		case <-changes:
		case <-time.After(15 * time.Second):
			t.Fatalf("no change told after %s", what)
		}
	}
	drain()
	n1 := startNode(t, "n1", filepath.Join(t.TempDir(), "n1"), nodeOptions{Join: []string{n0.c.Addr()}})
	wait("n1 joined")
	drain()
	n1.leave()
	wait("n1 left")
}
