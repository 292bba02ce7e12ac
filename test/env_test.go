// Package test holds plughost's end-to-end tests: they build the real
// plughost and plugin binaries once, start real agents on loopback and drop
// real bundles into them.
package test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/plughost/plughost/internal/h2test"
	"github.com/plughost/plughost/internal/testenv"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// binaries are built once per test run.
var (
	buildOnce sync.Once
	buildErr  error
	binDir    string
	bundleDir string
)

// bundles built for the tests, by "<name>-<version>".
var wantBundles = []struct {
	pkg, name, version string
	extra              []string // extra bundle build flags
}{
	{"./plugins/echo", "echo", "1.0.0", nil},
	{"./plugins/echo", "echo", "1.1.0", nil},
	{"./plugins/counter", "counter", "1.0.0", []string{"-strategy", "restart"}},
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// goBuild builds pkg into out with version (and name) stamped in.
func goBuild(pkg, out, version, name string) error {
	ldflags := "-X main.version=" + version
	if name != "" {
		ldflags += " -X main.name=" + name
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Dir = repoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// build compiles plughost and the example plugins and bundles them with the
// real 'plughost bundle build'.
func build() error {
	dir, err := testenv.MkdirTemp("plughost-e2e-")
	if err != nil {
		return err
	}
	binDir = filepath.Join(dir, "bin")
	bundleDir = filepath.Join(dir, "bundles")
	if err := os.MkdirAll(bundleDir, 0o755); err != nil {
		return err
	}
	if err := goBuild("./cmd/plughost", filepath.Join(binDir, "plughost"), "", ""); err != nil {
		return err
	}
	for _, b := range wantBundles {
		exe := filepath.Join(dir, "exe", b.name+"-"+b.version, b.name)
		if err := goBuild(b.pkg, exe, b.version, ""); err != nil {
			return err
		}
		args := append([]string{"bundle", "build", "-o", bundleDir}, b.extra...)
		cmd := exec.Command(filepath.Join(binDir, "plughost"), append(args, exe)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("plughost bundle build %s: %v\n%s", exe, err, out)
		}
	}
	return nil
}

// buildAll builds once and fails the test if that failed.
func buildAll(t testing.TB) {
	t.Helper()
	buildOnce.Do(func() { buildErr = build() })
	if buildErr != nil {
		t.Fatalf("building test binaries: %v", buildErr)
	}
}

// bundlePath is the built bundle of name and version.
func bundlePath(name, version string) string {
	return filepath.Join(bundleDir, name+"-"+version+".tar.gz")
}

// fixture builds a test fixture plugin as name@version and returns the
// executable's path.
func fixture(t testing.TB, dir, name, version string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	if err := goBuild("./test/fixtures/"+dir, out, version, name); err != nil {
		t.Fatal(err)
	}
	return out
}

// Agent is one real plughost agent process.
type Agent struct {
	t        testing.TB
	DataDir  string
	API      string
	HTTP     string
	RPC      string
	Serf     string
	Node     string
	extra    []string
	cmd      *exec.Cmd
	log      *testenv.SyncBuffer
	exited   chan struct{}
	exitErr  error
	confPath string

	// defaultCgroup: started without -cgroup-parent (see AgentOptions).
	defaultCgroup bool
	// clientTLS and cliEnv: see AgentOptions (area: tls).
	clientTLS *tls.Config
	cliEnv    []string
	// acl holds the agent's management token: a dev agent's from its token
	// file, a cluster's from its ACL bootstrap (shared by its agents).
	acl *tokenBox
	// env is added to the agent process's environment (area: acl).
	env []string
	// cred: the uid and gid the agent runs as; nil: the test's (area: sandbox).
	cred *syscall.Credential
}

// tokenBox holds a management token, set once it is known.
type tokenBox struct {
	mu     sync.Mutex
	secret string
}

func (b *tokenBox) get() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.secret
}

func (b *tokenBox) set(s string) {
	b.mu.Lock()
	b.secret = s
	b.mu.Unlock()
}

// Token is the agent's management token's secret, "" until it is known.
func (a *Agent) Token() string {
	if a.acl == nil {
		return ""
	}
	return a.acl.get()
}

// learnToken sets the agent's token once there is one, and lets the
// internal/h2test clients of its API use it.
func (a *Agent) learnToken(secret string) {
	if a.acl == nil {
		a.acl = &tokenBox{}
	}
	a.acl.set(secret)
	h2test.SetToken(a.API, secret)
}

// shareToken lets the internal/h2test clients of a's API use its token.
func (a *Agent) shareToken() {
	if s := a.Token(); s != "" {
		h2test.SetToken(a.API, s)
	}
}

// devToken reads the token a dev agent wrote to its data dir.
func (a *Agent) devToken() error {
	if a.Token() != "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(a.DataDir, "acl-token"))
	if err != nil {
		return fmt.Errorf("the dev agent's token file: %w", err)
	}
	a.learnToken(strings.TrimSpace(string(b)))
	return nil
}

// TokenOption makes a gRPC client's calls carry the agent's management
// token (read at each call: it may become known later).
func (a *Agent) TokenOption() grpc.DialOption {
	return grpc.WithPerRPCCredentials(agentToken{a})
}

type agentToken struct{ a *Agent }

func (t agentToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if s := t.a.Token(); s != "" {
		return map[string]string{"authorization": "Bearer " + s}, nil
	}
	return nil, nil
}

func (agentToken) RequireTransportSecurity() bool { return false }

// AgentOptions shape a test agent.
type AgentOptions struct {
	// Config is written as the agent's JSON config file.
	Config string
	Args   []string
	// DefaultCgroupParent starts the agent without -cgroup-parent, under
	// the cgroup parent every agent on the machine shares by default,
	// instead of a parent of the test's own.
	DefaultCgroupParent bool
	// ClientTLS dials the API with TLS (an -api-tls agent), and CLIEnv is
	// added to the environment of CLI (PLUGHOST_CACERT...) (area: tls).
	ClientTLS *tls.Config
	CLIEnv    []string
	// Credential runs the agent process as this uid and gid (area:
	// sandbox): its data dir is given to it (0700) and the directories
	// above it and the built binaries are opened to other users.
	Credential *syscall.Credential
}

// NewAgent prepares a dev agent in a temp dir on free ports and starts it.
func NewAgent(t testing.TB, opts AgentOptions) *Agent {
	t.Helper()
	buildAll(t)
	a := &Agent{
		t: t, DataDir: t.TempDir(), API: testenv.FreeAddr(t), HTTP: testenv.FreeAddr(t), RPC: testenv.FreeAddr(t), Serf: testenv.FreeAddr(t),
		Node: "n1", extra: opts.Args, defaultCgroup: opts.DefaultCgroupParent,
		clientTLS: opts.ClientTLS, cliEnv: opts.CLIEnv, cred: opts.Credential,
	}
	if c := opts.Credential; c != nil {
		if err := os.Chown(a.DataDir, int(c.Uid), int(c.Gid)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(a.DataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		openParents(t, a.DataDir)
		openParents(t, filepath.Join(binDir, "plughost"))
		a.env = append(a.env, "HOME="+a.DataDir)
	}
	if opts.Config != "" {
		a.confPath = filepath.Join(t.TempDir(), "agent.json")
		if err := os.WriteFile(a.confPath, []byte(opts.Config), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a.Start()
	t.Cleanup(func() {
		a.Stop()
		if !a.defaultCgroup {
			removeCgroupParent(t, a.CgroupParent())
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", a.Log())
		}
	})
	return a
}

// removeCgroupParent removes what is left of a stopped agent's cgroup
// parent: the agent removes its instances' cgroups, not the parent. One
// that is not empty (an agent killed and not restarted) is left, and said.
func removeCgroupParent(t testing.TB, parent string) {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parent))
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
			t.Logf("leaving cgroup %s: %v", d, err)
		}
	}
}

// Start runs the agent process and waits until its API answers.
func (a *Agent) Start() {
	a.t.Helper()
	args := []string{"agent", "-dev", "-node", a.Node, "-data-dir", a.DataDir, "-api", a.API, "-http", a.HTTP,
		"-rpc", a.RPC, "-serf", a.Serf}
	if !a.defaultCgroup {
		args = append(args, "-cgroup-parent", a.CgroupParent())
	}
	if a.confPath != "" {
		args = append(args, "-config", a.confPath)
	}
	args = append(args, a.extra...)
	a.log = &testenv.SyncBuffer{}
	if a.acl == nil {
		a.acl = &tokenBox{}
	}
	a.cmd = exec.Command(filepath.Join(binDir, "plughost"), args...)
	if len(a.env) > 0 {
		a.cmd.Env = append(os.Environ(), a.env...)
	}
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: a.cred}
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.exited = make(chan struct{})
	go func() {
		a.exitErr = a.cmd.Wait()
		close(a.exited)
	}()
	testenv.WaitFor(a.t, 30*time.Second, "agent API to answer", func() error {
		select {
		case <-a.exited:
			return fmt.Errorf("agent exited: %v\n%s", a.exitErr, a.log.String())
		default:
		}
		if err := a.devToken(); err != nil {
			return err
		}
		return a.ready()
	})
}

// ready reports why the agent is not ready yet: its API does not answer, or
// it knows no leader yet (the API answers before there is one; plugins
// start once there is).
func (a *Agent) ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	a.shareToken()
	resp, err := a.Operator().ListMembers(ctx, &operatorv1.ListMembersRequest{})
	if err != nil {
		return err
	}
	if resp.GetLeader() == "" {
		return fmt.Errorf("%s knows no leader yet", a.Node)
	}
	return nil
}

