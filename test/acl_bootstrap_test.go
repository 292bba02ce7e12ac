package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/cluster"
	"github.com/plughost/plughost/internal/testenv"
	aclv1 "github.com/plughost/plughost/proto/plughost/acl/v1"
	"github.com/plughost/plughost/store/fsm"
)

// TestPluginsWaitForACLBootstrap: until a new cluster's ACLs are
// bootstrapped, `acl bootstrap` answers anyone without a token, so no
// plugin may run before then: one dropped in the bundles dir beforehand
// would otherwise be the first to ask and get the management token. The
// agent says what it waits for, and starts the plugin once the operator
// bootstrapped.
func TestPluginsWaitForACLBootstrap(t *testing.T) {
	buildAll(t)
	key, err := cluster.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	a := &ClusterAgent{
		Agent: &Agent{t: t, DataDir: t.TempDir(), API: testenv.FreeAddr(t), HTTP: testenv.FreeAddr(t), RPC: testenv.FreeAddr(t), Serf: testenv.FreeAddr(t),
			Node: "n1", acl: &tokenBox{}},
		Expect: 1, Encrypt: key,
	}
	t.Cleanup(func() {
		a.Stop()
		removeClusterCgroup(a)
		if t.Failed() {
			t.Logf("agent log:\n%s", a.Log())
		}
	})
	if err := os.MkdirAll(filepath.Join(a.DataDir, "bundles"), 0o700); err != nil {
		t.Fatal(err)
	}
	a.Drop(bundlePath("echo", "1.0.0"))
	a.startProcess()
	const waiting = "plugins and bundle intake start once the cluster's ACLs are bootstrapped"
	testenv.WaitFor(t, 30*time.Second, "the agent to say it waits for the ACL bootstrap", func() error {
		if !strings.Contains(a.Log(), waiting) {
			return fmt.Errorf("not said yet")
		}
		return nil
	})
	// It keeps waiting: a few of its 200 ms checks go by with no plugin.
	time.Sleep(time.Second)
	if ps := a.PluginProcesses(); len(ps) > 0 {
		t.Fatalf("plugin processes %v run before the ACL bootstrap", ps)
	}
	if strings.Contains(a.Log(), "echo") {
		t.Fatalf("the agent took in echo before the ACL bootstrap:\n%s", a.Log())
	}
	if err := a.bootstrapACL(); err != nil {
		t.Fatal(err)
	}
	a.WaitRunning("echo", "1.0.0")
}

