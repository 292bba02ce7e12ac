// Package governance limits the memory, CPU and process count of each plugin
// instance with Linux cgroups (v1 or v2), and says plainly where it cannot.
//
// One Manager serves the agent. NewManager detects the cgroup layout,
// creates the Manager's own cgroup <Parent>/<Group> and reports through Mode
// and Reason how far limits can be enforced; it never fails for want of
// cgroups. Each plugin instance gets a Group, the cgroup
// <Parent>/<Group>/<instanceID>, whose Start places the plugin's process
// inside the cgroup before the process runs any of its own code. Agents on
// one machine share Parent; a Manager touches nothing outside its own
// <Parent>/<Group>, except that Close removes Parent once it is empty.
//
// Call order:
//
//	m, err := governance.NewManager(cfg) // once per agent
//	cleaned, err := m.CleanStale()       // once, before the first New
//	g, err := m.New(instanceID, limits)  // per plugin instance
//	err = g.Start(cmd, client.Start)     // go-plugin starts cmd inside start
//	u, err := g.Usage()                  // any time; OOMKilled after an exit
//	err = g.Delete()                     // kills what is left, removes the cgroup
//	err = m.Close()                      // once, when the agent stops
//
// A Manager and its Groups are safe for concurrent use.
package governance

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Modes reported by Manager.Mode.
const (
	ModeV1   = "cgroup v1"
	ModeV2   = "cgroup v2"
	ModeNone = "none"
)

// Resource names used in LimitStatus.
const (
	ResourceMemory = "memory"
	ResourceCPU    = "cpu"
	ResourcePids   = "pids"
)

// DefaultParent is the cgroup under which a Manager makes its own cgroup
// when Config.Parent is empty.
const DefaultParent = "plughost"

// CPUPeriod is the CFS period over which a CPU limit is enforced: a limit of
// C cores allows C × CPUPeriod of CPU time in every period.
const CPUPeriod = 100 * time.Millisecond

// MinCPU is the smallest CPU limit the kernel accepts (a 1 ms quota per
// CPUPeriod).
const MinCPU = 0.01

// Errors returned by this package; test them with errors.Is.
var (
	// ErrInvalidConfig: Config.Parent is not a relative cgroup path, or
	// Config.Group not a single directory name.
	ErrInvalidConfig = errors.New("governance: invalid config")
	// ErrInvalidLimits: a limit is negative, not a number, or below MinCPU.
	ErrInvalidLimits = errors.New("governance: invalid limits")
	// ErrInvalidInstanceID: the instance ID cannot name a cgroup directory.
	ErrInvalidInstanceID = errors.New("governance: invalid instance id")
	// ErrGroupExists: New was called twice for one instance ID without a Delete.
	ErrGroupExists = errors.New("governance: group already exists")
	// ErrClosed: New was called after Close.
	ErrClosed = errors.New("governance: manager closed")
	// ErrNoCgroup: the group has no cgroup (Mode is "none", or creating it
	// failed; Enforcement says why), so there is nothing to measure.
	ErrNoCgroup = errors.New("governance: no cgroup for this group")
	// ErrGroupDeleted: the group was deleted.
	ErrGroupDeleted = errors.New("governance: group deleted")
	// ErrKillTimeout: processes were still in the cgroup when the kill
	// deadline passed.
	ErrKillTimeout = errors.New("governance: processes still running after SIGKILL")
)

// killTimeout bounds how long Kill, Delete and CleanStale wait for a cgroup
// to empty after SIGKILL.
var killTimeout = 5 * time.Second

