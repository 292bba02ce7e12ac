package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
	"github.com/plughost/plughost/store"
)

// TestNoServerJoinsRaftUnverified: the leader adds a server that gossip
// knows only once VerifyServer accepts it at its advertised RPC address;
// one it refuses stays out of raft however long it is alive.
func TestNoServerJoinsRaftUnverified(t *testing.T) {
	var mu sync.Mutex
	asked := map[string]int{}
	verify := func(_ context.Context, node, addr string) error {
		mu.Lock()
		defer mu.Unlock()
		asked[node]++
		if node == "rogue" {
			return errors.New("its certificate names another node")
		}
		return nil
	}
	base := t.TempDir()
	n1 := startNode(t, "n1", filepath.Join(base, "n1"), nodeOptions{Expect: 1, VerifyServer: verify})
	testenv.WaitFor(t, 15*time.Second, "n1 to lead", func() error {
		if !n1.st.IsLeader() {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	join := nodeOptions{Join: []string{n1.c.Addr()}, VerifyServer: verify}
	startNode(t, "n2", filepath.Join(base, "n2"), join)
	startNode(t, "rogue", filepath.Join(base, "rogue"), join)
	testenv.WaitFor(t, 15*time.Second, "n2 to become a voter", func() error {
		if voters(t, n1)["n2"] != store.Voter {
			return fmt.Errorf("configuration %v", voters(t, n1))
		}
		return nil
	})
	testenv.WaitFor(t, 15*time.Second, "the leader to ask about rogue twice", func() error {
		mu.Lock()
		defer mu.Unlock()
		if asked["rogue"] < 2 {
			return fmt.Errorf("asked %v", asked)
		}
		return nil
	})
	if _, ok := voters(t, n1)["rogue"]; ok {
		t.Fatalf("rogue is in raft: %v", voters(t, n1))
	}
	mu.Lock()
	defer mu.Unlock()
	if asked["n2"] != 1 {
		t.Fatalf("n2 was verified %d times; once at an address is enough", asked["n2"])
	}
}