// TestACLInitialManagementFromConfig: an agent given the cluster's first
// management token in a 0600 file bootstraps its ACLs with it, and `acl
// bootstrap` never answers anyone, before or after: there is no window
// for someone who reaches the API first. A file others can read is
// refused.
func TestACLInitialManagementFromConfig(t *testing.T) {
	buildAll(t)
	key, err := cluster.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	const secret = "6f1c3a52-8f0e-4d4b-9a57-2c1e9d0b7a11"
	file := filepath.Join(t.TempDir(), "initial-management")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &ClusterAgent{
		Agent: &Agent{t: t, DataDir: t.TempDir(), API: testenv.FreeAddr(t), HTTP: testenv.FreeAddr(t), RPC: testenv.FreeAddr(t), Serf: testenv.FreeAddr(t),
			Node: "n1", acl: &tokenBox{}},
		Expect: 1, Encrypt: key, Args: []string{"-acl-initial-management-file", file},
	}
	t.Cleanup(func() {
		a.Stop()
		removeClusterCgroup(a)
		if t.Failed() {
			t.Logf("agent log:\n%s", a.Log())
		}
	})
	if err := os.MkdirAll(filepath.Join(a.DataDir, "bundles"), 0o700); err != nil {
		t.Fatal(err)
	}

	a.startProcess()
	select {
	case <-a.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("an agent whose initial management file others can read did not stop")
	}
	if !strings.Contains(a.Log(), "chmod 600 "+file) {
		t.Fatalf("the agent did not say to make the file private:\n%s", a.Log())
	}

	if err := os.Chmod(file, 0o600); err != nil {
		t.Fatal(err)
	}
	a.Drop(bundlePath("echo", "1.0.0"))
	a.startProcess()
	// Someone asks for the bootstrap token from the agent's first moment
	// until the agent has bootstrapped with the configured one, and after.
	const done = "ACLs bootstrapped with the configured initial management token"
	var tries, after int
	stranger := aclv1.NewACLServiceClient(a.BareConn())
	deadline := time.Now().Add(60 * time.Second)
	for after < 3 && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := stranger.Bootstrap(ctx, &aclv1.BootstrapRequest{})
		cancel()
		if err == nil {
			t.Fatalf("acl bootstrap answered a stranger with token %s", resp.GetToken().GetAccessorId())
		}
		if status.Code(err) == codes.FailedPrecondition {
			tries++
			if !strings.Contains(err.Error(), "acl_initial_management") {
				t.Fatalf("acl bootstrap refused without saying why: %v", err)
			}
		}
		if strings.Contains(a.Log(), done) {
			after++
		}
		time.Sleep(50 * time.Millisecond)
	}
	if after < 3 {
		t.Fatalf("the agent did not bootstrap with the configured token in 60 s")
	}
	t.Logf("acl bootstrap refused %d times", tries)
	a.learnToken(secret)
	if out, errOut, code := a.CLI("acl", "token", "list"); code != 0 || !strings.Contains(out, "Initial Management Token") {
		t.Fatalf("acl token list with the configured token: exit %d\n%s%s", code, out, errOut)
	}
	a.WaitRunning("echo", "1.0.0")
}

// TestRestoreOfPreACLBackupKeepsACLs: restoring a backup taken before the
// cluster's ACLs were bootstrapped (here: a backup with its ACL records
// taken out) is refused, -force or not, and `acl bootstrap` stays closed
// to a stranger; it used to drop every token and give the stranger a
// management token.
func TestRestoreOfPreACLBackupKeepsACLs(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	dir := t.TempDir()
	full := filepath.Join(dir, "full.backup")
	if _, errOut, code := a.CLI("store", "put", "-ns", "app", "k", "v"); code != 0 {
		t.Fatalf("store put: %s", errOut)
	}
	if _, errOut, code := a.CLI("store", "backup", full); code != 0 {
		t.Fatalf("store backup: %s", errOut)
	}
	data, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := fsm.DecodeSnapshot(data)
	if err != nil {
		t.Fatal(err)
	}
	kept := snap.Items[:0]
	for _, it := range snap.Items {
		if !(it.Namespace() == "_sys" && strings.Contains(it.Key, "acl/")) {
			kept = append(kept, it)
		}
	}
	snap.Items = kept
	preACL := filepath.Join(dir, "pre-acl.backup")
	f, err := os.OpenFile(preACL, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Write(f); err != nil {
		t.Fatal(err)
	}
	f.Close()

	_, errOut, code := a.CLI("store", "restore", "-force", preACL)
	if code != 1 || !strings.Contains(errOut, "(FailedPrecondition)") || !strings.Contains(errOut, "reopen 'acl bootstrap'") {
		t.Fatalf("restore of a backup without ACL records: exit %d, %s", code, errOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, err := aclv1.NewACLServiceClient(a.BareConn()).Bootstrap(ctx, &aclv1.BootstrapRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("acl bootstrap by a stranger after the restore: %v %v", resp, err)
	}
	if out, errOut, code := a.CLI("store", "get", "-ns", "app", "k"); code != 0 || !strings.Contains(out, "v") {
		t.Fatalf("the agent's token and data after the refused restore: exit %d %s%s", code, out, errOut)
	}
	// A backup with the ACL records restores.
	if _, errOut, code := a.CLI("store", "restore", "-force", full); code != 0 {
		t.Fatalf("restore of a full backup: %s", errOut)
	}
}
