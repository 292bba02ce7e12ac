package governance

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/hashicorp/go-hclog"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// v1Controllers are the cgroup v1 hierarchies a group joins. cpu (quota)
// and cpuacct (usage) are separate hierarchies on some hosts and one
// ("cpu,cpuacct", with cpu and cpuacct symlinks) on others; both work.
var v1Controllers = []cgroup1.Name{cgroup1.Memory, cgroup1.Cpu, cgroup1.Cpuacct, cgroup1.Pids}

// v1Backend places groups in the cgroup v1 hierarchies mounted under root.
type v1Backend struct {
	root       string
	own        string // the Manager's own cgroup, e.g. "/plughost/agent-n1-1f2e3d4c", the same in every hierarchy
	log        hclog.Logger
	subsystems []cgroup1.Subsystem     // the mounted ones among v1Controllers
	mountRoots map[cgroup1.Name]string // see mountRoot
	missing    map[cgroup1.Name]string // why an unmounted controller is missing
	memsw      bool                    // memory.memsw.* exists: swap can be capped
	ownCg      cgroup1.Cgroup
}

// mountedV1 lists the controllers of v1Controllers mounted under root.
func mountedV1(root string) []cgroup1.Name {
	var out []cgroup1.Name
	for _, n := range v1Controllers {
		if isMount(filepath.Join(root, string(n)), unix.CGROUP_SUPER_MAGIC) {
			out = append(out, n)
		}
	}
	return out
}

func newV1(root, own string, log hclog.Logger) (*v1Backend, string, error) {
	b := &v1Backend{
		root:       root,
		own:        own,
		log:        log,
		mountRoots: make(map[cgroup1.Name]string),
		missing:    make(map[cgroup1.Name]string),
	}
	mounted := mountedV1(root)
	for _, n := range v1Controllers {
		dir := filepath.Join(root, string(n))
		if !contains(names(mounted), string(n)) {
			b.missing[n] = fmt.Sprintf("cgroup v1 controller %q is not mounted at %s", n, dir)
			continue
		}
		b.mountRoots[n] = mountRoot(dir)
		switch n {
		case cgroup1.Memory:
			b.memsw = exists(filepath.Join(dir, "memory.memsw.limit_in_bytes"))
			b.subsystems = append(b.subsystems, cgroup1.NewMemory(root, cgroup1.OptionalSwap(), cgroup1.IgnoreModules("kmem", "kmem.tcp")))
		case cgroup1.Cpu:
			b.subsystems = append(b.subsystems, cgroup1.NewCpu(root))
		case cgroup1.Cpuacct:
			b.subsystems = append(b.subsystems, cgroup1.NewCpuacct(root))
		case cgroup1.Pids:
			b.subsystems = append(b.subsystems, cgroup1.NewPids(root))
		}
	}
	var cg cgroup1.Cgroup
	err := createRetrying(func() (err error) {
		cg, err = cgroup1.New(cgroup1.StaticPath(own), &specs.LinuxResources{}, cgroup1.WithHierarchy(b.hierarchy))
		return err
	})
	if err != nil {
		return nil, b.dirs(own), err
	}
	b.ownCg = cg
	return b, b.dirs(own), nil
}

func names(ns []cgroup1.Name) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = string(n)
	}
	return out
}

// hierarchy is the cgroup1.Hierarchy of the mounted controllers.
func (b *v1Backend) hierarchy() ([]cgroup1.Subsystem, error) { return b.subsystems, nil }

// dirs names the directories of cgroup p, for messages.
func (b *v1Backend) dirs(p string) string {
	var list []string
	for _, s := range b.subsystems {
		list = append(list, filepath.Join(b.root, string(s.Name()), p))
	}
	if len(list) == 1 {
		return list[0]
	}
	return "{" + strings.Join(list, ", ") + "}"
}

func (b *v1Backend) mode() string { return ModeV1 }

func (b *v1Backend) reason() string {
	var why []string
	for _, res := range []string{ResourceMemory, ResourceCPU, ResourcePids} {
		if r := b.unavailable(res); r != "" {
			why = append(why, r)
		}
	}
	if r := b.missing[cgroup1.Cpuacct]; r != "" {
		why = append(why, r+" (CPU usage is not reported)")
	}
	return strings.Join(why, "; ")
}

func (b *v1Backend) unavailable(resource string) string {
	switch resource {
	case ResourceMemory:
		return b.missing[cgroup1.Memory]
	case ResourceCPU:
		return b.missing[cgroup1.Cpu]
	case ResourcePids:
		return b.missing[cgroup1.Pids]
	}
	return fmt.Sprintf("unknown resource %q", resource)
}

