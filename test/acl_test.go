package test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	aclv1 "github.com/plughost/plughost/proto/plughost/acl/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// nobody is the unprivileged user the attacks run as.
const nobody = 65534

// publicCopy copies files into a new directory everyone may read, for a
// process running as nobody, and returns their new paths.
func publicCopy(t *testing.T, files ...string) []string {
	t.Helper()
	dir, err := os.MkdirTemp("", "plughost-acl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// runAs runs exe with args as uid, with a bare environment pointing at
// the agent and no token, and returns its output and exit code.
func runAs(t *testing.T, uid int, exe, addr string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(exe, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/", "PLUGHOST_ADDR=" + addr}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

// TestACLUnprivilegedUserIsRefused: a local user without a token, who
// cannot read the dev agent's token file, can no longer add a bundle (which
// the agent used to start as root), restore the store, write _sys or pin a
// plugin.
func TestACLUnprivilegedUserIsRefused(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")
	backup := filepath.Join(t.TempDir(), "store.bak")
	if _, errOut, code := a.CLI("store", "backup", backup); code != 0 {
		t.Fatalf("store backup: %s", errOut)
	}
	files := publicCopy(t, filepath.Join(binDir, "plughost"), bundlePath("echo", "1.1.0"), backup)
	exe, bundleFile, backupFile := files[0], files[1], files[2]
	tokenFile := filepath.Join(a.DataDir, "acl-token")

	for _, tc := range []struct {
		what string
		args []string
	}{
		{"bundle add", []string{"bundle", "add", bundleFile}},
		{"store restore", []string{"store", "restore", "-force", backupFile}},
		{"store put -ns _sys", []string{"store", "put", "-ns", "_sys", "pins/echo", `{"version":"1.1.0"}`}},
		{"plugin pin", []string{"plugin", "pin", "echo", "1.0.0"}},
		{"store get -ns _sys", []string{"store", "get", "-ns", "_sys", "acl/server-token"}},
		{"the dev token file", []string{"plugin", "pin", "echo", "1.0.0", "-token-file", tokenFile}},
	} {
		out, code := runAs(t, nobody, exe, a.API, tc.args...)
		if code == 0 {
			t.Errorf("%s as uid %d: allowed:\n%s", tc.what, nobody, out)
			continue
		}
		if !strings.Contains(out, "(Unauthenticated)") && !strings.Contains(out, "permission denied") {
			t.Errorf("%s as uid %d: exit %d without an ACL refusal:\n%s", tc.what, nobody, code, out)
		}
		t.Logf("%s as uid %d: %s", tc.what, nobody, strings.TrimSpace(out))
	}

	// Nothing of it happened.
	out, _, _ := a.CLI("plugin", "versions", "echo")
	if strings.Contains(out, "1.1.0") {
		t.Errorf("the refused bundle was registered:\n%s", out)
	}
	if out, _, _ := a.CLI("plugin", "history", "echo"); strings.Contains(out, " pin ") {
		t.Errorf("a refused pin is in the history:\n%s", out)
	}
}

// TestACLDevCLIFindsItsToken: the dev agent's own user needs no flag: the
// CLI finds the token the agent recorded for its address.
func TestACLDevCLIFindsItsToken(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	if out, errOut, code := a.CLIEnv(nil, "plugin", "list"); code != 0 {
		t.Fatalf("plugin list with no token given: exit %d\n%s%s", code, out, errOut)
	}
	if fi, err := os.Stat(filepath.Join(a.DataDir, "acl-token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("dev token file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	// Bootstrap is done once: a second one is refused and says so.
	_, errOut, code := a.CLI("acl", "bootstrap")
	if code != 1 || !strings.Contains(errOut, "bootstrap was done already") {
		t.Fatalf("second bootstrap: exit %d, %s", code, errOut)
	}
	// A restarted dev agent keeps its token.
	tok := a.Token()
	a.Stop()
	a.Start()
	if out, errOut, code := a.CLIEnv(nil, "members"); code != 0 || a.Token() != tok {
		t.Fatalf("after a restart: exit %d\n%s%s", code, out, errOut)
	}
}

// createToken makes a token with policies through the CLI and returns its
// secret and accessor.
func createToken(t *testing.T, a *Agent, description string, policies ...string) (secret, accessor string) {
	t.Helper()
	args := []string{"acl", "token", "create", "-format", "json", "-description", description}
	for _, p := range policies {
		args = append(args, "-policy", p)
	}
	out, errOut, code := a.CLI(args...)
	if code != 0 {
		t.Fatalf("acl token create: %s", errOut)
	}
	var tok struct {
		SecretID   string `json:"secret_id"`
		AccessorID string `json:"accessor_id"`
	}
	if err := json.Unmarshal([]byte(out), &tok); err != nil || tok.SecretID == "" {
		t.Fatalf("acl token create printed %q (%v)", out, err)
	}
	return tok.SecretID, tok.AccessorID
}

// createPolicy makes a policy from rules through the CLI's stdin.
func createPolicy(t *testing.T, a *Agent, name, rules string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "plughost"), "acl", "policy", "create", "-name", name, "-rules", "-")
	cmd.Env = append(withoutToken(os.Environ()), "PLUGHOST_ADDR="+a.API, "PLUGHOST_TOKEN="+a.Token())
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("acl policy create %s: %v\n%s", name, err, out)
	}
}

// asToken runs the CLI with secret as its token.
func asToken(a *Agent, secret string, args ...string) (string, string, int) {
	return a.CLIEnv([]string{"PLUGHOST_TOKEN=" + secret}, args...)
}

// TestACLPolicies: a read-only token reads and cannot write; a per-plugin
// token pins its plugin and not another; the actor in history is the
// token's description whatever the client claims; a revoked token stops
// working.
func TestACLPolicies(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.Drop(bundlePath("echo", "1.1.0"))
	a.Drop(bundlePath("counter", "1.0.0"))
	a.WaitRunning("echo", "1.1.0")
	a.WaitRunning("counter", "1.0.0")

	createPolicy(t, a, "echo-ops", `plugin "echo" { policy = "write" }
namespace "echo" { policy = "write" }
`)
	reader, _ := createToken(t, a, "dashboards", "read-only")
	echoOps, echoAccessor := createToken(t, a, "echo deployer", "echo-ops")

	t.Run("read-only reads and cannot write", func(t *testing.T) {
		if out, errOut, code := asToken(a, reader, "plugin", "list"); code != 0 || !strings.Contains(out, "counter") {
			t.Fatalf("plugin list: exit %d %s%s", code, out, errOut)
		}
		for _, args := range [][]string{
			{"store", "put", "-ns", "echo", "k", "v"},
			{"plugin", "pin", "echo", "1.0.0"},
			{"plugin", "restart", "counter"},
			{"store", "get", "-ns", "_sys", "acl/server-token"},
			{"acl", "token", "create", "-policy", "global-management"},
			{"call", "echo.v1.EchoService/Echo", "-d", `{"message":"hi"}`},
		} {
			_, errOut, code := asToken(a, reader, args...)
			if code != 1 || !strings.Contains(errOut, "(PermissionDenied)") {
				t.Errorf("%v with read-only: exit %d, %s", args, code, errOut)
			}
		}
	})

	t.Run("per-plugin token", func(t *testing.T) {
		if _, errOut, code := asToken(a, echoOps, "plugin", "pin", "echo", "1.0.0"); code != 0 {
			t.Fatalf("pin echo with its own token: %s", errOut)
		}
		_, errOut, code := asToken(a, echoOps, "plugin", "restart", "counter")
		if code != 1 || !strings.Contains(errOut, `plugin "counter" { policy = "write" }`) {
			t.Fatalf("restart counter with echo's token: exit %d, %s", code, errOut)
		}
		if out, _, code := asToken(a, echoOps, "plugin", "list"); code != 0 || strings.Contains(out, "counter") {
			t.Fatalf("plugin list shows what the token may not read:\n%s", out)
		}
		if _, errOut, code := asToken(a, echoOps, "call", "echo.v1.EchoService/Echo", "-d", `{"message":"hi"}`); code != 0 {
			t.Fatalf("call echo with its write token: %s", errOut)
		}
		if _, errOut, code := asToken(a, echoOps, "store", "put", "-ns", "counter", "k", "v"); code != 1 || !strings.Contains(errOut, "(PermissionDenied)") {
			t.Fatalf("store put in counter's namespace: exit %d, %s", code, errOut)
		}
	})

	t.Run("actor is the token's name", func(t *testing.T) {
		// The client claims to be someone else, in the request and in the
		// metadata the CLI used to send.
		conn := a.BareConn()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stream, err := operatorv1.NewOperatorServiceClient(conn).UnpinVersion(withToken(ctx, echoOps, "plughost-actor", "cli:mallory"),
			&operatorv1.UnpinVersionRequest{Name: "echo", Actor: "mallory"})
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := stream.Recv(); err != nil {
				break
			}
		}
		out, _, _ := a.CLI("plugin", "history", "echo")
		want := "echo deployer (" + echoAccessor[:8] + ")"
		if strings.Contains(out, "mallory") || strings.Count(out, want) < 2 {
			t.Fatalf("history does not name the token %q for the pin and unpin:\n%s", want, out)
		}
	})

	t.Run("revoked token stops working", func(t *testing.T) {
		if _, errOut, code := a.CLI("acl", "token", "delete", echoAccessor); code != 0 {
			t.Fatalf("acl token delete: %s", errOut)
		}
		testenv.WaitFor(t, 5*time.Second, "the revoked token to be refused", func() error {
			_, errOut, code := asToken(a, echoOps, "plugin", "status", "echo")
			if code == 1 && strings.Contains(errOut, "ACL token not found") {
				return nil
			}
			return status.Errorf(codes.Unknown, "exit %d: %s", code, errOut)
		})
	})
}

// TestACLTokenAndPolicyCommands: what the acl commands print and refuse.
func TestACLTokenAndPolicyCommands(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	createPolicy(t, a, "ops", `operator = "read"`)
	_, accessor := createToken(t, a, "ops bot", "ops")
	out, errOut, code := a.CLI("acl", "token", "list")
	if code != 0 || !strings.Contains(out, accessor) || !strings.Contains(out, "ops bot") || strings.Contains(out, "SecretID") {
		t.Fatalf("acl token list: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, code := a.CLI("acl", "policy", "list"); code != 0 || !strings.Contains(out, "global-management") || !strings.Contains(out, "ops") {
		t.Fatalf("acl policy list:\n%s", out)
	}
	if _, errOut, code := a.CLI("acl", "policy", "delete", "ops"); code != 1 || !strings.Contains(errOut, "in use") {
		t.Fatalf("deleting a policy in use: exit %d, %s", code, errOut)
	}
	if _, errOut, code := a.CLI("acl", "token", "create", "-policy", "nope"); code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Fatalf("token with an unknown policy: exit %d, %s", code, errOut)
	}
	cmd := exec.Command(filepath.Join(binDir, "plughost"), "acl", "policy", "create", "-name", "bad", "-rules", "-")
	cmd.Env = append(withoutToken(os.Environ()), "PLUGHOST_ADDR="+a.API, "PLUGHOST_TOKEN="+a.Token())
	cmd.Stdin = strings.NewReader(`plugin "x" { policy = "root" }`)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "InvalidArgument") {
		t.Fatalf("policy with bad rules: %v\n%s", err, out)
	}
	// The token's secret is not kept: only its hash is in _sys.
	kvs, _, _ := a.CLI("store", "list", "-ns", "_sys", "acl/")
	if strings.Contains(kvs, a.Token()) {
		t.Fatalf("_sys holds a token's secret:\n%s", kvs)
	}
	// Without a token, the API says what is missing and how to get it.
	conn := a.BareConn()
	_, err := aclv1.NewACLServiceClient(conn).ListTokens(withToken(context.Background(), "not-a-token"), &aclv1.ListTokensRequest{})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "PLUGHOST_TOKEN") {
		t.Fatalf("unknown token: %v", err)
	}
}

