package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/plughost/plughost/host/cluster"
	"github.com/plughost/plughost/host/tlsutil"
	"github.com/plughost/plughost/internal/loopback"
	aclv1 "github.com/plughost/plughost/proto/plughost/acl/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// benchCluster is a cluster of real agents on loopback that a bench starts
// for itself: its own CA, gossip key and data directories under dir, each
// agent a child process of this one with its log in dir/<node>.log.
type benchCluster struct {
	dir    string
	bin    string // this binary, which the agents run
	token  string
	agents []*benchAgent
	// cgroup is the cgroup parent of the bench's agents, its own: a
	// killed agent cannot remove its groups, so stop removes them.
	cgroup string
}

// benchAgent is one agent of a benchCluster.
type benchAgent struct {
	node                 string
	api, http, rpc, serf string
	args                 []string // the agent's command line, to start it again
	cmd                  *exec.Cmd
	exited               chan struct{}
	conn                 *grpc.ClientConn
}

// start starts a's agent process, its output appended to its log.
func (c *benchCluster) start(a *benchAgent) error {
	log, err := os.OpenFile(c.logOf(a), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	a.exited = make(chan struct{})
	a.cmd = exec.Command(c.bin, a.args...)
	a.cmd.Stdout, a.cmd.Stderr = log, log
	// Its own process group: the bench kills a node's agent and
	// every process it started at once, as a machine's loss would.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.cmd.Start(); err != nil {
		return fmt.Errorf("starting agent %s: %w", a.node, err)
	}
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(a.cmd, a.exited)
	return nil
}

// restart starts the agent of a, killed before, again with its data.
func (c *benchCluster) restart(a *benchAgent) error {
	select {
	case <-a.exited:
	default:
		return fmt.Errorf("agent %s still runs", a.node)
	}
	return c.start(a)
}

// startBenchCluster starts n agents of this binary, bootstraps their ACLs
// and waits until every API answers with the management token. args are
// more agent flags for every agent; agentArgs, if not nil, gives more for
// the i'th agent (from 0).
func startBenchCluster(ctx context.Context, dir string, n int, agentArgs func(i int) []string, args ...string) (_ *benchCluster, err error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := &benchCluster{dir: dir, bin: bin, cgroup: "plughost-bench-" + strconv.Itoa(os.Getpid()) + "-" + filepath.Base(dir)}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	ca, err := tlsutil.CreateCA(1)
	if err != nil {
		return nil, err
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.Cert, 0o600); err != nil {
		return nil, err
	}
	key, err := cluster.GenerateKey()
	if err != nil {
		return nil, err
	}
	for i := range n {
		a := &benchAgent{node: "n" + strconv.Itoa(i+1)}
		for _, p := range []*string{&a.api, &a.http, &a.rpc, &a.serf} {
			if *p, err = loopback.FreeAddr(); err != nil {
				return nil, err
			}
		}
		c.agents = append(c.agents, a)
	}
	for i, a := range c.agents {
		pem, err := tlsutil.CreateCert(tlsutil.CertRequest{Node: a.node, Days: 1, CA: ca})
		if err != nil {
			return nil, err
		}
		certFile, keyFile := filepath.Join(dir, a.node+".pem"), filepath.Join(dir, a.node+"-key.pem")
		if err := tlsutil.WriteFiles(pem, certFile, keyFile); err != nil {
			return nil, err
		}
		a.args = append([]string{"agent", "-node", a.node, "-data-dir", filepath.Join(dir, a.node),
			"-api", a.api, "-http", a.http, "-rpc", a.rpc, "-serf", a.serf,
			"-bootstrap-expect", strconv.Itoa(min(n, 3)), "-join", c.agents[0].serf, "-encrypt", key,
			"-ca-file", caFile, "-cert-file", certFile, "-key-file", keyFile, "-cgroup-parent", c.cgroup}, args...)
		if agentArgs != nil {
			a.args = append(a.args, agentArgs(i)...)
		}
		if err := c.start(a); err != nil {
			return nil, err
		}
	}
	if err := c.bootstrap(ctx); err != nil {
		return nil, err
	}
	for _, a := range c.agents {
		a.conn, err = grpc.NewClient(a.api, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(bearer{"authorization": "Bearer " + c.token}))
		if err != nil {
			return nil, err
		}
	}
	return c, nil
}

