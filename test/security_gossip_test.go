package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plughost/plughost/host/cluster"
	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// startStranger starts an agent that is not one of the cluster's and tries
// to join it at join with the gossip key encrypt ("" none). It does not
// wait for its API: a stranger that cannot join has no leader.
func startStranger(t *testing.T, node, join, encrypt string, args ...string) *ClusterAgent {
	t.Helper()
	s := &ClusterAgent{
		Agent: &Agent{t: t, DataDir: t.TempDir(), API: testenv.FreeAddr(t), HTTP: testenv.FreeAddr(t), RPC: testenv.FreeAddr(t), Serf: testenv.FreeAddr(t),
			Node: node},
		Join: []string{join}, Args: args, Encrypt: encrypt,
	}
	t.Cleanup(func() {
		s.Stop()
		removeClusterCgroup(s)
		if t.Failed() {
			t.Logf("stranger %s log:\n%s", s.Node, s.Log())
		}
	})
	s.startProcess()
	return s
}

// waitJoinRefused waits until the stranger s has tried to join n times and
// failed each time, and is still running.
func waitJoinRefused(t *testing.T, s *ClusterAgent, n int) {
	t.Helper()
	testenv.WaitFor(t, 60*time.Second, s.Node+"'s join attempts to fail", func() error {
		select {
		case <-s.exited:
			t.Fatalf("stranger %s exited: %v\n%s", s.Node, s.exitErr, s.Log())
		default:
		}
		if strings.Contains(s.Log(), "joined the cluster") {
			t.Fatalf("stranger %s joined the cluster:\n%s", s.Node, s.Log())
		}
		if c := strings.Count(s.Log(), "join failed, retrying"); c < n {
			return fmt.Errorf("%d failed join attempts so far", c)
		}
		return nil
	})
}

// membersOf is what a's `plughost members` says: node name → serf status.
func membersOf(a *ClusterAgent) (map[string]string, error) {
	out, errOut, code := a.CLI("members", "-format", "json")
	if code != 0 {
		return nil, fmt.Errorf("members on %s: %s", a.Node, errOut)
	}
	var ms []struct{ Name, Status string }
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		return nil, err
	}
	got := map[string]string{}
	for _, m := range ms {
		got[m.Name] = m.Status
	}
	return got, nil
}

// raftPeersOf is the raft configuration's server IDs as a's `plughost
// operator raft list-peers` says, sorted.
func raftPeersOf(a *ClusterAgent) ([]string, error) {
	out, errOut, code := a.CLI("operator", "raft", "list-peers", "-format", "json")
	if code != 0 {
		return nil, fmt.Errorf("list-peers on %s: %s", a.Node, errOut)
	}
	var ps []struct{ ID string }
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(ps))
	for _, p := range ps {
		ids = append(ids, p.ID)
	}
	sort.Strings(ids)
	return ids, nil
}

// checkOnlyMembers fails unless every agent sees exactly the agents, all
// alive, in gossip and, as voters or not, in raft.
func checkOnlyMembers(t *testing.T, agents []*ClusterAgent) {
	t.Helper()
	var want []string
	for _, a := range agents {
		want = append(want, a.Node)
	}
	sort.Strings(want)
	for _, a := range agents {
		ms, err := membersOf(a)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for name, st := range ms {
			names = append(names, name)
			if st != "alive" && slices.Contains(want, name) {
				t.Fatalf("%s sees %s %s: %v", a.Node, name, st, ms)
			}
		}
		sort.Strings(names)
		if !slices.Equal(names, want) {
			t.Fatalf("%s's members are %v, want only %v", a.Node, ms, want)
		}
		peers, err := raftPeersOf(a)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(peers, want) {
			t.Fatalf("%s's raft peers are %v, want only %v", a.Node, peers, want)
		}
	}
}

// waitAllAlive waits until every agent sees every other alive, and no one
// else.
func waitAllAlive(t *testing.T, agents []*ClusterAgent) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, "every member alive to every other", func() error {
		for _, a := range agents {
			ms, err := membersOf(a)
			if err != nil {
				return err
			}
			if len(ms) != len(agents) {
				return fmt.Errorf("%s sees %v", a.Node, ms)
			}
			for _, b := range agents {
				if ms[b.Node] != "alive" {
					return fmt.Errorf("%s sees %v", a.Node, ms)
				}
			}
		}
		return nil
	})
}

