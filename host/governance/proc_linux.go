package governance

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// readSmall reads a small kernel file such as cgroup.controllers.
func readSmall(file string) (string, error) {
	b, err := os.ReadFile(file)
	return string(b), err
}

// createTries bounds how often the Manager's own cgroup is made again when
// a directory above it vanished while it was being made: agents sharing a
// parent cgroup each remove it once they see it empty.
const createTries = 5

// createRetrying runs create until it does not fail for want of a
// directory, at most createTries times.
func createRetrying(create func() error) error {
	var err error
	for range createTries {
		if err = create(); !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return err
}

func exists(file string) bool {
	_, err := os.Lstat(file)
	return err == nil
}

var mountinfoUnescape = strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)

// mountRoot returns the cgroup path that the cgroup filesystem mounted at
// dir shows at its top: "/", unless dir is a bind mount of a subtree, as in
// a container without a cgroup namespace of its own. /proc/<pid>/cgroup
// paths are relative to the hierarchy root, directories under dir to this.
func mountRoot(dir string) string {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "/"
	}
	defer f.Close()
	root := "/"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && mountinfoUnescape.Replace(fields[4]) == dir {
			root = mountinfoUnescape.Replace(fields[3]) // the last mount on dir wins
		}
	}
	return root
}

// relToMount turns a cgroup path as /proc/<pid>/cgroup shows it into the
// path below a mount whose top is mroot; ok is false if the mount does not
// show that cgroup.
func relToMount(cgroupPath, mroot string) (rel string, ok bool) {
	switch {
	case mroot == "/":
		return cgroupPath, true
	case cgroupPath == mroot:
		return "/", true
	case strings.HasPrefix(cgroupPath, mroot+"/"):
		return strings.TrimPrefix(cgroupPath, mroot), true
	}
	return "", false
}

// isUnder reports whether cgroup path p is dir or below it.
func isUnder(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// killAll SIGKILLs the processes procs lists until it lists none, waiting
// between rounds, and fails with ErrKillTimeout once timeout has passed.
// member re-checks, through a pidfd that pins the process, that a pid still
// belongs to the cgroup, so that a recycled pid is never signalled. The
// calling process itself is never signalled.
func killAll(procs func() ([]uint64, error), member func(pid int) bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	self := os.Getpid()
	pause := time.Millisecond
	for {
		pids, err := procs()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // the cgroup is gone, and so is what was in it
		}
		if err != nil {
			return err
		}
		left := pids[:0]
		for _, pid := range pids {
			if int(pid) != self {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %d process(es) left after %s: %v", ErrKillTimeout, len(left), timeout, left)
		}
		for _, pid := range left {
			sigkill(int(pid), member)
		}
		time.Sleep(pause) // let the kernel finish the exits it has started
		pause = min(2*pause, 20*time.Millisecond)
	}
}

// sigkill sends SIGKILL to pid if it still belongs to the cgroup.
func sigkill(pid int, member func(pid int) bool) {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ENOSYS) {
		if member(pid) {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		return
	}
	if err != nil {
		return // gone already
	}
	defer unix.Close(fd)
	if member(pid) {
		_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	}
}

// pidsLimitHits reads how often the pids limit of the cgroup at dir refused
// a fork: the "max" count of its pids.events (0 where there is none).
func pidsLimitHits(dir string) uint64 {
	b, err := readSmall(filepath.Join(dir, "pids.events"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(b, "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == "max" {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// sortedKeys returns the keys of set in order.
func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
