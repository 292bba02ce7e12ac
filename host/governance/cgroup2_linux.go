package governance

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// v2Resources are the resources a group limits; each is also the name of
// the cgroup v2 controller that limits it.
var v2Resources = []string{ResourceMemory, ResourceCPU, ResourcePids}

// v2Backend places groups in the cgroup2 hierarchy mounted at root.
type v2Backend struct {
	root      string
	own       string // the Manager's own cgroup, e.g. "/plughost/agent-n1-1f2e3d4c"
	log       hclog.Logger
	mountRoot string            // see mountRoot
	reasons   map[string]string // why a resource's controller cannot be used
	ownMgr    *cgroup2.Manager
}

func newV2(root, own string, log hclog.Logger) (*v2Backend, string, error) {
	dir := filepath.Join(root, own)
	b := &v2Backend{root: root, own: own, log: log, mountRoot: mountRoot(root), reasons: make(map[string]string)}
	top, err := cgroup2.Load("/", cgroup2.WithMountpoint(root))
	if err != nil {
		return nil, dir, err
	}
	err = createRetrying(func() (err error) {
		b.ownMgr, err = top.NewChild(strings.TrimPrefix(own, "/"), nil)
		return err
	})
	if err != nil {
		return nil, dir, err
	}
	for _, c := range v2Resources {
		b.enable(c)
	}
	return b, dir, nil
}

// enable makes controller ctrl available to the instance cgroups by
// enabling it in the subtree_control of the own cgroup and of every cgroup
// above it, and records why when that is not possible.
func (b *v2Backend) enable(ctrl string) {
	subtree := filepath.Join(b.root, b.own, "cgroup.subtree_control")
	if contains(fieldsOf(subtree), ctrl) {
		return
	}
	// ToggleControllers writes the subtree_control of every ancestor of a
	// manager's cgroup, so a manager for a (never created) child of the
	// own cgroup reaches the own cgroup's.
	probe, err := cgroup2.Load(path.Join(b.own, "_"), cgroup2.WithMountpoint(b.root))
	if err == nil {
		err = probe.ToggleControllers([]string{ctrl}, cgroup2.Enable)
	}
	if contains(fieldsOf(subtree), ctrl) {
		b.log.Info("enabled cgroup v2 controller", "controller", ctrl, "in", subtree)
		return
	}
	why := fmt.Sprintf("cgroup v2 controller %q is not enabled in %s (enable it, or run the agent where cgroup v2 controllers are delegated)", ctrl, subtree)
	if offered := filepath.Join(b.root, "cgroup.controllers"); !contains(fieldsOf(offered), ctrl) {
		why += fmt.Sprintf(": %s does not offer it", offered)
	} else if err != nil {
		why += ": " + err.Error()
	}
	b.reasons[ctrl] = why
}

func (b *v2Backend) mode() string { return ModeV2 }

func (b *v2Backend) reason() string {
	var why []string
	for _, res := range v2Resources {
		if r := b.reasons[res]; r != "" {
			why = append(why, r)
		}
	}
	return strings.Join(why, "; ")
}

func (b *v2Backend) unavailable(resource string) string {
	if !contains(v2Resources, resource) {
		return fmt.Sprintf("unknown resource %q", resource)
	}
	return b.reasons[resource]
}

func (b *v2Backend) groupDir(id string) string { return filepath.Join(b.root, b.own, id) }

func (b *v2Backend) newGroup(id string) (groupBackend, error) {
	mgr, err := b.ownMgr.NewChild(id, nil)
	if err != nil {
		return nil, err
	}
	return &v2Group{b: b, cgPath: path.Join(b.own, id), mgr: mgr}, nil
}

func (b *v2Backend) loadGroup(id string) (groupBackend, error) {
	p := path.Join(b.own, id)
	if _, err := os.Stat(filepath.Join(b.root, p)); err != nil {
		return nil, err
	}
	mgr, err := cgroup2.Load(p, cgroup2.WithMountpoint(b.root))
	if err != nil {
		return nil, err
	}
	return &v2Group{b: b, cgPath: p, mgr: mgr}, nil
}

func (b *v2Backend) listGroups() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(b.root, b.own))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	set := make(map[string]bool)
	for _, e := range entries {
		if e.IsDir() {
			set[e.Name()] = true
		}
	}
	return sortedKeys(set), nil
}