// Config configures a Manager. The zero value detects the cgroup layout and
// uses DefaultParent, which then belongs to the Manager alone.
type Config struct {
	// Parent is the cgroup, relative to the hierarchy root, under which
	// the Manager makes its own cgroup <Parent>/<Group>. Default
	// DefaultParent.
	Parent string
	// Group is the Manager's own cgroup below Parent, a single directory
	// name: each instance's cgroup is <Parent>/<Group>/<instanceID>, and
	// CleanStale and Close touch nothing outside <Parent>/<Group>. Managers
	// that share a Parent (agents on one machine) need Groups of their own.
	// "" makes the instance cgroups directly under Parent, which then
	// belongs to this Manager alone: its CleanStale removes whatever it
	// finds there.
	Group string
	// Disabled turns governance off: Mode is "none" and no cgroup is touched.
	Disabled bool
	// Logger receives what governance decides and repairs. Default: none.
	Logger hclog.Logger
	// Root overrides where cgroups are mounted: a cgroup2 mount, or a
	// directory holding cgroup v1 controller mounts (memory, cpu, cpuacct,
	// pids). "" detects the host's layout under /sys/fs/cgroup.
	Root string
}

// ownPath validates Parent and Group and returns the absolute cgroup paths
// of the parent and of the Manager's own cgroup, e.g. "/plughost" and
// "/plughost/agent-n1-1f2e3d4c".
func (c Config) ownPath() (parent, own string, err error) {
	if parent, err = c.parentPath(); err != nil {
		return "", "", err
	}
	if c.Group == "" {
		return parent, parent, nil
	}
	if err := validInstanceID(c.Group); err != nil {
		return "", "", fmt.Errorf("%w: group %q must be a single directory name", ErrInvalidConfig, c.Group)
	}
	return parent, path.Join(parent, c.Group), nil
}

// parentPath validates Parent and returns it as an absolute cgroup path,
// e.g. "/plughost".
func (c Config) parentPath() (string, error) {
	p := c.Parent
	if p == "" {
		p = DefaultParent
	}
	clean := path.Clean("/" + p)
	if clean == "/" || slices.Contains(strings.Split(p, "/"), "..") || strings.ContainsAny(p, "\x00\n") {
		return "", fmt.Errorf("%w: parent %q must name a cgroup below the hierarchy root", ErrInvalidConfig, c.Parent)
	}
	return clean, nil
}

// backend is one cgroup layout (v1 or v2) as the Manager uses it.
type backend interface {
	mode() string
	// reason says why governance is not fully enforced; "" if it is.
	reason() string
	// unavailable says why resource cannot be limited by any group; "" if
	// it can.
	unavailable(resource string) string
	// groupDir names the cgroup of id, for messages.
	groupDir(id string) string
	newGroup(id string) (groupBackend, error)
	// loadGroup returns the existing cgroup of id, or an error wrapping
	// os.ErrNotExist.
	loadGroup(id string) (groupBackend, error)
	// listGroups names the instance cgroups that exist in the Manager's
	// own cgroup.
	listGroups() ([]string, error)
	// removeCgroup removes the cgroup p (an absolute cgroup path) in every
	// hierarchy where it exists; the kernel refuses while it holds a
	// process or a cgroup.
	removeCgroup(p string) error
}

// groupBackend is one instance's cgroup in one layout.
type groupBackend interface {
	path() string
	setLimit(resource string, l Limits) error
	start(cmd *exec.Cmd, start func() error) error
	usage() (Usage, error)
	// procs lists the processes in the cgroup and below it.
	procs() ([]uint64, error)
	kill(timeout time.Duration) error
	remove() error
}

// Manager creates and cleans the cgroups of plugin instances.
type Manager struct {
	log    hclog.Logger
	b      backend // nil in mode "none"
	reason string
	parent string // e.g. "/plughost"
	own    string // the Manager's own cgroup, e.g. "/plughost/agent-n1-1f2e3d4c"
	// closeWithGroup: Standalone's Manager, closed when its one group is
	// deleted.
	closeWithGroup bool

	mu     sync.Mutex
	live   map[string]*Group // groups made by this Manager and not deleted
	closed bool
}

