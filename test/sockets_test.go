package test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
)

// TestPluginSocketsStayInTheAgentsDir: a plugin's unix sockets (go-plugin's,
// the broker's, the data socket) are made in a directory of its agent's
// own, never loose in /tmp. The directory is removed when the agent stops,
// and by its reaper when the agent is killed.
func TestPluginSocketsStayInTheAgentsDir(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")

	dir := pluginSocketDir(t, a)
	agentDir := filepath.Dir(dir)
	if !strings.HasPrefix(filepath.Base(agentDir), "sockets-") || filepath.Dir(agentDir) != "/run/plughost" {
		t.Fatalf("the plugin's sockets are in %s, not in a socket dir of the agent's own", dir)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) == 0 {
		t.Fatalf("no sockets in %s: %v %v", dir, entries, err)
	}

	a.Kill9()
	// The killed agent's reaper takes its plugins down and removes the
	// agent's socket dir with what they left in it.
	testenv.WaitFor(t, 30*time.Second, "the killed agent's reaper to remove its socket dir", func() error {
		if pids := a.PluginProcesses(); len(pids) > 0 {
			return fmt.Errorf("plugins still running: %v", pids)
		}
		if _, err := os.Stat(agentDir); !os.IsNotExist(err) {
			return fmt.Errorf("%s is still there: %v", agentDir, err)
		}
		return nil
	})
	a.Start()
	a.WaitRunning("echo", "1.0.0")
	if got := filepath.Dir(pluginSocketDir(t, a)); got != agentDir {
		t.Errorf("the restarted agent's plugin sockets are in %s, want %s", got, agentDir)
	}

	a.Stop()
	if _, err := os.Stat(agentDir); !os.IsNotExist(err) {
		t.Errorf("the stopped agent left its socket dir %s: %v", agentDir, err)
	}
}

// pluginSocketDir is where the agent's one plugin process makes its unix
// sockets, as its environment says.
func pluginSocketDir(t *testing.T, a *Agent) string {
	t.Helper()
	var dir string
	testenv.WaitFor(t, 10*time.Second, "the plugin's socket dir", func() error {
		pids := a.PluginProcesses()
		if len(pids) != 1 {
			return fmt.Errorf("plugin processes %v, want one", pids)
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pids[0]))
		if err != nil {
			return err
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if v, ok := strings.CutPrefix(string(kv), "PLUGIN_UNIX_SOCKET_DIR="); ok {
				dir = v
				return nil
			}
		}
		return fmt.Errorf("plugin %d has no PLUGIN_UNIX_SOCKET_DIR: its sockets go to the system's temp dir", pids[0])
	})
	return dir
}