// TestACLHostilePluginIsRefused: a plugin built with the SDK that dials
// the agent's API gets nothing there: no operator call, no other plugin's
// namespace or calls, no _sys, no backup, no pin or restart of another
// plugin. The agent's own PLUGHOST_TOKEN does not reach it.
func TestACLHostilePluginIsRefused(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	a.Drop(bundlePath("counter", "1.0.0"))
	a.WaitRunning("counter", "1.0.0")
	// The agent runs with a management token in its environment, as an
	// operator's shell might have it.
	a.Stop()
	a.env = []string{"PLUGHOST_TOKEN=" + a.Token()}
	a.Start()

	exe := fixture(t, "hostileapi", "hostileapi", "1.0.0")
	m := &bundle.Manifest{Name: "hostileapi", Version: "1.0.0", APIVersions: []int{1}, Services: []string{"echo.v1.EchoService"}}
	b, err := bundle.Build(exe, m, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a.Drop(b)
	a.WaitRunning("hostileapi", "1.0.0")
	a.WaitRunning("counter", "1.0.0")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := echov1.NewEchoServiceClient(a.Conn()).Echo(ctx, &echov1.EchoRequest{Message: "attack"})
	if err != nil {
		t.Fatal(err)
	}
	var report map[string]string
	if err := json.Unmarshal([]byte(resp.GetMessage()), &report); err != nil {
		t.Fatalf("the plugin's report %q: %v", resp.GetMessage(), err)
	}
	if report["env token"] != "absent" {
		t.Errorf("the agent's PLUGHOST_TOKEN reached the plugin")
	}
	delete(report, "env token")
	if len(report) < 10 {
		t.Fatalf("the plugin reported %d attempts: %v", len(report), report)
	}
	for what, code := range report {
		if code != codes.Unauthenticated.String() && code != codes.PermissionDenied.String() {
			t.Errorf("plugin's %s: %s, want Unauthenticated or PermissionDenied", what, code)
		}
	}
	if out, _, _ := a.CLI("plugin", "history", "counter"); strings.Contains(out, " pin ") {
		t.Errorf("the plugin pinned counter:\n%s", out)
	}
	t.Logf("the hostile plugin's attempts: %v", report)
}

// TestACLClusterTokensReplicate: a token made through one node works on
// another, for writes forwarded to the leader too, within its policy; once
// deleted through a third node it is refused everywhere within seconds.
func TestACLClusterTokensReplicate(t *testing.T) {
	agents := NewCluster(t, 3)
	createPolicy(t, agents[0].Agent, "app-writer", `namespace "app" { policy = "write" }`)
	secret, accessor := createToken(t, agents[0].Agent, "app writer", "app-writer")
	for _, a := range agents {
		testenv.WaitFor(t, 10*time.Second, "the token to work on "+a.Node, func() error {
			if _, errOut, code := asToken(a.Agent, secret, "store", "put", "-ns", "app", "k", a.Node); code != 0 {
				return status.Errorf(codes.Unknown, "store put on %s: %s", a.Node, errOut)
			}
			return nil
		})
		if _, errOut, code := asToken(a.Agent, secret, "store", "put", "-ns", "other", "k", "v"); code != 1 || !strings.Contains(errOut, "(PermissionDenied)") {
			t.Fatalf("store put -ns other on %s: exit %d, %s", a.Node, code, errOut)
		}
	}
	if _, errOut, code := agents[1].CLI("acl", "token", "delete", accessor); code != 0 {
		t.Fatalf("acl token delete: %s", errOut)
	}
	for _, a := range agents {
		testenv.WaitFor(t, 5*time.Second, "the deleted token to be refused on "+a.Node, func() error {
			_, errOut, code := asToken(a.Agent, secret, "store", "get", "-ns", "app", "k")
			if code == 1 && strings.Contains(errOut, "ACL token not found") {
				return nil
			}
			return status.Errorf(codes.Unknown, "store get on %s: exit %d %s", a.Node, code, errOut)
		})
	}
}

// TestACLFollowerTokens: on a follower, tokens that do not grant _sys
// make the calls their policy allows, though the agent serves them with
// reads and writes of its own in _sys (catalog, history, ACL records)
// that it forwards to the leader: a read-only token lists plugins, a
// plugin's token pins it, an acl = "write" token makes a token. The
// agents forward their own writes with no token: the leader knows them
// by their certificates, and no server secret is kept in _sys.
func TestACLFollowerTokens(t *testing.T) {
	agents := NewCluster(t, 3)
	leader := leaderOf(t, agents)
	var follower *ClusterAgent
	for _, a := range agents {
		if a != leader {
			follower = a
			break
		}
	}
	follower.Drop(bundlePath("echo", "1.0.0"))
	follower.Drop(bundlePath("echo", "1.1.0"))
	follower.WaitRunning("echo", "1.1.0")

	createPolicy(t, leader.Agent, "echo-ops", `plugin "echo" { policy = "write" }`)
	createPolicy(t, leader.Agent, "acl-admin", `acl = "write"`)
	reader, _ := createToken(t, leader.Agent, "dashboards", "read-only")
	echoOps, _ := createToken(t, leader.Agent, "echo deployer", "echo-ops")
	aclAdmin, _ := createToken(t, leader.Agent, "acl admin", "acl-admin")
	testenv.WaitFor(t, 10*time.Second, "the tokens to resolve on "+follower.Node, func() error {
		for _, s := range []string{reader, echoOps, aclAdmin} {
			// members needs operator = "read": refused or not, the token is known.
			if _, errOut, _ := asToken(follower.Agent, s, "members"); strings.Contains(errOut, "ACL token not found") {
				return status.Errorf(codes.Unknown, "members on %s: %s", follower.Node, errOut)
			}
		}
		return nil
	})

	// The follower's own reads of _sys go to the leader, which knows it by
	// its certificate.
	testenv.WaitFor(t, 10*time.Second, "plugin list with read-only on follower "+follower.Node, func() error {
		if out, errOut, code := asToken(follower.Agent, reader, "plugin", "list"); code != 0 || !strings.Contains(out, "echo") {
			return status.Errorf(codes.Unknown, "exit %d %s%s", code, out, errOut)
		}
		return nil
	})
	if _, errOut, code := asToken(follower.Agent, echoOps, "plugin", "pin", "echo", "1.0.0"); code != 0 {
		t.Errorf("pin echo with its own token on follower %s: %s", follower.Node, errOut)
	}
	if out, errOut, code := asToken(follower.Agent, echoOps, "plugin", "history", "echo"); code != 0 || !strings.Contains(out, "echo deployer") {
		t.Errorf("plugin history with echo's token on follower %s: exit %d %s%s", follower.Node, code, out, errOut)
	}
	if _, errOut, code := asToken(follower.Agent, aclAdmin, "acl", "token", "create", "-description", "made on a follower", "-policy", "read-only"); code != 0 {
		t.Errorf("acl token create with acl = \"write\" on follower %s: %s", follower.Node, errOut)
	}
	// The tokens are still held to their policies there.
	if _, errOut, code := asToken(follower.Agent, reader, "store", "get", "-ns", "_sys", "acl/server-token"); code != 1 || !strings.Contains(errOut, "(PermissionDenied)") {
		t.Errorf("store get -ns _sys with read-only on follower %s: exit %d, %s", follower.Node, code, errOut)
	}
	if _, errOut, code := asToken(follower.Agent, echoOps, "acl", "token", "create", "-policy", "global-management"); code != 1 || !strings.Contains(errOut, "(PermissionDenied)") {
		t.Errorf("acl token create with echo's token on follower %s: exit %d, %s", follower.Node, code, errOut)
	}

	// There is no server token to read: agents know each other by their
	// certificates, and nothing in _sys (nor in backups and each node's
	// acl-cache.json) is a credential of theirs.
	for _, a := range agents {
		out, errOut, code := a.CLI("store", "list", "-ns", "_sys", "acl/")
		if code != 0 {
			t.Fatalf("store list _sys acl/ on %s: %s", a.Node, errOut)
		}
		if strings.Contains(out, "server-token") || strings.Contains(out, "secret_id") {
			t.Errorf("_sys on %s holds a server secret:\n%s", a.Node, out)
		}
		b, err := os.ReadFile(filepath.Join(a.DataDir, "acl-cache.json"))
		if err != nil {
			t.Fatal(err)
		}
		var cache struct {
			Records []struct{ Key []byte } `json:"records"`
		}
		if err := json.Unmarshal(b, &cache); err != nil || len(cache.Records) == 0 {
			t.Fatalf("acl-cache.json on %s: %v", a.Node, err)
		}
		for _, r := range cache.Records {
			if strings.Contains(string(r.Key), "server-token") {
				t.Errorf("acl-cache.json on %s holds %s", a.Node, r.Key)
			}
		}
	}
	// Writes the followers forward (their own, without a token) still work.
	if _, errOut, code := asToken(follower.Agent, echoOps, "plugin", "unpin", "echo"); code != 0 {
		t.Errorf("unpin echo with its own token on follower %s: %s", follower.Node, errOut)
	}
}