// putThrough writes a key through each agent.
func putThrough(t *testing.T, agents []*ClusterAgent, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, a := range agents {
		key := prefix + "/" + a.Node
		if _, err := a.Store().Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte(key), Value: []byte("v")}); err != nil {
			t.Fatalf("put %s through %s: %v", key, a.Node, err)
		}
	}
}

// TestGossipStrangersCannotJoin: finding 4, on gossip. A cluster whose
// gossip is encrypted keeps out an agent without its key (one with no key
// at all, and one with another key that wants to become a server of this
// cluster): neither is ever a member or a raft peer, on any node, while
// they keep trying, and the cluster's writes go on.
func TestGossipStrangersCannotJoin(t *testing.T) {
	agents := NewCluster(t, 3)
	waitAllAlive(t, agents)
	wrong, err := cluster.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	// Outside -dev an agent refuses to run without a key, so the one
	// without is a -dev agent told to join.
	noKey := startStranger(t, "rogue-nokey", agents[0].Serf, "", "-dev")
	wrongKey := startStranger(t, "rogue-wrongkey", agents[0].Serf, wrong, "-bootstrap-expect", "3")
	waitJoinRefused(t, noKey, 3)
	waitJoinRefused(t, wrongKey, 3)

	checkOnlyMembers(t, agents)
	putThrough(t, agents, "strangers")
	// The refusals were the cluster's: it would not read their gossip.
	for _, want := range []string{"remote state is not encrypted", "No installed keys could decrypt the message"} {
		found := false
		for _, a := range agents {
			found = found || strings.Contains(a.Log(), want)
		}
		if !found {
			t.Errorf("no member logged %q for the strangers' join attempts", want)
		}
	}
	// And the strangers know no one either: the dev one says so itself
	// (the other's API wants a token of a cluster it never formed; its
	// log shows it never joined, see waitJoinRefused).
	for _, s := range []*ClusterAgent{noKey} {
		// Its join attempts begin before its API has a token to check
		// (a dev agent bootstraps its ACLs once it leads).
		var ms map[string]string
		testenv.WaitFor(t, 20*time.Second, "members on "+s.Node, func() (err error) {
			ms, err = membersOf(s)
			return err
		})
		if len(ms) != 1 {
			t.Errorf("stranger %s sees members %v", s.Node, ms)
		}
	}
	// Still out after more attempts.
	waitJoinRefused(t, wrongKey, 5)
	checkOnlyMembers(t, agents)
}

// keyringReport is `plughost keyring -format json`.
type keyringReport struct {
	Nodes, Responses int
	Failures         map[string]string
	Keys             []struct {
		Key          string
		Nodes        int
		PrimaryNodes int `json:"primary_nodes"`
	}
}

func keyringCLI(t *testing.T, a *ClusterAgent, args ...string) (keyringReport, string, int) {
	t.Helper()
	out, errOut, code := a.CLI(append([]string{"keyring", "-format", "json"}, args...)...)
	var r keyringReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("keyring %v on %s: exit %d, %v\nstdout %s\nstderr %s", args, a.Node, code, err, out, errOut)
	}
	return r, errOut, code
}

// keysHeld is a keyring listing as key → "installed/primary" counts.
func keysHeld(t *testing.T, a *ClusterAgent) map[string]string {
	t.Helper()
	r, errOut, code := keyringCLI(t, a, "-list")
	if code != 0 || r.Nodes != 3 || r.Responses != 3 {
		t.Fatalf("keyring -list on %s: exit %d, %+v, %s", a.Node, code, r, errOut)
	}
	got := map[string]string{}
	for _, k := range r.Keys {
		got[k.Key] = fmt.Sprintf("%d/%d", k.Nodes, k.PrimaryNodes)
	}
	return got
}

