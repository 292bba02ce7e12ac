package test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// Short membership timings keep these tests quick; the defaults are 10 s
// and 2 s.
const (
	testDeadServerGrace     = 2 * time.Second
	testServerStabilization = 500 * time.Millisecond
)

func membershipArgs(more ...string) []string {
	return append([]string{"-dead-server-grace", testDeadServerGrace.String(),
		"-server-stabilization", testServerStabilization.String()}, more...)
}

// memberOf is how agent a's membership sees the member named name.
func memberOf(a *ClusterAgent, name string) (*operatorv1.Member, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := a.Operator().ListMembers(ctx, &operatorv1.ListMembersRequest{})
	if err != nil {
		return nil, "", err
	}
	for _, m := range resp.GetMembers() {
		if m.GetName() == name {
			return m, resp.GetLeader(), nil
		}
	}
	return nil, resp.GetLeader(), fmt.Errorf("%s does not list %s", a.Node, name)
}

func putVia(a *ClusterAgent, key string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, err := a.Store().Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte(key), Value: []byte("v")})
	return err
}

// TestClusterTwoCrashesKeepQuorum is issue 13's scenario: of three servers
// one is killed and stays down past the dead-server grace, then a second
// is killed, and one of the two is restarted. The two servers up must take
// writes: removing the first must not have left a configuration in which
// they are no quorum. The cases kill the leader or a follower each time.
func TestClusterTwoCrashesKeepQuorum(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		firstLeader, secondLeader bool
		restartFirst              bool
	}{
		{"follower then leader, restart the second", false, true, false},
		{"leader then leader, restart the second", true, true, false},
		{"follower then follower, restart the first", false, false, true},
		{"leader then follower, restart the first", true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) { twoCrashes(t, tc.firstLeader, tc.secondLeader, tc.restartFirst) })
	}
}

func twoCrashes(t *testing.T, firstLeader, secondLeader, restartFirst bool) {
	agents := NewClusterArgs(t, 3, membershipArgs()...)
	pick := func(leader bool, skip ...*ClusterAgent) *ClusterAgent {
		l := leaderOf(t, agents, skip...)
		if leader {
			return l
		}
		for _, a := range agents {
			if a != l && !isOneOf(skip, a) {
				return a
			}
		}
		t.Fatal("no follower")
		return nil
	}
	// Restarted agents join every other server, as operators configure
	// them, not only the first agent, which may be the one that is down.
	for _, a := range agents {
		a.Join = nil
		for _, b := range agents {
			if b != a {
				a.Join = append(a.Join, b.Serf)
			}
		}
	}
	first := pick(firstLeader)
	if err := putVia(first, "before", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	first.Kill9()
	killed := time.Now()
	var observer *ClusterAgent
	for _, a := range agents {
		if a != first {
			observer = a
			break
		}
	}
	testenv.WaitFor(t, 20*time.Second, first.Node+" failed in gossip", func() error {
		m, _, err := memberOf(observer, first.Node)
		if err != nil {
			return err
		}
		if m.GetStatus() != "failed" {
			return fmt.Errorf("%s is %s", first.Node, m.GetStatus())
		}
		return nil
	})
	failed := time.Since(killed)
	// Several reconcile rounds past the grace: the leader has decided.
	time.Sleep(3 * testDeadServerGrace)
	m, _, err := memberOf(observer, first.Node)
	if err != nil {
		t.Fatal(err)
	}
	second := pick(secondLeader, first)
	t.Logf("%s killed; failed in gossip after %v; raft role %s %v after the kill", first.Node, failed.Round(time.Millisecond), m.GetRaftRole(), time.Since(killed).Round(time.Millisecond))

	second.Kill9()
	back, down := second, first
	if restartFirst {
		back, down = first, second
	}
	back.startProcess()
	restarted := time.Now()
	var up []*ClusterAgent
	for _, a := range agents {
		if a != down {
			up = append(up, a)
		}
	}
	for _, a := range up {
		testenv.WaitFor(t, 30*time.Second, "a write through "+a.Node+" with "+down.Node+" down", func() error {
			return putVia(a, "after-"+a.Node, 2*time.Second)
		})
	}
	t.Logf("%s killed, %s restarted; writes through %s and %s succeed %v later", second.Node, back.Node, up[0].Node, up[1].Node, time.Since(restarted).Round(time.Millisecond))

	// The other comes back, and all three are voters.
	down.Start()
	for _, a := range agents {
		testenv.WaitFor(t, 30*time.Second, a.Node+" a voter", func() error {
			m, leaderName, err := memberOf(down, a.Node)
			if err != nil {
				return err
			}
			if r := m.GetRaftRole(); (r != "voter" && r != "leader") || m.GetStatus() != "alive" {
				return fmt.Errorf("%s is %s, raft role %s (leader %s)", a.Node, m.GetStatus(), r, leaderName)
			}
			return nil
		})
	}
	if err := putVia(down, "back", 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestClusterPausedVoterKeptOnRaftContact pauses a voter with SIGSTOP until
// gossip marks it failed, then resumes it: raft reaches it again at once,
// while gossip may go on calling it failed for a while. The leader must
// not remove a server raft is in contact with, however long gossip says it
// failed.
func TestClusterPausedVoterKeptOnRaftContact(t *testing.T) {
	// -min-quorum 2: removing one of three is allowed here, so only
	// raft's contact keeps the paused voter.
	agents := NewClusterArgs(t, 3, membershipArgs("-min-quorum", "2")...)
	leader := leaderOf(t, agents)
	var paused *ClusterAgent
	for _, a := range agents {
		if a != leader {
			paused = a
			break
		}
	}
	paused.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	resumed := false
	defer func() {
		if !resumed {
			paused.Signal(syscall.SIGCONT)
		}
	}()
	testenv.WaitFor(t, 20*time.Second, paused.Node+" failed in gossip", func() error {
		m, _, err := memberOf(leader, paused.Node)
		if err != nil {
			return err
		}
		if m.GetStatus() != "failed" {
			return fmt.Errorf("%s is %s", paused.Node, m.GetStatus())
		}
		return nil
	})
	failedAfter := time.Since(stopped)
	paused.Signal(syscall.SIGCONT)
	resumed = true
	contCh := time.Now()

	// Watch the leader's view for several times the grace.
	var aliveAfter time.Duration
	for time.Since(contCh) < 4*testDeadServerGrace {
		m, leaderName, err := memberOf(leader, paused.Node)
		if err == nil {
			if r := m.GetRaftRole(); r != "voter" && r != "leader" {
				t.Fatalf("%s removed from raft (role %s, gossip %s, leader %s) %v after it resumed; raft was in contact with it",
					paused.Node, r, m.GetStatus(), leaderName, time.Since(contCh).Round(time.Millisecond))
			}
			if aliveAfter == 0 && m.GetStatus() == "alive" {
				aliveAfter = time.Since(contCh)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s paused; failed in gossip after %v; resumed; alive in gossip again after %v (0: not within %v); still a voter",
		paused.Node, failedAfter.Round(time.Millisecond), aliveAfter.Round(time.Millisecond), 4*testDeadServerGrace)
	if err := putVia(paused, "resumed", 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
