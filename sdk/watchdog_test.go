//go:build linux

package sdk

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// alive reports whether pid is a live process: not gone, not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// waitDead polls until every pid is dead, or fails the test at the deadline.
func waitDead(t *testing.T, within time.Duration, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var living []int
		for _, pid := range pids {
			if alive(pid) {
				living = append(living, pid)
			}
		}
		if len(living) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %v still alive after %v", living, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readPid polls for the pid the helper plugin writes.
func readPid(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 {
			pid, err := strconv.Atoi(string(b))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid in %s", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWatchdogParentDeath kills the plugin's parent without any parent-death
// signal: the watchdog alone must notice and take the plugin's forked child
// down with it.
func TestWatchdogParentDeath(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	parent := exec.Command(os.Args[0])
	parent.Env = append(os.Environ(), "SDK_TEST_HELPER=parent", "SDK_TEST_CHILD_PID_FILE="+pidFile)
	parent.Stderr = os.Stderr
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = parent.Process.Kill(); _ = parent.Wait() })

	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- line
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
		t.Fatal("parent helper did not start the plugin")
	}
	pluginPid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ready ")))
	if err != nil {
		t.Fatalf("parent said %q", line)
	}
	t.Cleanup(func() { _ = syscall.Kill(pluginPid, syscall.SIGKILL) })
	childPid := readPid(t, pidFile)
	if !alive(pluginPid) || !alive(childPid) {
		t.Fatal("plugin or its child died before the parent did")
	}

	if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = parent.Wait()
	waitDead(t, 10*time.Second, pluginPid, childPid)
	noDataSocketLeft(t, filepath.Dir(pidFile))
}

// noDataSocketLeft fails if a plugin killed by its watchdog left its data
// socket's directory in dir (its PLUGIN_UNIX_SOCKET_DIR): no agent removes
// it after a kill the agent did not see.
func noDataSocketLeft(t *testing.T, dir string) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(dir, "plughost-data-*"))
	if len(left) > 0 {
		t.Fatalf("the killed plugin left its data socket behind: %v", left)
	}
}

// TestWatchdogSIGTERM sends SIGTERM, the agent's parent-death signal, to the
// plugin alone: its whole process group must die.
func TestWatchdogSIGTERM(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	cmd := pluginCommand(pidFile)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	handshake := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		handshake <- line
	}()
	select {
	case line := <-handshake:
		if !strings.Contains(line, "|grpc|") {
			t.Fatalf("handshake %q", line)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no handshake from the plugin")
	}
	childPid := readPid(t, pidFile)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("plugin exited with %v after SIGTERM, want it killed", err)
	}
	if ws := exit.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("plugin ended with %v, want killed by its own group SIGKILL", ws)
	}
	waitDead(t, 10*time.Second, childPid)
	noDataSocketLeft(t, filepath.Dir(pidFile))
}

// TestServeByHand runs the plugin without the agent: a friendly line, then
// go-plugin's, then status 1.
func TestServeByHand(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "SDK_TEST_HELPER=plugin")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("run by hand: %v, want exit status 1", err)
	}
	want := "watchdog-test 1.0.0 is a plughost plugin: add it to an agent with 'plughost bundle build' and 'plughost bundle add'\n"
	if !strings.HasPrefix(stderr.String(), want) || !strings.Contains(stderr.String(), "This binary is a plugin") {
		t.Fatalf("stderr:\n%s", stderr.String())
	}
}
