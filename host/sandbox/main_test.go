package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// reportEnv, set in a process the tests start sandboxed, makes the test
// binary report what it got instead of running the tests.
const reportEnv = "SANDBOX_TEST_REPORT"

// cgroupReportEnv, set in a process the tests start sandboxed, makes the
// test binary report its cgroup first thing, try to move itself into each
// of the cgroup dirs the variable lists (':'-separated), and then wait to
// be killed.
const cgroupReportEnv = "SANDBOX_TEST_CGROUP"

func TestMain(m *testing.M) {
	if Init() {
		return
	}
	if os.Getenv(reportEnv) != "" {
		report()
		os.Exit(0)
	}
	if dirs := os.Getenv(cgroupReportEnv); dirs != "" {
		reportCgroup(strings.Split(dirs, ":"))
	}
	os.Exit(m.Run())
}

// report prints, a line each, what a sandboxed process holds and what it
// could do.
func report() {
	status, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(status), "\n") {
		for _, k := range []string{"Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:", "NoNewPrivs:"} {
			if strings.HasPrefix(l, k) {
				fmt.Println(strings.Join(strings.Fields(l), " "))
			}
		}
	}
	wd, _ := os.Getwd()
	fmt.Println("cwd:", wd)
	stdin, _ := os.Readlink("/proc/self/fd/0")
	fmt.Println("stdin:", stdin)
	// Whatever the runtime opened since is not the executable.
	fd3, _ := os.Readlink("/proc/self/fd/3")
	fmt.Println("fd3:", fd3)
	_, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 0, 0, 0)
	fmt.Println("setuid 0:", e)
	fmt.Println("env:", strings.Join(os.Environ(), " "))
}

// reportCgroup prints the process's cgroups as it sees them before doing
// anything else, then "move <dir>: <error>" for each escape attempt, then
// "ready", and sleeps until it is killed.
func reportCgroup(escapes []string) {
	first, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		fmt.Println("first: reading /proc/self/cgroup:", err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(first)), "\n") {
		fmt.Println("first:", l)
	}
	pid := strconv.Itoa(os.Getpid())
	for _, dir := range escapes {
		err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(pid), 0)
		fmt.Printf("move %s: %v\n", dir, err)
	}
	fmt.Println("ready")
	for {
		time.Sleep(time.Hour)
	}
}