// CgroupParent is the cgroup under which the agent makes its plugins'
// cgroups: one of its own per data dir, so that agents running side by side
// never take each other's cgroups for stale ones. t.TempDir's parent is
// unique per test, its base ("001") only within one. With
// DefaultCgroupParent it is the default, "plughost".
func (a *Agent) CgroupParent() string {
	if a.defaultCgroup {
		return "plughost"
	}
	return "plughost-test-" + filepath.Base(filepath.Dir(a.DataDir)) + "-" + filepath.Base(a.DataDir)
}

// Cgroup is the agent's own cgroup, "<parent>/<group>" below the hierarchy
// root, as the agent recorded it in <data-dir>/cgroup.json: each of its
// plugin instances gets a cgroup inside it.
func (a *Agent) Cgroup() string {
	a.t.Helper()
	cg, err := a.recordedCgroup()
	if err != nil {
		a.t.Fatal(err)
	}
	return cg
}

func (a *Agent) recordedCgroup() (string, error) {
	file := filepath.Join(a.DataDir, "cgroup.json")
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("the agent's own cgroup: %w", err)
	}
	var rec struct {
		Parent string `json:"parent"`
		Group  string `json:"group"`
	}
	if err := json.Unmarshal(b, &rec); err != nil || rec.Parent == "" || rec.Group == "" {
		return "", fmt.Errorf("the agent's own cgroup: %s holds %q (%v)", file, b, err)
	}
	return strings.Trim(path.Join(rec.Parent, rec.Group), "/"), nil
}

