package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/host/cluster"
	"github.com/plughost/plughost/internal/testenv"
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