func (b *v1Backend) groupDir(id string) string { return b.dirs(path.Join(b.own, id)) }

func (b *v1Backend) newGroup(id string) (groupBackend, error) {
	cg, err := b.ownCg.New(id, &specs.LinuxResources{})
	if err != nil {
		return nil, err
	}
	return &v1Group{b: b, cgPath: path.Join(b.own, id), cg: cg}, nil
}

func (b *v1Backend) loadGroup(id string) (groupBackend, error) {
	p := path.Join(b.own, id)
	cg, err := cgroup1.Load(cgroup1.StaticPath(p), cgroup1.WithHierarchy(b.hierarchy))
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return nil, fmt.Errorf("%s: %w", b.dirs(p), os.ErrNotExist)
	}
	if err != nil {
		return nil, err
	}
	return &v1Group{b: b, cgPath: p, cg: cg}, nil
}

func (b *v1Backend) listGroups() ([]string, error) {
	set := make(map[string]bool)
	for _, s := range b.subsystems {
		entries, err := os.ReadDir(filepath.Join(b.root, string(s.Name()), b.own))
		if err != nil && !os.IsNotExist(err) {
			return nil, err
		}
		for _, e := range entries {
			if e.IsDir() {
				set[e.Name()] = true
			}
		}
	}
	return sortedKeys(set), nil
}

func (b *v1Backend) removeCgroup(p string) error {
	var errs []error
	for _, s := range b.subsystems {
		err := os.Remove(filepath.Join(b.root, string(s.Name()), p))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// threadHome returns, per controller, the cgroup (below its mount) that
// the calling thread is in now.
func (b *v1Backend) threadHome() (map[cgroup1.Name]string, error) {
	paths, _, err := cgroups.ParseCgroupFileUnified("/proc/thread-self/cgroup")
	if err != nil {
		return nil, err
	}
	home := make(map[cgroup1.Name]string)
	for _, s := range b.subsystems {
		n := s.Name()
		rel, ok := relToMount(paths[string(n)], b.mountRoots[n])
		if !ok || paths[string(n)] == "" {
			rel = "/" // not visible through our mount: fall back to its top
		}
		home[n] = rel
	}
	return home, nil
}

// moveThread moves thread tid to cgroup rel of controller n.
func (b *v1Backend) moveThread(tid int, n cgroup1.Name, rel string) error {
	cg, err := cgroup1.Load(cgroup1.StaticPath(rel), cgroup1.WithHierarchy(cgroup1.SingleSubsystem(b.hierarchy, n)))
	if err != nil {
		return fmt.Errorf("%s cgroup %s: %w", n, rel, err)
	}
	return cg.AddTask(cgroup1.Process{Pid: tid})
}

// sendHome moves thread tid back to home, or, where home is gone, to the
// top of the hierarchy.
func (b *v1Backend) sendHome(tid int, home map[cgroup1.Name]string) error {
	var errs []error
	for _, s := range b.subsystems {
		n := s.Name()
		err := b.moveThread(tid, n, home[n])
		if err != nil && home[n] != "/" {
			b.log.Warn("thread could not return to its cgroup; moving it to the hierarchy root", "controller", n, "cgroup", home[n], "error", err)
			err = b.moveThread(tid, n, "/")
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// v1Group is one instance's cgroup in every mounted v1 hierarchy.
type v1Group struct {
	b      *v1Backend
	cgPath string // e.g. "/plughost/<id>"
	cg     cgroup1.Cgroup
}

func (g *v1Group) path() string { return g.cgPath }

func (g *v1Group) setLimit(resource string, l Limits) error {
	switch resource {
	case ResourceMemory:
		limit := l.MemoryBytes
		if err := g.cg.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}); err != nil {
			return err
		}
		// No swap on top of the limit: memory plus swap capped at the
		// memory limit where swap is accounted, else swappiness 0, which
		// keeps the group's own reclaim from swapping.
		noSwap := &specs.LinuxMemory{Swap: &limit}
		if !g.b.memsw {
			var zero uint64
			noSwap = &specs.LinuxMemory{Swappiness: &zero}
		}
		if err := g.cg.Update(&specs.LinuxResources{Memory: noSwap}); err != nil {
			g.b.log.Warn("could not forbid swap; the memory limit holds but the group may swap", "cgroup", g.cgPath, "error", err)
		}
		return nil
	case ResourceCPU:
		period := uint64(CPUPeriod.Microseconds())
		quota := cpuQuotaMicros(l.CPU)
		return g.cg.Update(&specs.LinuxResources{CPU: &specs.LinuxCPU{Period: &period, Quota: &quota}})
	case ResourcePids:
		n := l.Pids
		return g.cg.Update(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &n}})
	}
	return fmt.Errorf("unknown resource %q", resource)
}

// start forks cmd from a thread that has joined the group: in cgroup v1
// membership is per thread and a child inherits its parent thread's.
func (g *v1Group) start(cmd *exec.Cmd, start func() error) error {
	runtime.LockOSThread()
	tid := unix.Gettid()
	home, err := g.b.threadHome()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("governance: reading the cgroups of the starting thread: %w", err)
	}
	joinErr := g.cg.AddTask(cgroup1.Process{Pid: tid})
	var startErr error
	if joinErr == nil {
		startErr = start()
	}
	if err := g.b.sendHome(tid, home); err != nil {
		// The thread cannot leave the plugin's cgroup. Keep it locked so
		// that no other goroutine runs (and is accounted) there; it is
		// retired when this goroutine ends.
		g.b.log.Error("agent thread is stuck in a plugin cgroup and is retired", "cgroup", g.cgPath, "tid", tid, "error", err)
	} else {
		runtime.UnlockOSThread()
	}
	if joinErr != nil {
		return fmt.Errorf("governance: moving the starting thread into %s: %w", g.b.dirs(g.cgPath), joinErr)
	}
	if startErr != nil {
		return startErr
	}
	return g.verify(cmd)
}