// TestGossipKeyRotation: the three members rotate their gossip key with
// `plughost keyring` (install the new one, use it, remove the old) and
// stay members throughout; an agent with only the old key can no longer
// join; a member restarted with the old key still given to -encrypt keeps
// the rotated keyring from its data dir, says that the keyring wins, and
// rejoins.
func TestGossipKeyRotation(t *testing.T) {
	agents := NewCluster(t, 3)
	waitAllAlive(t, agents)
	old := agents[0].Encrypt
	if got := keysHeld(t, agents[1]); len(got) != 1 || got[old] != "3/3" {
		t.Fatalf("keys before the rotation: %v, want only the -encrypt key on 3 of 3 as primary", got)
	}
	next, err := cluster.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}

	out, errOut, code := agents[0].CLI("keyring", "-install", next)
	if code != 0 || !strings.Contains(out, "installed the gossip key on all 3 members") {
		t.Fatalf("keyring -install: exit %d\n%s%s", code, out, errOut)
	}
	if got := keysHeld(t, agents[2]); len(got) != 2 || got[old] != "3/3" || got[next] != "3/0" {
		t.Fatalf("keys after -install: %v", got)
	}
	checkOnlyMembers(t, agents)

	if out, errOut, code := agents[1].CLI("keyring", "-use", next); code != 0 || !strings.Contains(out, "primary key of all 3 members") {
		t.Fatalf("keyring -use: exit %d\n%s%s", code, out, errOut)
	}
	if got := keysHeld(t, agents[0]); len(got) != 2 || got[old] != "3/0" || got[next] != "3/3" {
		t.Fatalf("keys after -use: %v", got)
	}
	checkOnlyMembers(t, agents)
	putThrough(t, agents, "used")

	if out, errOut, code := agents[2].CLI("keyring", "-remove", old); code != 0 || !strings.Contains(out, "removed the gossip key from all 3 members") {
		t.Fatalf("keyring -remove: exit %d\n%s%s", code, out, errOut)
	}
	if got := keysHeld(t, agents[0]); len(got) != 1 || got[next] != "3/3" {
		t.Fatalf("keys after -remove: %v", got)
	}

	// A member refuses to remove its primary key: each one is named.
	r, errOut, code := keyringCLI(t, agents[0], "-remove", next)
	if code != 1 || len(r.Failures) != 3 || !strings.Contains(errOut, "failed on 3 of 3 members") {
		t.Fatalf("removing the primary key: exit %d, %+v\n%s", code, r, errOut)
	}
	for _, a := range agents {
		if !strings.Contains(errOut, "  "+a.Node+": ") || !strings.Contains(r.Failures[a.Node], "primary key") {
			t.Fatalf("removing the primary key: %s's failure not shown: %+v\n%s", a.Node, r.Failures, errOut)
		}
	}
	// A bad key is refused before any member is asked.
	if _, errOut, code := agents[0].CLI("keyring", "-install", "c2hvcnQ="); code != 1 || !strings.Contains(errOut, "base64 of 32 bytes") || !strings.Contains(errOut, "InvalidArgument") {
		t.Fatalf("installing a 5-byte key: exit %d, %s", code, errOut)
	}
	checkOnlyMembers(t, agents)
	putThrough(t, agents, "removed")

	// The old key no longer lets anyone in.
	stale := startStranger(t, "n4-oldkey", agents[0].Serf, old, "-bootstrap-expect", "3")
	waitJoinRefused(t, stale, 3)
	checkOnlyMembers(t, agents)

	// n2 restarts with the old key still on its command line: its keyring
	// file, rotated, wins.
	n2 := agents[1]
	n2.Stop()
	n2.Start()
	if !strings.Contains(n2.Log(), "the keyring file wins") {
		t.Errorf("n2 restarted with a stale -encrypt and did not say that its keyring wins:\n%s", n2.Log())
	}
	waitAllAlive(t, agents)
	checkOnlyMembers(t, agents)
	putThrough(t, agents, "restarted")
	file := filepath.Join(n2.DataDir, "serf", "keyring")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := json.Unmarshal(b, &keys); err != nil || !slices.Equal(keys, []string{next}) {
		t.Fatalf("%s holds %s (%v), want only the new key", file, b, err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, mode %v, want 0600", file, err, fi.Mode().Perm())
	}
	if got := keysHeld(t, n2); len(got) != 1 || got[next] != "3/3" {
		t.Fatalf("keys after n2's restart: %v", got)
	}
}

