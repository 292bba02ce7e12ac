package governance

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// Group is the cgroup of one plugin instance.
type Group struct {
	m      *Manager
	id     string
	log    hclog.Logger
	b      groupBackend // nil when the group has no cgroup
	status []LimitStatus

	mu      sync.Mutex
	deleted bool
	started []*os.Process // what Start started, for Kill without a cgroup
}

// Start runs start, which must start cmd on the calling goroutine (a
// go-plugin client's Start does), such that the process is inside the
// group's cgroup before it runs any of its own code:
//   - cgroup v2: the process is cloned straight into the cgroup
//     (SysProcAttr.UseCgroupFD; cmd's other SysProcAttr fields are kept);
//   - cgroup v1: the calling goroutine is locked to its thread, the thread
//     joins the cgroup, start forks from it so the child inherits the
//     cgroup, and the thread then returns to the cgroups it came from. While
//     start runs, that thread counts towards the group's pids limit;
//   - no cgroup: start just runs.
//
// After start, Start checks that the process is in the cgroup, and moves it
// there (with a warning in the log) if it is not. A nil start means
// cmd.Start.
func (g *Group) Start(cmd *exec.Cmd, start func() error) error {
	if start == nil {
		start = cmd.Start
	}
	g.mu.Lock()
	deleted := g.deleted
	g.mu.Unlock()
	if deleted {
		return ErrGroupDeleted
	}
	var err error
	if g.b == nil {
		err = start()
	} else {
		err = g.b.start(cmd, start)
	}
	if cmd.Process != nil {
		g.mu.Lock()
		g.started = append(g.started, cmd.Process)
		g.mu.Unlock()
	}
	return err
}

// Enforcement says, per resource, whether its limit is enforced and why not.
func (g *Group) Enforcement() []LimitStatus {
	return append([]LimitStatus(nil), g.status...)
}

// Usage returns what the group's processes use and have used.
func (g *Group) Usage() (Usage, error) {
	if err := g.usable(); err != nil {
		return Usage{}, err
	}
	return g.b.usage()
}

// OOMKilled reports whether the kernel OOM-killed a process of this group
// since the group was made.
func (g *Group) OOMKilled() (bool, error) {
	u, err := g.Usage()
	if err != nil {
		return false, err
	}
	return u.OOMKills > 0, nil
}

// Kill SIGKILLs every process in the group and waits, within a bounded
// time, until none is left. Without a cgroup it kills the processes Start
// started.
func (g *Group) Kill() error {
	if g.b == nil {
		g.mu.Lock()
		procs := append([]*os.Process(nil), g.started...)
		g.mu.Unlock()
		var errs []error
		for _, p := range procs {
			if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if err := g.usable(); err != nil {
		return err
	}
	if err := g.b.kill(killTimeout); err != nil {
		return fmt.Errorf("governance: killing %s: %w", g.b.path(), err)
	}
	return nil
}

// Delete kills what is left in the group and removes its cgroup (a
// Standalone group: its Manager's cgroups too). Deleting a deleted group
// does nothing.
func (g *Group) Delete() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.deleted {
		return nil
	}
	if g.b != nil {
		if err := destroy(g.b); err != nil {
			return fmt.Errorf("governance: deleting %s: %w", g.b.path(), err)
		}
	}
	g.deleted = true
	g.m.forget(g)
	if g.m.closeWithGroup {
		return g.m.Close()
	}
	return nil
}

// Path returns the group's cgroup path below the hierarchy root, e.g.
// "/plughost/<group>/<instanceID>", as /proc/<pid>/cgroup shows it where the cgroup
// filesystem is mounted at its root; "" when the group has no cgroup.
func (g *Group) Path() string {
	if g.b == nil {
		return ""
	}
	return g.b.path()
}

func (g *Group) usable() error {
	if g.b == nil {
		return ErrNoCgroup
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.deleted {
		return ErrGroupDeleted
	}
	return nil
}