// NewManager detects the cgroup layout (v1 and which controllers are
// mounted, v2 and which controllers its own cgroup may use, or none) and
// creates the parent cgroup and the Manager's own cgroup in it. It fails
// only on an invalid Config: where cgroups cannot be had it returns a
// Manager in mode "none" whose Reason says why.
func NewManager(cfg Config) (*Manager, error) {
	parent, own, err := cfg.ownPath()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	m := &Manager{log: log, parent: parent, own: own, live: make(map[string]*Group)}
	if cfg.Disabled {
		m.reason = "resource governance is disabled by configuration"
	} else {
		m.b, m.reason = detect(cfg.Root, own, log)
	}
	if m.b != nil {
		m.reason = m.b.reason()
	}
	if m.reason != "" {
		log.Warn("resource limits are not fully enforced", "mode", m.Mode(), "reason", m.reason)
	} else {
		log.Debug("resource governance ready", "mode", m.Mode(), "cgroup", own)
	}
	return m, nil
}

// Mode returns "cgroup v1", "cgroup v2" or "none".
func (m *Manager) Mode() string {
	if m.b == nil {
		return ModeNone
	}
	return m.b.mode()
}

// Reason says why governance is not (fully) enforced; "" if it is.
func (m *Manager) Reason() string { return m.reason }

// CleanStale removes every cgroup in the Manager's own cgroup
// <Parent>/<Group> that this Manager did not make: cgroups left behind by an
// earlier run of the same agent that crashed. It SIGKILLs their processes,
// waits (bounded) until they are gone, and removes the cgroups. It returns
// the cgroups it removed; an error names those it could not. Call it at
// agent start, before the first New. Nothing outside <Parent>/<Group> is
// touched: other agents' cgroups beside it are not stale.
func (m *Manager) CleanStale() ([]string, error) {
	if m.b == nil {
		return nil, nil
	}
	ids, err := m.b.listGroups()
	if err != nil {
		return nil, fmt.Errorf("governance: listing stale cgroups: %w", err)
	}
	var cleaned []string
	var errs []error
	for _, id := range ids {
		m.mu.Lock()
		_, live := m.live[id]
		m.mu.Unlock()
		if live {
			continue
		}
		gb, err := m.b.loadGroup(id)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil {
			err = destroy(gb)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("governance: cleaning stale cgroup %s: %w", m.b.groupDir(id), err))
			continue
		}
		m.log.Info("removed stale cgroup left by an earlier run", "cgroup", gb.path())
		cleaned = append(cleaned, gb.path())
	}
	return cleaned, errors.Join(errs...)
}

// Close removes what the Manager made: it deletes its groups (after the
// agent stopped its plugins, that kills only what they left running) and
// any stale cgroup in its own cgroup <Parent>/<Group>, removes
// <Parent>/<Group>, and then removes Parent too if nothing else is in it:
// the kernel refuses to remove a cgroup that holds another Manager's, so a
// sibling is never disturbed. After Close, New fails with ErrClosed.
// Closing a closed Manager finds nothing more to do.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	live := make([]*Group, 0, len(m.live))
	for _, g := range m.live {
		live = append(live, g)
	}
	m.mu.Unlock()
	var errs []error
	for _, g := range live {
		errs = append(errs, g.Delete())
	}
	if m.b == nil {
		return errors.Join(errs...)
	}
	if _, err := m.CleanStale(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := m.b.removeCgroup(m.own); err != nil {
		return fmt.Errorf("governance: removing cgroup %s: %w", m.own, err)
	}
	if m.parent != m.own {
		if err := m.b.removeCgroup(m.parent); err == nil {
			m.log.Debug("removed the empty cgroup parent", "cgroup", m.parent)
		}
	}
	return nil
}

// destroy kills everything in gb and removes it.
func destroy(gb groupBackend) error {
	if err := gb.kill(killTimeout); err != nil {
		return err
	}
	return gb.remove()
}