// bootstrap bootstraps the cluster's ACLs through its first agent once it
// has a leader, within a minute.
func (c *benchCluster) bootstrap(ctx context.Context) error {
	conn, err := grpc.NewClient(c.agents[0].api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		for _, a := range c.agents {
			select {
			case <-a.exited:
				return fmt.Errorf("agent %s exited while the cluster started: see %s", a.node, c.logOf(a))
			default:
			}
		}
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := aclv1.NewACLServiceClient(conn).Bootstrap(cctx, &aclv1.BootstrapRequest{})
		ccancel()
		if err == nil {
			c.token = resp.GetToken().GetSecretId()
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("the bench cluster did not come up within a minute: ACL bootstrap through %s: %v (logs in %s)", c.agents[0].node, last, c.dir)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *benchCluster) logOf(a *benchAgent) string { return filepath.Join(c.dir, a.node+".log") }

// agent returns the agent named node, or nil.
func (c *benchCluster) agent(node string) *benchAgent {
	for _, a := range c.agents {
		if a.node == node {
			return a
		}
	}
	return nil
}

// kill kills a's agent and every process of its group with SIGKILL.
func (a *benchAgent) kill() error {
	if err := syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill -9 agent %s: %w", a.node, err)
	}
	return nil
}

// stop asks every agent still running to stop, waits up to 30 s for each,
// then kills what is left.
func (c *benchCluster) stop() {
	for _, a := range c.agents {
		if a.conn != nil {
			_ = a.conn.Close()
		}
		if a.cmd != nil && a.cmd.Process != nil {
			_ = a.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(30 * time.Second)
	for _, a := range c.agents {
		if a.cmd == nil || a.cmd.Process == nil {
			continue
		}
		select {
		case <-a.exited:
		case <-deadline:
			_ = a.kill()
			<-a.exited
		}
	}
	removeCgroupTree(c.cgroup)
}

// removeCgroupTree removes the cgroup parent's directories, deepest
// first, in every hierarchy (cgroup v1 controllers, or v2's one tree).
// The groups of an agent killed with SIGKILL outlive it; its processes
// are gone (they die with the agent), so the groups are empty.
func removeCgroupTree(parent string) {
	roots, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parent))
	roots = append(roots, filepath.Join("/sys/fs/cgroup", parent))
	// A process killed a moment ago may still be leaving its group.
	for range 50 {
		if !removeDirsDeepestFirst(roots) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeDirsDeepestFirst removes the trees at roots and reports whether
// one is left.
func removeDirsDeepestFirst(roots []string) (left bool) {
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
		if _, err := os.Stat(root); err == nil {
			left = true
		}
	}
	return left
}

// addBenchBundle bundles exe with the manifest fields of base (those the
// binary cannot say: placement, health, upgrade, config) and adds it
// through agent a. It returns the plugin's name and version.
func addBenchBundle(ctx context.Context, c *benchCluster, a *benchAgent, exe string, base any) (name, version string, err error) {
	path, err := buildBenchBundle(ctx, c, exe, base)
	if err != nil {
		return "", "", err
	}
	return addBundleFile(ctx, a, path)
}

// buildBenchBundle bundles exe with the manifest fields of base into a
// directory of its own under the cluster's and returns the bundle's path.
func buildBenchBundle(ctx context.Context, c *benchCluster, exe string, base any) (string, error) {
	dir, err := os.MkdirTemp(c.dir, "bundle-")
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(base)
	if err != nil {
		return "", err
	}
	manifest := filepath.Join(dir, "plugin.json")
	if err := os.WriteFile(manifest, b, 0o600); err != nil {
		return "", err
	}
	if msg, err := exec.CommandContext(ctx, c.bin, "bundle", "build", "-manifest", manifest, "-o", dir, exe).CombinedOutput(); err != nil {
		return "", fmt.Errorf("bundle build %s: %v: %s", exe, err, strings.TrimSpace(string(msg)))
	}
	found, _ := filepath.Glob(filepath.Join(dir, "*.tar.gz"))
	if len(found) != 1 {
		return "", fmt.Errorf("bundle build %s wrote %d bundles into %s, want 1", exe, len(found), dir)
	}
	return found[0], nil
}

// addBundleFile adds the bundle at path through agent a and returns the
// plugin's name and version.
func addBundleFile(ctx context.Context, a *benchAgent, path string) (name, version string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	stream, err := operatorv1.NewOperatorServiceClient(a.conn).AddBundle(ctx)
	if err != nil {
		return "", "", err
	}
	if err := stream.Send(&operatorv1.AddBundleRequest{Payload: &operatorv1.AddBundleRequest_FileName{FileName: filepath.Base(path)}}); err != nil {
		return "", "", err
	}
	if err := sendChunks(f, func(b []byte) error {
		return stream.Send(&operatorv1.AddBundleRequest{Payload: &operatorv1.AddBundleRequest_Chunk{Chunk: b}})
	}); err != nil {
		return "", "", err
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return "", "", fmt.Errorf("bundle add through %s: %w", a.node, err)
	}
	return resp.GetName(), resp.GetVersion(), nil
}
