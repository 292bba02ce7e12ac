package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/plughost/plughost/host/cluster"
	"github.com/plughost/plughost/internal/testenv"
	aclv1 "github.com/plughost/plughost/proto/plughost/acl/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// ClusterAgent is a real agent started as a cluster member: no -dev, with
// -join and -bootstrap-expect. It shares Agent's helpers (Stop, Kill9, CLI,
// Drop, WaitRunning); its own Start passes the cluster flags.
type ClusterAgent struct {
	*Agent
	Join   []string
	Expect int
	Args   []string // more agent flags
	// Encrypt is the gossip key passed with -encrypt ("" none): NewCluster
	// gives the agents of one cluster one key.
	Encrypt string
	// NoTLS leaves out the certificate every cluster agent is given
	// otherwise (nodeTLSArgs).
	NoTLS bool
}

// NewCluster starts size agents that join the first one's serf address with
// -bootstrap-expect size, and waits until every one serves its API. The
// third agent keeps its raft log in boltdb and the others in the default
// WAL, so every cluster test runs both log stores, mixed as they are when
// a node upgraded with an older data dir.
func NewCluster(t testing.TB, size int) []*ClusterAgent {
	t.Helper()
	return NewClusterArgs(t, size)
}

// NewClusterArgs is NewCluster with more flags for every agent.
func NewClusterArgs(t testing.TB, size int, args ...string) []*ClusterAgent {
	t.Helper()
	return NewClusterEach(t, size, func(int) []string { return args })
}

// NewClusterEach is NewCluster with more flags for agent i (0-based) from
// argsOf(i) (area: nodes, for per-node domains and tags).
func NewClusterEach(t testing.TB, size int, argsOf func(i int) []string) []*ClusterAgent {
	t.Helper()
	buildAll(t)
	key, err := cluster.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	agents := make([]*ClusterAgent, size)
	token := &tokenBox{} // the cluster's, from its ACL bootstrap
	for i := range agents {
		agents[i] = &ClusterAgent{
			Agent: &Agent{t: t, DataDir: t.TempDir(), API: testenv.FreeAddr(t), HTTP: testenv.FreeAddr(t), RPC: testenv.FreeAddr(t), Serf: testenv.FreeAddr(t),
				Node: fmt.Sprint("n", i+1), acl: token},
			Expect:  size,
			Args:    append([]string(nil), argsOf(i)...),
			Encrypt: key,
		}
	}
	if size >= 3 {
		agents[2].Args = append(agents[2].Args, "-raft-log", "boltdb")
	}
	for _, a := range agents {
		a.Join = []string{agents[0].Serf}
	}
	t.Cleanup(func() {
		for _, a := range agents {
			if a.cmd != nil && a.cmd.Process != nil {
				_ = a.cmd.Process.Signal(syscall.SIGCONT)
			}
			a.Stop()
			removeClusterCgroup(a)
			if t.Failed() {
				t.Logf("agent %s log:\n%s", a.Node, a.Log())
			}
		}
	})
	StartAll(agents...)
	return agents
}

// StartAll starts the agents' processes together (a cluster node serves its
// API only once there is a leader) and waits for every API.
func StartAll(agents ...*ClusterAgent) {
	for _, a := range agents {
		a.startProcess()
	}
	for _, a := range agents {
		a.waitAPI(agents...)
	}
}

// Start restarts one agent and waits until it serves its API.
func (a *ClusterAgent) Start() {
	a.t.Helper()
	a.startProcess()
	a.waitAPI()
}

func (a *ClusterAgent) cgroupParent() string {
	return "plughost-test-" + filepath.Base(filepath.Dir(a.DataDir)) + "-" + filepath.Base(a.DataDir)
}

