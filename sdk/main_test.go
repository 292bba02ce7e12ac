package sdk

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plughost/plughost/sdk/wire"
	"google.golang.org/grpc"
)

// The test binary doubles as the processes of the watchdog tests, chosen by
// SDK_TEST_HELPER:
//
//	plugin  forks `sleep 600` (its pid goes to SDK_TEST_CHILD_PID_FILE, if
//	        set), then calls Serve like a plugin's main;
//	parent  starts the plugin in its own process group, waits for its
//	        handshake, prints "ready <pid>" and waits to be killed.
func TestMain(m *testing.M) {
	switch os.Getenv("SDK_TEST_HELPER") {
	case "plugin":
		helperPlugin()
		os.Exit(0)
	case "parent":
		if err := helperParent(); err != nil {
			fmt.Fprintln(os.Stderr, "helper parent:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// probePlugin is the helper plugin: Configure writes a key through the
// store it was given, Health reads it back, so that a healthy answer proves
// the broker's store connection works.
type probePlugin struct{ store Store }

func (*probePlugin) Register(grpc.ServiceRegistrar) {}

func (p *probePlugin) Configure(ctx context.Context, env *Env) error {
	if _, err := env.Store.Put(ctx, "probe", []byte(env.InstanceID), PutOptions{}); err != nil {
		return err
	}
	p.store = env.Store
	return nil
}

func (p *probePlugin) Health(ctx context.Context) error {
	kv, err := p.store.WithConsistency(Session).Get(ctx, "probe")
	if err != nil {
		return err
	}
	return fmt.Errorf("probe reads %q", kv.Value) // the test expects this message
}

func helperPlugin() {
	if path := os.Getenv("SDK_TEST_CHILD_PID_FILE"); path != "" {
		child := exec.Command("sleep", "600")
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "helper plugin:", err)
			os.Exit(1)
		}
		if err := os.WriteFile(path, fmt.Appendf(nil, "%d", child.Process.Pid), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "helper plugin:", err)
			os.Exit(1)
		}
	}
	Serve(Info{Name: "watchdog-test", Version: "1.0.0"}, &probePlugin{})
}

func helperParent() error {
	cmd := pluginCommand(os.Getenv("SDK_TEST_CHILD_PID_FILE"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read handshake: %w", err)
	}
	if !strings.Contains(line, "|grpc|") {
		return fmt.Errorf("handshake %q", line)
	}
	fmt.Printf("ready %d\n", cmd.Process.Pid)
	time.Sleep(time.Hour) // until the test kills this process
	return nil
}

// pluginCommand runs the test binary as a plugin, as the agent would: in its
// own process group, with the handshake cookie. With a pidFile, the plugin
// forks a child and writes its pid there.
func pluginCommand(pidFile string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(),
		"SDK_TEST_HELPER=plugin",
		"SDK_TEST_CHILD_PID_FILE="+pidFile,
		wire.Handshake.MagicCookieKey+"="+wire.Handshake.MagicCookieValue,
		"PLUGIN_PROTOCOL_VERSIONS=1",
	)
	if pidFile != "" {
		// The watchdog tests kill the plugin: keep its socket out of /tmp.
		cmd.Env = append(cmd.Env, "PLUGIN_UNIX_SOCKET_DIR="+filepath.Dir(pidFile))
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}