// openParents opens every directory from dir up to the temp root to other
// users (0755), as /var/lib is, so that only the agent's own modes keep
// them out of what is below.
func openParents(t testing.TB, dir string) {
	t.Helper()
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Dir(dir); strings.HasPrefix(d, tmp+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// readAsNobody reads path as uid and gid 65534, as an unprivileged local
// user would, and returns the error.
func readAsNobody(path string) error {
	cmd := exec.Command("cat", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// checkPrivateDataDir fails unless the data dir is 0700, every directory of
// its store and serf 0700 and every file in them and at its top 0600; it
// returns the files of the raft log.
func checkPrivateDataDir(t *testing.T, dataDir string) (raftLog []string) {
	t.Helper()
	mode := func(path string) os.FileMode {
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode()
	}
	if m := mode(dataDir).Perm(); m != 0o700 {
		t.Errorf("data dir %s is %#o, want 0700", dataDir, m)
	}
	top, err := os.ReadDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range top {
		if p := filepath.Join(dataDir, e.Name()); e.Type().IsRegular() && mode(p).Perm() != 0o600 {
			t.Errorf("%s is %#o, want 0600", p, mode(p).Perm())
		}
	}
	for _, tree := range []string{"store", "serf"} {
		err := filepath.WalkDir(filepath.Join(dataDir, tree), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			want := os.FileMode(0o600)
			if d.IsDir() {
				want = 0o700
			}
			if m := mode(path).Perm(); m != want {
				t.Errorf("%s is %#o, want %#o", path, m, want)
			}
			if strings.HasSuffix(path, ".wal") || strings.HasSuffix(path, "raft.db") {
				raftLog = append(raftLog, path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(raftLog) == 0 {
		t.Fatalf("no raft log file under %s", dataDir)
	}
	return raftLog
}

// TestDataDirPrivate: finding 10. An agent started under umask 000 keeps
// its data dir to itself: the data dir 0700, the raft log, the gossip
// keyring and its records 0600, and a backup 'plughost store backup'
// writes 0600; an unprivileged user reads none of them. An agent started
// on a data dir whose modes were opened (0755 directories, 0644 files)
// closes them again, warning with each path it fixed.
func TestDataDirPrivate(t *testing.T) {
	// No parallel test runs meanwhile (this one is not parallel), and the
	// agent and the CLI inherit it.
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	key, err := cluster.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	a := NewAgent(t, AgentOptions{Args: []string{"-encrypt", key}})
	openParents(t, a.DataDir)
	backupDir := t.TempDir()
	openParents(t, filepath.Join(backupDir, "x"))
	if err := os.Chmod(backupDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The reader can read what is open to it: what it cannot read below is
	// kept from it by the modes checked.
	control := filepath.Join(backupDir, "open")
	if err := os.WriteFile(control, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := readAsNobody(control); err != nil {
		t.Fatalf("uid 65534 cannot read even %s: %v", control, err)
	}

	if _, errOut, code := a.CLI("store", "put", "-ns", "app", "password", "hunter2"); code != 0 {
		t.Fatalf("store put: %s", errOut)
	}
	backup := filepath.Join(backupDir, "store.bak")
	if out, errOut, code := a.CLI("store", "backup", backup); code != 0 {
		t.Fatalf("store backup: %s%s", out, errOut)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("backup %s: %v, mode %#o, want 0600", backup, err, fi.Mode().Perm())
	}
	keyring := filepath.Join(a.DataDir, "serf", "keyring")
	secrets := append(checkPrivateDataDir(t, a.DataDir), keyring, backup)
	for _, f := range secrets {
		if err := readAsNobody(f); err == nil || !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("uid 65534 reading %s: %v, want permission denied", f, err)
		}
	}

	// Opened while the agent was down: it closes them at start.
	a.Stop()
	var opened []string
	err = filepath.WalkDir(a.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink != 0 {
			return err
		}
		mode := os.FileMode(0o644)
		if d.IsDir() {
			mode = 0o755
		}
		opened = append(opened, path)
		return os.Chmod(path, mode)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := readAsNobody(keyring); err != nil {
		t.Fatalf("the opened keyring is not readable to uid 65534, so the test shows nothing: %v", err)
	}
	a.Start()
	checkPrivateDataDir(t, a.DataDir)
	for _, p := range []string{a.DataDir, filepath.Join(a.DataDir, "store"), keyring, filepath.Join(a.DataDir, "cgroup.json")} {
		if !strings.Contains(a.Log(), "path="+p+" ") {
			t.Errorf("the agent did not warn that it fixed %s:\n%s", p, a.Log())
		}
	}
	for _, f := range []string{keyring, secrets[0]} {
		if err := readAsNobody(f); err == nil {
			t.Errorf("uid 65534 reads %s after the restart", f)
		}
	}
	if out, errOut, code := a.CLI("store", "get", "-ns", "app", "password"); code != 0 || !strings.Contains(out, "hunter2") {
		t.Fatalf("store get after the restart: %s%s", out, errOut)
	}
}
