package test

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// sleepAsUID starts sleep as uid and gid, as a service systemd gave a dynamic
// user would run (a uid /etc/passwd does not list), until the test ends.
func sleepAsUID(t *testing.T, uid, gid uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, "sleep", "120")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: true}}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("sleep as uid %d gid %d: %v", uid, gid, err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
}

// TestPluginUIDSkipsRunningProcesses: where processes that no user
// database lists already run with uids or gids of plugin_uid_range (as
// systemd's DynamicUser= services do), a real agent gives neither the
// bundle probe nor a plugin one of them, which would let the plugin signal
// and trace those processes: both get the two uids nothing runs with.
func TestPluginUIDSkipsRunningProcesses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sandboxing plugins needs a root agent")
	}
	t.Parallel()
	// Above the default range, so no other test's plugin runs with them.
	const base = 1879200000
	for i := range uint32(3) {
		sleepAsUID(t, base+i, 65534)   // as uid
		sleepAsUID(t, 65534, base+3+i) // as gid
	}
	a := NewAgent(t, AgentOptions{Args: []string{"-plugin-uid-range", strconv.Itoa(base) + "-" + strconv.Itoa(base+7)}})
	t.Cleanup(func() { reapOrphans(t, a) })
	a.Drop(bundlePath("counter", "1.0.0"))
	a.WaitRunning("counter", "1.0.0")
	st, err := pluginStatus(t, a, "counter")
	if err != nil {
		t.Fatal(err)
	}
	uid := uidOf(st.Instances[0].Pid)
	if uid != base+6 && uid != base+7 {
		t.Fatalf("counter runs as uid %d, want %d or %d: %d-%d are the uid or gid of running processes", uid, base+6, base+7, base, base+5)
	}
}
