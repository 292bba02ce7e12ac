package governance

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
)

// cgroupDirs lists the directories of cgroup p (e.g. m.parent) in every
// hierarchy of m.
func cgroupDirs(m *Manager, p string) []string {
	switch b := m.b.(type) {
	case *v1Backend:
		var dirs []string
		for _, s := range b.subsystems {
			dirs = append(dirs, filepath.Join(b.root, string(s.Name()), p))
		}
		return dirs
	case *v2Backend:
		return []string{filepath.Join(b.root, p)}
	}
	return nil
}

// groupDirs maps each controller of g (v2: "unified") to its directory.
func groupDirs(t testing.TB, g *Group) map[string]string {
	t.Helper()
	switch gb := g.b.(type) {
	case *v1Group:
		dirs := make(map[string]string)
		for _, s := range gb.b.subsystems {
			dirs[string(s.Name())] = filepath.Join(gb.b.root, string(s.Name()), gb.cgPath)
		}
		return dirs
	case *v2Group:
		return map[string]string{"unified": gb.dir()}
	}
	t.Fatalf("group %q has no cgroup", g.id)
	return nil
}

// controllerDir is the directory of g that holds controller c's files.
func controllerDir(t testing.TB, g *Group, c string) string {
	t.Helper()
	dirs := groupDirs(t, g)
	if d, ok := dirs["unified"]; ok {
		return d
	}
	d, ok := dirs[c]
	if !ok {
		t.Fatalf("group %q has no %s controller", g.id, c)
	}
	return d
}

// readKey reads the value of key from a "key value" cgroup file; ok is
// false when the file or the key is missing.
func readKey(file, key string) (v uint64, ok bool) {
	f, err := os.Open(file)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, val, _ := strings.Cut(sc.Text(), " ")
		if k == key {
			n, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// readNumber reads a cgroup file holding one number.
func readNumber(file string) (uint64, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil
}

// procCgroups parses /proc/<pid>/cgroup (pid "thread-self" for the calling
// thread): v1 controller → path, and the v2 path.
func procCgroups(t testing.TB, pid string) (map[string]string, string) {
	t.Helper()
	v1, v2, err := cgroups.ParseCgroupFileUnified("/proc/" + pid + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	return v1, v2
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root to create cgroups (running as uid %d)", os.Geteuid())
	}
}

// requireCgroups fails a root test on a host where cgroups cannot be had:
// that is what these tests exist to exercise.
func requireCgroups(t testing.TB, m *Manager) {
	t.Helper()
	if m.Mode() == ModeNone {
		t.Fatalf("running as root, yet no cgroups: %s", m.Reason())
	}
}

func requireEnforced(t testing.TB, g *Group, resources ...string) {
	t.Helper()
	for _, r := range resources {
		if s := statusOf(t, g, r); !s.Enforced {
			t.Fatalf("%s limit %s is not enforced: %s", r, s.Limit, s.Reason)
		}
	}
}

// withPdeathsig sets SIGKILL as cmd's parent-death signal.
func withPdeathsig(attr *syscall.SysProcAttr) *syscall.SysProcAttr {
	if attr == nil {
		attr = new(syscall.SysProcAttr)
	}
	attr.Pdeathsig = syscall.SIGKILL
	return attr
}

// cleanAbandoned removes the parent cgroups of earlier test runs that died
// before their cleanup ran (a test timeout, a kill): the groups of every
// Manager in them, then the parents.
func cleanAbandoned() {
	if os.Geteuid() != 0 {
		return
	}
	roots := map[string]string{filepath.Join(defaultRoot, "*", "plughost-test-*"): ""}
	if mount, err := cgroup2Mount(); err == nil {
		roots[filepath.Join(mount, "plughost-test-*")] = mount
	}
	for pattern, root := range roots {
		dirs, _ := filepath.Glob(pattern)
		seen := make(map[string]bool)
		for _, dir := range dirs {
			name := filepath.Base(dir)
			pid, _, _ := strings.Cut(strings.TrimPrefix(name, "plughost-test-"), "-")
			if seen[name] || pid == strconv.Itoa(os.Getpid()) || exists("/proc/"+pid) {
				continue
			}
			seen[name] = true
			// A Manager's own cgroup holds instance cgroups; an instance
			// cgroup of a Group-less Manager holds none.
			groups, _ := filepath.Glob(filepath.Join(dir, "*", "*", "tasks"))
			more, _ := filepath.Glob(filepath.Join(dir, "*", "*", "cgroup.procs"))
			for _, f := range append(groups, more...) {
				group := filepath.Base(filepath.Dir(filepath.Dir(f)))
				if m, err := NewManager(Config{Parent: name, Group: group, Root: root}); err == nil {
					_ = m.Close()
				}
			}
			if m, err := NewManager(Config{Parent: name, Root: root}); err == nil {
				_ = m.Close()
			}
		}
	}
}

// startWhereami starts a "whereami" child through g.Start and returns the
// cgroups the child saw as the first thing it did. The child reports before
// start returns, so before Start could move a misplaced process.
func startWhereami(t testing.TB, g *Group, attr *syscall.SysProcAttr) (cmd *exec.Cmd, v1 map[string]string, v2 string) {
	t.Helper()
	cmd, _ = childCmd(t, "whereami")
	cmd.SysProcAttr = attr
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	cmd.Stdout = pw
	var report string
	start := func() error {
		err := cmd.Start()
		pw.Close()
		if err != nil {
			return err
		}
		lines := make(chan string, 1)
		go func() {
			var b strings.Builder
			sc := bufio.NewScanner(pr)
			for sc.Scan() && sc.Text() != "END" {
				b.WriteString(sc.Text() + "\n")
			}
			lines <- b.String()
		}()
		select {
		case report = <-lines:
			return nil
		case <-time.After(20 * time.Second):
			return errors.New("child did not report its cgroups within 20s")
		}
	}
	if err := g.Start(cmd, start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	v1, v2, err = cgroups.ParseCgroupFromReaderUnified(strings.NewReader(report))
	if err != nil {
		t.Fatalf("child reported %q: %v", report, err)
	}
	return cmd, v1, v2
}