func (a *ClusterAgent) startProcess() {
	a.t.Helper()
	args := []string{"agent", "-node", a.Node, "-data-dir", a.DataDir, "-api", a.API, "-http", a.HTTP,
		"-rpc", a.RPC, "-serf", a.Serf, "-bootstrap-expect", fmt.Sprint(a.Expect), "-cgroup-parent", a.cgroupParent(),
		"-tag", "zone=" + a.Node}
	for _, j := range a.Join {
		args = append(args, "-join", j)
	}
	if a.Encrypt != "" {
		args = append(args, "-encrypt", a.Encrypt)
	}
	if !a.NoTLS {
		args = append(args, nodeTLSArgs(a.t, a.Node)...)
	}
	args = append(args, a.Args...)
	a.log = &testenv.SyncBuffer{}
	a.cmd = exec.Command(filepath.Join(binDir, "plughost"), args...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	exited := make(chan struct{})
	a.exited = exited
	cmd := a.cmd
	go func() {
		a.exitErr = cmd.Wait()
		close(exited)
	}()
}

// waitAPI waits until a serves its API and knows a leader, failing at once
// if a, or one of the peers it needs for a leader, exits.
func (a *ClusterAgent) waitAPI(peers ...*ClusterAgent) {
	a.t.Helper()
	testenv.WaitFor(a.t, 60*time.Second, a.Node+" API to answer", func() error {
		for _, p := range append([]*ClusterAgent{a}, peers...) {
			select {
			case <-p.exited:
				a.t.Fatalf("agent %s exited: %v\n%s", p.Node, p.exitErr, p.log.String())
			default:
			}
		}
		if err := a.bootstrapACL(); err != nil {
			return err
		}
		return a.ready()
	})
}

// bootstrapACL bootstraps the cluster's ACLs through a, once per cluster,
// and shares the management token with every agent of the cluster.
func (a *ClusterAgent) bootstrapACL() error {
	if a.Token() != "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := aclv1.NewACLServiceClient(a.Conn()).Bootstrap(ctx, &aclv1.BootstrapRequest{})
	if err != nil {
		return fmt.Errorf("ACL bootstrap through %s: %w", a.Node, err)
	}
	a.learnToken(resp.GetToken().GetSecretId())
	return nil
}

// Signal sends sig to the agent process alone (SIGSTOP, SIGCONT).
func (a *ClusterAgent) Signal(sig syscall.Signal) {
	a.t.Helper()
	if err := a.cmd.Process.Signal(sig); err != nil {
		a.t.Fatalf("signal %v to %s: %v", sig, a.Node, err)
	}
}

// removeClusterCgroup removes the agent's cgroup parent once it stopped.
func removeClusterCgroup(a *ClusterAgent) {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", a.cgroupParent()))
	for _, d := range dirs {
		_ = os.Remove(d)
	}
}

// Store is a StoreService client of the agent's API, shared per agent.
func (a *ClusterAgent) Store() storev1.StoreServiceClient {
	storeClientsMu.Lock()
	defer storeClientsMu.Unlock()
	if c, ok := storeClients[a.Agent]; ok {
		return c
	}
	c := storev1.NewStoreServiceClient(a.Conn())
	storeClients[a.Agent] = c
	return c
}

var (
	storeClientsMu sync.Mutex
	storeClients   = map[*Agent]storev1.StoreServiceClient{}
)

// leaderOf asks the agents who leads and returns that agent.
func leaderOf(t testing.TB, agents []*ClusterAgent, skip ...*ClusterAgent) *ClusterAgent {
	t.Helper()
	var leader *ClusterAgent
	testenv.WaitFor(t, 30*time.Second, "a leader", func() error {
		for _, a := range agents {
			if isOneOf(skip, a) {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := a.Operator().ListMembers(ctx, &operatorv1.ListMembersRequest{})
			cancel()
			if err != nil {
				continue
			}
			for _, b := range agents {
				if b.Node == resp.GetLeader() && !isOneOf(skip, b) {
					leader = b
					return nil
				}
			}
		}
		return fmt.Errorf("no agent names a live leader")
	})
	return leader
}

func isOneOf(list []*ClusterAgent, a *ClusterAgent) bool {
	for _, b := range list {
		if a == b {
			return true
		}
	}
	return false
}
