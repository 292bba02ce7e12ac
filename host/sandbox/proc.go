package sandbox

import (
	"bufio"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

type owner struct{ uid, gid uint32 }

func statOwner(fi fs.FileInfo) (owner, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return owner{}, false
	}
	return owner{uid: st.Uid, gid: st.Gid}, true
}

// capEff is the agent's effective capability set, from /proc/self/status.
func capEff() uint64 {
	v, _ := statusField("/proc/self/status", "CapEff")
	n, _ := strconv.ParseUint(v, 16, 64)
	return n
}

// statusField reads one "Name:\tvalue" line of a /proc status file.
func statusField(file, name string) (string, bool) {
	f, err := os.Open(file)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == name {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// ptraceScope is kernel.yama.ptrace_scope, -1 where Yama is absent.
func ptraceScope() int {
	b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope")
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// processesOf lists the live processes whose real, effective or saved uid is
// uid.
func processesOf(uid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	want := strconv.Itoa(uid)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		v, ok := statusField("/proc/"+e.Name()+"/status", "Uid")
		if st, _ := statusField("/proc/"+e.Name()+"/status", "State"); !ok || strings.HasPrefix(st, "Z") {
			continue // gone, or dead and waiting for its parent
		}
		f := strings.Fields(v)
		if len(f) >= 3 && (f[0] == want || f[1] == want || f[2] == want) {
			out = append(out, pid)
		}
	}
	return out
}

// idsInUse is the set of every uid and gid (real, effective, saved and
// filesystem) and supplementary group of the processes running now.
func idsInUse() map[uint32]bool {
	ids := map[uint32]bool{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue // gone
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok || (k != "Uid" && k != "Gid" && k != "Groups") {
				continue
			}
			for _, f := range strings.Fields(v) {
				if n, err := strconv.ParseUint(f, 10, 32); err == nil {
					ids[uint32(n)] = true
				}
			}
		}
	}
	return ids
}