func (b *v2Backend) removeCgroup(p string) error {
	err := os.Remove(filepath.Join(b.root, p))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// v2Group is one instance's cgroup in the cgroup2 hierarchy.
type v2Group struct {
	b      *v2Backend
	cgPath string // e.g. "/plughost/<id>"
	mgr    *cgroup2.Manager
}

func (g *v2Group) path() string { return g.cgPath }

func (g *v2Group) dir() string { return filepath.Join(g.b.root, g.cgPath) }

func (g *v2Group) setLimit(resource string, l Limits) error {
	switch resource {
	case ResourceMemory:
		limit := l.MemoryBytes
		if err := g.mgr.Update(&cgroup2.Resources{Memory: &cgroup2.Memory{Max: &limit}}); err != nil {
			return err
		}
		// No swap on top of the limit, where swap is accounted at all.
		if exists(filepath.Join(g.dir(), "memory.swap.max")) {
			var none int64
			if err := g.mgr.Update(&cgroup2.Resources{Memory: &cgroup2.Memory{Swap: &none}}); err != nil {
				g.b.log.Warn("could not forbid swap; the memory limit holds but the group may swap", "cgroup", g.cgPath, "error", err)
			}
		}
		// An OOM kill takes the whole instance down rather than leaving
		// it maimed; the supervisor restarts it.
		if exists(filepath.Join(g.dir(), "memory.oom.group")) {
			whole := true
			if err := g.mgr.Update(&cgroup2.Resources{Memory: &cgroup2.Memory{OOMGroup: &whole}}); err != nil {
				g.b.log.Warn("could not set memory.oom.group", "cgroup", g.cgPath, "error", err)
			}
		}
		return nil
	case ResourceCPU:
		period := uint64(CPUPeriod.Microseconds())
		quota := cpuQuotaMicros(l.CPU)
		return g.mgr.Update(&cgroup2.Resources{CPU: &cgroup2.CPU{Max: cgroup2.NewCPUMax(&quota, &period)}})
	case ResourcePids:
		return g.mgr.Update(&cgroup2.Resources{Pids: &cgroup2.Pids{Max: l.Pids}})
	}
	return fmt.Errorf("unknown resource %q", resource)
}

// start clones cmd's process straight into the group (CLONE_INTO_CGROUP).
func (g *v2Group) start(cmd *exec.Cmd, start func() error) error {
	fd, err := unix.Open(g.dir(), unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("governance: opening %s: %w", g.dir(), err)
	}
	defer unix.Close(fd)
	orig := cmd.SysProcAttr
	attr := new(syscall.SysProcAttr)
	if orig != nil {
		*attr = *orig
	}
	attr.UseCgroupFD, attr.CgroupFD = true, fd
	cmd.SysProcAttr = attr
	err = start()
	cmd.SysProcAttr = orig // no stale descriptor left in the caller's cmd
	if err != nil {
		return err
	}
	return g.verify(cmd)
}

// verify checks that cmd's process is in the group and moves it if not.
func (g *v2Group) verify(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	pid := cmd.Process.Pid
	p, err := cgroup2.PidGroupPath(pid)
	if err != nil {
		return nil // exited and reaped already: nothing left to place
	}
	if rel, ok := relToMount(p, g.b.mountRoot); ok && rel == g.cgPath {
		return nil
	}
	g.b.log.Warn("plugin process started outside its cgroup; moving it", "pid", pid, "cgroup", g.cgPath, "found", p)
	if err := g.mgr.AddProc(uint64(pid)); err != nil {
		return fmt.Errorf("governance: moving process %d into %s: %w", pid, g.dir(), err)
	}
	return nil
}

// member reports whether process pid is in the group or below it.
func (g *v2Group) member(pid int) bool {
	p, err := cgroup2.PidGroupPath(pid)
	if err != nil {
		return false
	}
	rel, ok := relToMount(p, g.b.mountRoot)
	return ok && isUnder(rel, g.cgPath)
}

func (g *v2Group) procs() ([]uint64, error) { return g.mgr.Procs(true) }

func (g *v2Group) usage() (Usage, error) {
	m, err := g.mgr.StatFiltered(cgroup2.StatPids | cgroup2.StatCPU | cgroup2.StatMemory | cgroup2.StatMemoryEvents)
	if err != nil {
		return Usage{}, err
	}
	var u Usage
	if m.Memory != nil {
		u.MemoryBytes = m.Memory.Usage
		u.MemoryPeakBytes = m.Memory.MaxUsage
	}
	if m.MemoryEvents != nil {
		u.OOMKills = m.MemoryEvents.OomKill
	}
	if m.CPU != nil {
		u.CPUUsageNanos = m.CPU.UsageUsec * 1000
		u.CPUThrottledNanos = m.CPU.ThrottledUsec * 1000
	}
	if m.Pids != nil {
		u.Pids = m.Pids.Current
	}
	u.PidsLimitHits = pidsLimitHits(g.dir())
	return u, nil
}

// kill uses cgroup.kill where the kernel has it (5.14+), then SIGKILLs
// stragglers and waits until the group is empty.
func (g *v2Group) kill(timeout time.Duration) error {
	if exists(filepath.Join(g.dir(), "cgroup.kill")) {
		if err := g.mgr.Kill(); err != nil {
			return err
		}
	}
	return killAll(g.procs, g.member, timeout)
}

func (g *v2Group) remove() error {
	if !exists(g.dir()) {
		return nil
	}
	return g.mgr.Delete()
}