// verify checks that cmd's process is in the group and moves it if not.
func (g *v1Group) verify(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	pid := cmd.Process.Pid
	paths, _, err := cgroups.ParseCgroupFileUnified(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil // exited and reaped already: nothing left to place
	}
	var outside []string
	for _, s := range g.b.subsystems {
		n := s.Name()
		if rel, ok := relToMount(paths[string(n)], g.b.mountRoots[n]); !ok || rel != g.cgPath {
			outside = append(outside, fmt.Sprintf("%s:%s", n, paths[string(n)]))
		}
	}
	if len(outside) == 0 {
		return nil
	}
	g.b.log.Warn("plugin process started outside its cgroup; moving it", "pid", pid, "cgroup", g.cgPath, "found", strings.Join(outside, " "))
	if err := g.cg.Add(cgroup1.Process{Pid: pid}); err != nil {
		return fmt.Errorf("governance: moving process %d into %s: %w", pid, g.b.dirs(g.cgPath), err)
	}
	return nil
}

// member reports whether process pid is in the group in any hierarchy.
func (g *v1Group) member(pid int) bool {
	paths, _, err := cgroups.ParseCgroupFileUnified(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	for _, s := range g.b.subsystems {
		n := s.Name()
		if rel, ok := relToMount(paths[string(n)], g.b.mountRoots[n]); ok && isUnder(rel, g.cgPath) {
			return true
		}
	}
	return false
}

// procs lists the processes in the group, and below it, in any hierarchy.
func (g *v1Group) procs() ([]uint64, error) {
	set := make(map[uint64]bool)
	found := false
	for _, s := range g.cg.Subsystems() {
		ps, err := g.cg.Processes(s.Name(), true)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		found = true
		for _, p := range ps {
			set[uint64(p.Pid)] = true
		}
	}
	if !found {
		return nil, os.ErrNotExist
	}
	out := make([]uint64, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

func (g *v1Group) usage() (Usage, error) {
	m, err := g.cg.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return Usage{}, err
	}
	var u Usage
	if m.Memory != nil && m.Memory.Usage != nil {
		u.MemoryBytes = m.Memory.Usage.Usage
		u.MemoryPeakBytes = m.Memory.Usage.Max
	}
	if m.MemoryOomControl != nil {
		u.OOMKills = m.MemoryOomControl.OomKill
	}
	if m.CPU != nil {
		if m.CPU.Usage != nil {
			u.CPUUsageNanos = m.CPU.Usage.Total
		}
		if m.CPU.Throttling != nil {
			u.CPUThrottledNanos = m.CPU.Throttling.ThrottledTime
		}
	}
	if m.Pids != nil {
		u.Pids = m.Pids.Current
	}
	if _, ok := g.b.mountRoots[cgroup1.Pids]; ok {
		u.PidsLimitHits = pidsLimitHits(filepath.Join(g.b.root, string(cgroup1.Pids), g.cgPath))
	}
	return u, nil
}

func (g *v1Group) kill(timeout time.Duration) error {
	return killAll(g.procs, g.member, timeout)
}

func (g *v1Group) remove() error {
	err := g.cg.Delete()
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return nil
	}
	return err
}
