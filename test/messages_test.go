package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// TestSwapMessagesSayItOnce follows a good pin, a pin that falls back and
// an unpin that cannot bring the desired version, through the real CLI:
// each says what happened once, and the unpin that did not get the
// operator the desired version fails, saying which version serves and why.
func TestSwapMessagesSayItOnce(t *testing.T) {
	t.Parallel()
	const echoSvc = "echo.v1.EchoService"
	v1 := buildBundle(t, "./plugins/echo", swapManifest("echo", "1.0.0", "overlap", time.Second, 20*time.Second, time.Second, echoSvc), "")
	v2 := buildBundle(t, "./plugins/echo", swapManifest("echo", "1.1.0", "overlap", time.Second, 20*time.Second, time.Second, echoSvc), "")
	bad := buildBundle(t, "./test/fixtures/unhealthy", swapManifest("echo", "1.2.0", "overlap", time.Second, 3*time.Second, time.Second, echoSvc), "echo")
	a := NewAgent(t, AgentOptions{})
	a.Drop(v1)
	a.WaitRunning("echo", "1.0.0")
	if _, errOut, code := a.CLI("plugin", "pin", "-detach", "echo", "1.0.0"); code != 0 {
		t.Fatalf("pin 1.0.0: %s", errOut)
	}
	a.Drop(v2)
	a.Drop(bad)
	testenv.WaitFor(t, 20*time.Second, "three versions to register", func() error {
		vs, err := a.Operator().ListVersions(context.Background(), &operatorv1.ListVersionsRequest{Name: "echo"})
		if err != nil || len(vs.GetVersions()) != 3 {
			return fmt.Errorf("versions %v %v", vs, err)
		}
		return nil
	})

	out, errOut, code := a.CLI("plugin", "pin", "echo", "1.1.0")
	if code != 0 {
		t.Fatalf("pin 1.1.0: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "health-gating") || !strings.Contains(out, "healthy for") {
		t.Errorf("pin 1.1.0 showed no health gate:\n%s", out)
	}
	if strings.Contains(out, "health-gating health-gating") || strings.Contains(out, "health-gating: ") {
		t.Errorf("pin 1.1.0 repeats its phase:\n%s", out)
	}

	// The pin follows the rollout it starts (area: surface): the rollout's
	// lines say once why it rolled back, the node's swap lines once why
	// the node fell back.
	out, errOut, code = a.CLI("plugin", "pin", "echo", "1.2.0")
	all := out + errOut
	if code != 1 || !strings.Contains(out, "fell-back") || !strings.Contains(all, "1.1.0 still serves") || !strings.Contains(out, "rolled back to 1.1.0") {
		t.Fatalf("pin 1.2.0: exit %d, want 1, a fall back and a rollback\n%s", code, all)
	}
	var rolloutLines, swapLines []string
	for _, l := range strings.Split(strings.TrimSpace(all), "\n") {
		if strings.Contains(l, " swap: ") {
			swapLines = append(swapLines, l)
		} else {
			rolloutLines = append(rolloutLines, l)
		}
	}
	for _, once := range []string{"1.1.0 still serves", "plughost plugin pin echo 1.2.0", "not healthy"} {
		if n := strings.Count(strings.Join(swapLines, "\n"), once); n != 1 {
			t.Errorf("pin 1.2.0's swap lines say %q %d times:\n%s", once, n, all)
		}
	}
	if n := strings.Count(strings.Join(rolloutLines, "\n"), "not healthy"); n != 1 {
		t.Errorf("pin 1.2.0's rollout lines say why %d times:\n%s", n, all)
	}

	out, errOut, code = a.CLI("plugin", "pin", "-detach", "echo", "1.1.0")
	if code != 0 {
		t.Fatalf("pin 1.1.0 again: %s%s", out, errOut)
	}
	out, errOut, code = a.CLI("plugin", "unpin", "echo")
	if code == 0 {
		t.Errorf("unpin exits 0 although the desired 1.2.0 does not run:\n%s%s", out, errOut)
	}
	if strings.Contains(out, "done") {
		t.Errorf("unpin reports done:\n%s", out)
	}
	for _, want := range []string{"unpinned", "1.2.0 failed cluster-wide in rollout echo-2", "'plughost plugin pin echo 1.2.0'"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("unpin does not say %q:\n%s%s", want, out, errOut)
		}
	}
}

// TestCallToACrashLoopingPlugin calls the service of a plugin that keeps
// dying through the CLI: the agent answers UNAVAILABLE with the plugin's
// state and what to do, never that it knows no such service.
func TestCallToACrashLoopingPlugin(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	a.Drop(buildBundle(t, "./test/fixtures/crashloop", swapManifest("echo", "1.0.0", "overlap", 0, 20*time.Second, time.Second, "echo.v1.EchoService"), "echo"))
	testenv.WaitFor(t, 60*time.Second, "a call to answer with the backoff state", func() error {
		ps, err := a.Operator().GetPluginStatus(context.Background(), &operatorv1.GetPluginStatusRequest{Name: "echo"})
		if err != nil || ps.GetPlugin().GetState() != operatorv1.InstanceState_INSTANCE_STATE_BACKOFF {
			return fmt.Errorf("state %v %v", ps.GetPlugin().GetState(), err)
		}
		_, errOut, code := a.CLI("call", "echo.v1.EchoService/Echo", "-d", `{"message":"x"}`)
		if strings.Contains(errOut, "knows no service") {
			t.Fatalf("call: %s", errOut)
		}
		if code != 1 || !strings.Contains(errOut, "(Unavailable)") || !strings.Contains(errOut, `plugin "echo" has no serving instance (state: backoff`) ||
			!strings.Contains(errOut, "'plughost plugin status echo'") || strings.Contains(errOut, "rpc error") {
			return fmt.Errorf("call: exit %d: %s", code, errOut)
		}
		return nil
	})
}

// TestBundleAddSaysWhatItDid adds a bundle three times: new, again, and
// again on a node that lost its files. Each answer says what happened on
// this node, and the last one installs and starts the version.
func TestBundleAddSaysWhatItDid(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	echo := bundlePath("echo", "1.0.0")
	out, errOut, code := a.CLI("bundle", "add", echo)
	if code != 0 || !strings.Contains(out, "registered echo 1.0.0") || !strings.Contains(out, "installed it on this node") {
		t.Fatalf("first add: exit %d\n%s%s", code, out, errOut)
	}
	a.WaitRunning("echo", "1.0.0")
	out, errOut, code = a.CLI("bundle", "add", echo)
	if code != 0 || !strings.Contains(out, "already registered and installed on this node") || !strings.Contains(out, "nothing changed") {
		t.Fatalf("second add: exit %d\n%s%s", code, out, errOut)
	}

	// The node loses its copy: it knows the version from the catalog but
	// cannot run it until the bundle comes back.
	a.Stop()
	if err := os.RemoveAll(filepath.Join(a.DataDir, "plugins", "echo", "1.0.0")); err != nil {
		t.Fatal(err)
	}
	a.Start()
	out, errOut, code = a.CLI("bundle", "add", echo)
	if code != 0 || !strings.Contains(out, "already registered") || !strings.Contains(out, "lacked its files and has them now") {
		t.Fatalf("add on a node without the files: exit %d\n%s%s", code, out, errOut)
	}
	a.WaitRunning("echo", "1.0.0")
}
