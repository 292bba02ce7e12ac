package sandbox

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// reportEnv, set in a process the tests start sandboxed, makes the test
// binary report what it got instead of running the tests.
const reportEnv = "SANDBOX_TEST_REPORT"

func TestMain(m *testing.M) {
	if Init() {
		return
	}
	if os.Getenv(reportEnv) != "" {
		report()
		os.Exit(0)
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