// New makes the cgroup <Parent>/<Group>/<instanceID> with limits l. Where a limit
// cannot be enforced the group is still made and Enforcement says why; where
// no cgroup can be made at all, Start still starts the process. A cgroup of
// the same name left by an earlier run is killed and replaced.
func (m *Manager) New(instanceID string, l Limits) (*Group, error) {
	if err := validInstanceID(instanceID); err != nil {
		return nil, err
	}
	if err := l.Validate(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if _, ok := m.live[instanceID]; ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrGroupExists, instanceID)
	}
	g := &Group{m: m, id: instanceID, log: m.log.With("instance", instanceID)}
	m.live[instanceID] = g
	m.mu.Unlock()

	if m.b == nil {
		g.status = statuses(l, func(string) string { return m.reason })
		g.warnUnenforced()
		return g, nil
	}
	if old, err := m.b.loadGroup(instanceID); err == nil {
		g.log.Warn("replacing a cgroup left by an earlier run", "cgroup", old.path())
		if err := destroy(old); err != nil {
			g.log.Error("could not remove the earlier cgroup", "cgroup", old.path(), "error", err)
		}
	}
	gb, err := m.b.newGroup(instanceID)
	if err != nil {
		why := fmt.Sprintf("could not create cgroup %s: %v", m.b.groupDir(instanceID), err)
		g.status = statuses(l, func(string) string { return why })
		g.warnUnenforced()
		return g, nil
	}
	g.b = gb
	g.status = statuses(l, func(res string) string {
		if why := m.b.unavailable(res); why != "" {
			return why
		}
		if err := gb.setLimit(res, l); err != nil {
			return fmt.Sprintf("could not set the %s limit in %s: %v", res, m.b.groupDir(instanceID), err)
		}
		return ""
	})
	g.warnUnenforced()
	return g, nil
}

// warnUnenforced logs, for the instance, each limit that is set but not
// enforced, and why: never silent, whatever the mode.
func (g *Group) warnUnenforced() {
	for _, s := range g.status {
		if !s.Enforced && s.Reason != reasonNoLimit {
			g.log.Warn("resource limit not enforced", "resource", s.Resource, "limit", s.Limit, "reason", s.Reason)
		}
	}
}

func (m *Manager) forget(g *Group) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.live[g.id] == g {
		delete(m.live, g.id)
	}
}

// validInstanceID accepts IDs that are a single, ordinary directory name.
func validInstanceID(id string) error {
	switch {
	case id == "" || id == "." || id == "..":
		return fmt.Errorf("%w: %q", ErrInvalidInstanceID, id)
	case len(id) > 200:
		return fmt.Errorf("%w: %d bytes is longer than 200", ErrInvalidInstanceID, len(id))
	case strings.ContainsAny(id, "/\x00\n"):
		return fmt.Errorf("%w: %q contains '/', a newline or NUL", ErrInvalidInstanceID, id)
	}
	return nil
}

// standaloneSeq numbers Standalone's groups within a process.
var standaloneSeq atomic.Int64

// Standalone makes a group for one process started outside an agent, with
// limits l, in a cgroup of its own under parent,
// <parent>/standalone-<pid>-<n>/process, apart from any agent's: bench
// call's direct baseline runs under the limits its agent gives the plugin,
// so that the two paths it compares differ only in the routing. Where
// cgroups cannot be used the group enforces nothing and says why in
// Enforcement. Delete the group when the process is done: that removes its
// cgroups, and parent once it is empty.
func Standalone(parent string, l Limits) (*Group, error) {
	group := fmt.Sprintf("standalone-%d-%d", os.Getpid(), standaloneSeq.Add(1))
	m, err := NewManager(Config{Parent: parent, Group: group})
	if err != nil {
		return nil, err
	}
	m.closeWithGroup = true
	g, err := m.New("process", l)
	if err != nil {
		return nil, errors.Join(err, m.Close())
	}
	return g, nil
}
