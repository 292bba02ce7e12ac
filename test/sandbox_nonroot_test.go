package test

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// TestNonRootAgentRunsPlugins: the agent binary run as an unprivileged uid
// (65534) with a data dir of its own starts its plugins, which serve calls
// and run as the agent's uid; plugin status says which sandbox parts do not
// hold and why (no uid switch, no cgroup, so no limits), and the agent
// stops cleanly.
func TestNonRootAgentRunsPlugins(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running the agent as another uid needs root")
	}
	t.Parallel()
	const nobody = 65534
	a := NewAgent(t, AgentOptions{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.Drop(bundlePath("counter", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")
	a.WaitRunning("counter", "1.0.0")
	if uid := uidOf(a.cmd.Process.Pid); uid != nobody {
		t.Fatalf("the agent runs as uid %d, want %d", uid, nobody)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := echov1.NewEchoServiceClient(a.Conn()).Echo(ctx, &echov1.EchoRequest{Message: "as nobody"})
	if err != nil || !strings.Contains(resp.GetMessage(), "as nobody") {
		t.Fatalf("echo through the non-root agent: %q, %v", resp.GetMessage(), err)
	}

	for _, name := range []string{"echo", "counter"} {
		st, err := pluginStatus(t, a, name)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Instances) != 1 || st.Instances[0].Pid == 0 {
			t.Fatalf("%s instances: %+v", name, st.Instances)
		}
		if uid := uidOf(st.Instances[0].Pid); uid != nobody {
			t.Errorf("%s runs as uid %d, want the agent's %d", name, uid, nobody)
		}
		for _, l := range st.Instances[0].Limits {
			if l.Enforced || !strings.Contains(l.Reason, "no permission to create cgroup") {
				t.Errorf("%s limit %s: enforced=%v %q, want not enforced for want of a cgroup", name, l.Resource, l.Enforced, l.Reason)
			}
		}
		out, _, code := a.CLI("plugin", "status", name)
		if code != 0 {
			t.Fatalf("plugin status %s: exit %d", name, code)
		}
		t.Logf("plugin status %s:\n%s", name, out)
		for part, why := range map[string]string{
			"user":   "NOT enforced: the agent runs as uid 65534, not root",
			"files":  "NOT enforced: it runs as the agent's user",
			"agent":  "NOT enforced: it runs as the agent's user",
			"cgroup": "NOT enforced: no cgroup: no permission to create cgroup",
		} {
			line := ""
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); len(f) > 1 && f[0] == "sandbox" && f[1] == part {
					line = l
				}
			}
			if !strings.Contains(line, why) {
				t.Errorf("%s: sandbox %s says %q, want %q", name, part, line, why)
			}
		}
	}

	a.Stop()
	if a.exitErr != nil {
		t.Errorf("the non-root agent exited with %v", a.exitErr)
	}
	if log := a.Log(); strings.Contains(log, "panic:") || strings.Contains(log, "[ERROR]") {
		t.Errorf("the non-root agent logged errors:\n%s", log)
	}
}