// Stop sends SIGTERM and waits for a clean exit.
func (a *Agent) Stop() {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	select {
	case <-a.exited:
		return
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		// SIGQUIT makes the Go runtime write every goroutine's stack to
		// the agent's log, which the failure prints: where it hung.
		_ = a.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-a.exited:
		case <-time.After(5 * time.Second):
			_ = a.cmd.Process.Kill()
			<-a.exited
		}
		a.t.Errorf("agent did not stop within 30s of SIGTERM (its goroutines are in its log)")
	}
}

// Kill9 kills the agent process alone with SIGKILL.
func (a *Agent) Kill9() {
	_ = a.cmd.Process.Kill()
	<-a.exited
}

// Log is what the agent printed.
func (a *Agent) Log() string { return a.log.String() }

// Conn is a gRPC client connection to the agent's API whose calls carry
// the agent's management token.
func (a *Agent) Conn() *grpc.ClientConn {
	a.t.Helper()
	return a.dial()
}

func (a *Agent) dial(opts ...grpc.DialOption) *grpc.ClientConn {
	a.t.Helper()
	creds := insecure.NewCredentials()
	if a.clientTLS != nil {
		creds = credentials.NewTLS(a.clientTLS)
	}
	conn, err := grpc.NewClient(a.API, append([]grpc.DialOption{grpc.WithTransportCredentials(creds), a.TokenOption()}, opts...)...)
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { conn.Close() })
	return conn
}

// BareConn is a gRPC client connection to the agent's API whose calls
// carry no token but what they are given.
func (a *Agent) BareConn() *grpc.ClientConn {
	a.t.Helper()
	creds := insecure.NewCredentials()
	if a.clientTLS != nil {
		creds = credentials.NewTLS(a.clientTLS)
	}
	conn, err := grpc.NewClient(a.API, grpc.WithTransportCredentials(creds))
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { conn.Close() })
	return conn
}

// Operator is the agent's operator API, on one connection per agent (area:
// limits: a connection per poll, held open until the test's end, counted
// against the agent's max_conns_per_client). It reconnects within a second
// of an agent's restart.
func (a *Agent) Operator() operatorv1.OperatorServiceClient {
	opConns.Lock()
	defer opConns.Unlock()
	conn := opConns.m[a]
	if conn == nil {
		conn = a.dial(grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}))
		opConns.m[a] = conn
		a.t.Cleanup(func() {
			opConns.Lock()
			delete(opConns.m, a)
			opConns.Unlock()
		})
	}
	return operatorv1.NewOperatorServiceClient(conn)
}

// opConns are the agents' Operator connections.
var opConns = struct {
	sync.Mutex
	m map[*Agent]*grpc.ClientConn
}{m: map[*Agent]*grpc.ClientConn{}}

// CLI runs the real plughost CLI against the agent with its management
// token (PLUGHOST_TOKEN).
func (a *Agent) CLI(args ...string) (stdout, stderr string, code int) {
	a.t.Helper()
	return a.CLIEnv([]string{"PLUGHOST_TOKEN=" + a.Token()}, args...)
}

// CLIEnv runs the real plughost CLI against the agent with env added to
// the test's environment (and no PLUGHOST_TOKEN but one env gives).
func (a *Agent) CLIEnv(env []string, args ...string) (stdout, stderr string, code int) {
	a.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "plughost"), args...)
	cmd.Env = append(append(append(withoutToken(os.Environ()), "PLUGHOST_ADDR="+a.API), a.cliEnv...), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		a.t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// withoutToken is env less any ACL token the test itself was given.
func withoutToken(env []string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, "PLUGHOST_TOKEN=") && !strings.HasPrefix(e, "PLUGHOST_TOKEN_FILE=") {
			out = append(out, e)
		}
	}
	return out
}

// Drop copies a bundle (file or dir) into the agent's bundles dir the way an
// operator would: written under a temp name, then renamed into place.
func (a *Agent) Drop(src string) string {
	a.t.Helper()
	dst := filepath.Join(a.DataDir, "bundles", filepath.Base(src))
	if err := copyTree(src, dst+".tmp"); err != nil {
		a.t.Fatal(err)
	}
	if err := os.Rename(dst+".tmp", dst); err != nil {
		a.t.Fatal(err)
	}
	return dst
}

func copyTree(src, dst string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, fi.Mode())
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := copyTree(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// WaitRunning waits until plugin serves version on the agent.
func (a *Agent) WaitRunning(name, version string) {
	a.t.Helper()
	testenv.WaitFor(a.t, 30*time.Second, name+" "+version+" to serve", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := a.Operator().GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: name})
		if err != nil {
			return err
		}
		p := resp.GetPlugin()
		if p.GetRunningVersion() != version || p.GetState() != operatorv1.InstanceState_INSTANCE_STATE_RUNNING {
			return fmt.Errorf("running %q state %s (last error %q)", p.GetRunningVersion(), p.GetState(), p.GetLastError())
		}
		return nil
	})
}

// PluginProcesses lists live processes whose executable lives under the
// agent's data dir: plugin instances and anything they exec'd from there.
func (a *Agent) PluginProcesses() []int {
	return processesUnder(a.DataDir)
}

func processesUnder(dir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		// A sandboxed plugin runs from a sealed copy named after its file.
		if copied, ok := strings.CutPrefix(exe, "/memfd:"); ok {
			exe = strings.TrimSuffix(copied, " (deleted)")
		}
		if strings.HasPrefix(exe, dir+"/") && !isZombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// withToken makes ctx's calls carry secret, and the extra metadata pairs:
// for a BareConn.
func withToken(ctx context.Context, secret string, pairs ...string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, append([]string{"authorization", "Bearer " + secret}, pairs...)...)
}
