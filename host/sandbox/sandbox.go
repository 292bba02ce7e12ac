// Package sandbox runs plugin processes as unprivileged users: each plugin
// gets a uid of its own (or the configured plugin_user), no capabilities,
// no supplementary groups, no_new_privs, a clean environment and a working
// directory of its own, and says plainly which of these it could not have.
//
// The agent starts a plugin through a trampoline: its own binary run again
// under a hidden name (see Init), which drops what the plugin must not have
// and then executes the plugin from a file descriptor the agent opened and
// hashed, so the process keeps its pid, its cgroup and go-plugin's
// handshake on stdout. Binaries that start plugins call Init first thing in
// main, and test binaries in TestMain.
//
// Call order:
//
//	sb, err := sandbox.New(cfg)       // once per agent
//	p, err := sb.Prepare("echo")      // per plugin instance (or sb.PrepareProbe())
//	cmd := p.Command(exe)             // exe: the executable, opened by the agent
//	err = p.Own(socketDir)            // directories the agent made for the process
//	parts := p.Status(cgroup, why)    // what is enforced, for plugin status
//	p.Release()                       // a probe's working dir goes
//	sb.Close()                        // when the agent stops
package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/moby/sys/reexec"
	"golang.org/x/sys/unix"
)

// DefaultUIDRange is where dynamic plugin uids come from by default: the
// 65536 uids from 0x70000000, which no common allocator hands out. Not
// systemd's DynamicUser= pool (61184-65519), which systemd fills without
// knowing plughost's uids; not the /etc/subuid container ranges useradd
// gives (blocks of 65536 from 100000 up to 600100000); not systemd's
// container ranges (524288-1879048191); not nobody (65534); and below
// 2^31, where some tools misbehave.
const DefaultUIDRange = "1879048192-1879113727"

// DefaultSubIDFiles are the files whose subordinate id ranges (given to
// users for their containers) no plugin gets a uid from.
var DefaultSubIDFiles = []string{"/etc/subuid", "/etc/subgid"}

// DefaultDynamicUIDDir is where systemd keeps an entry per uid it gave a
// DynamicUser= service: a lock file named by the number, and a symlink
// "direct:<uid>".
const DefaultDynamicUIDDir = "/run/systemd/dynamic-uid"

// Parts of the sandbox that Status reports on.
const (
	PartUser         = "user"
	PartCapabilities = "capabilities"
	PartNoNewPrivs   = "no_new_privs"
	PartFiles        = "files"
	PartAgent        = "agent"
	PartCgroup       = "cgroup"
)

// ErrInvalidConfig: the uid range or plugin user cannot be used.
var ErrInvalidConfig = errors.New("sandbox: invalid config")

// Config configures a Sandbox.
type Config struct {
	// User, when set, is the user every plugin runs as (plugin_user): a
	// name or a numeric uid, with its primary group. Plugins then share
	// a uid and can signal and read one another.
	User string
	// UIDRange is "LOW-HIGH", the uids (each also the gid) given to
	// plugins one per plugin name when User is empty. Default
	// DefaultUIDRange.
	UIDRange string
	// Identity names the agent (node and data dir): a plugin's uid is
	// derived from it and the plugin's name, so it is the same at every
	// restart of the plugin, and two agents on one machine mostly differ.
	Identity string
	// WorkDir is the directory in which each plugin gets its working dir.
	// The Sandbox makes it, root's, mode 0711 (plugins may pass through,
	// not list it), and empties it: nothing of an earlier run stays.
	WorkDir string
	// LockDir holds a lock file per dynamic uid in use, shared by the
	// agents on a machine so that two never give one uid to their
	// plugins. "" locks only within this agent.
	LockDir string
	// SubIDFiles are /etc/subuid-style files ("user:start:count" lines):
	// no plugin gets a uid inside one of their ranges. nil means
	// DefaultSubIDFiles; a file that does not exist is skipped.
	SubIDFiles []string
	// DynamicUIDDir is where systemd records the DynamicUser= uids it
	// gave: no plugin gets one named there. "" means
	// DefaultDynamicUIDDir.
	DynamicUIDDir string
	// DataDir is the agent's data dir, which plugins must not read.
	DataDir string
	Logger  hclog.Logger
}

// Part says whether one part of the sandbox holds for a process.
type Part struct {
	Part     string // one of the Part* names
	Setting  string // what the process gets, in words
	Enforced bool
	Reason   string // why Enforced is false
}

// Sandbox gives plugin processes their users and directories.
type Sandbox struct {
	cfg      Config
	log      hclog.Logger
	lo, hi   uint32
	fixed    *cred // plugin_user
	asRoot   bool  // the agent is root: processes can get another uid
	agentUID int

	mu     sync.Mutex
	byName map[string]uint32
	byUID  map[uint32]string
	locks  map[uint32]*os.File
	probes int
}

type cred struct {
	uid, gid uint32
	name     string
}

// New validates cfg, resolves plugin_user and makes the working dir root.
func New(cfg Config) (*Sandbox, error) {
	if cfg.UIDRange == "" {
		cfg.UIDRange = DefaultUIDRange
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.SubIDFiles == nil {
		cfg.SubIDFiles = DefaultSubIDFiles
	}
	if cfg.DynamicUIDDir == "" {
		cfg.DynamicUIDDir = DefaultDynamicUIDDir
	}
	lo, hi, err := ParseUIDRange(cfg.UIDRange)
	if err != nil {
		return nil, err
	}
	s := &Sandbox{cfg: cfg, log: cfg.Logger, lo: lo, hi: hi, asRoot: os.Geteuid() == 0, agentUID: os.Geteuid(),
		byName: map[string]uint32{}, byUID: map[uint32]string{}, locks: map[uint32]*os.File{}}
	if cfg.User != "" {
		if s.fixed, err = lookupUser(cfg.User); err != nil {
			return nil, err
		}
	}
	if cfg.WorkDir == "" {
		return nil, fmt.Errorf("%w: no working dir root", ErrInvalidConfig)
	}
	if err := os.RemoveAll(cfg.WorkDir); err != nil {
		return nil, fmt.Errorf("sandbox: emptying %s: %w", cfg.WorkDir, err)
	}
	if err := os.Mkdir(cfg.WorkDir, 0o711); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if err := os.Chmod(cfg.WorkDir, 0o711); err != nil { // past the umask
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if cfg.LockDir != "" {
		if err := os.MkdirAll(cfg.LockDir, 0o700); err != nil {
			return nil, fmt.Errorf("sandbox: uid lock dir: %w", err)
		}
	}
	return s, nil
}

// ParseUIDRange parses "LOW-HIGH" (inclusive), which must not include 0.
func ParseUIDRange(r string) (lo, hi uint32, err error) {
	a, b, ok := strings.Cut(r, "-")
	l, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 32)
	h, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 32)
	switch {
	case !ok || err1 != nil || err2 != nil:
		return 0, 0, fmt.Errorf("%w: plugin_uid_range %q: write LOW-HIGH, e.g. %s", ErrInvalidConfig, r, DefaultUIDRange)
	case l == 0 || h < l:
		return 0, 0, fmt.Errorf("%w: plugin_uid_range %q: LOW must be above 0 and at most HIGH", ErrInvalidConfig, r)
	case h >= 1<<31-1:
		return 0, 0, fmt.Errorf("%w: plugin_uid_range %q: HIGH must be below 2147483647", ErrInvalidConfig, r)
	}
	return uint32(l), uint32(h), nil
}

// lookupUser resolves plugin_user: a name or a numeric uid.
func lookupUser(name string) (*cred, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.ParseUint(name, 10, 32); nerr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: plugin_user %q: %v (create the user, or leave plugin_user empty for a uid per plugin)", ErrInvalidConfig, name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("%w: plugin_user %q has uid %q gid %q", ErrInvalidConfig, name, u.Uid, u.Gid)
	}
	if uid == 0 || gid == 0 {
		return nil, fmt.Errorf("%w: plugin_user %q is root or in root's group: give an unprivileged user", ErrInvalidConfig, name)
	}
	return &cred{uid: uint32(uid), gid: uint32(gid), name: u.Username}, nil
}

// Close releases the uid locks and removes the working dirs.
func (s *Sandbox) Close() error {
	s.mu.Lock()
	for uid, f := range s.locks {
		_ = f.Close()
		_ = os.Remove(f.Name())
		delete(s.locks, uid)
	}
	s.mu.Unlock()
	if s.cfg.LockDir != "" {
		_ = os.Remove(s.cfg.LockDir) // fails, harmlessly, while another agent holds a uid
	}
	return os.RemoveAll(s.cfg.WorkDir)
}

// probeKey is the name under which the bundle probe gets its uid: not a
// plugin name (those cannot hold a space), so a probed bundle never runs
// as the running plugin of the name it claims.
const probeKey = "bundle probe"

// Prepare gives the plugin name its user and working dir
// (<WorkDir>/<name>, kept across the plugin's restarts).
func (s *Sandbox) Prepare(name string) (*Process, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, fmt.Errorf("sandbox: plugin name %q cannot name a directory", name)
	}
	return s.prepare(name, filepath.Join(s.cfg.WorkDir, name), false)
}

// PrepareProbe gives the bundle probe a user of its own (never a plugin's)
// and a fresh working dir that Release removes.
func (s *Sandbox) PrepareProbe() (*Process, error) {
	s.mu.Lock()
	s.probes++
	n := s.probes
	s.mu.Unlock()
	return s.prepare(probeKey, filepath.Join(s.cfg.WorkDir, fmt.Sprintf(".probe-%d", n)), true)
}

func (s *Sandbox) prepare(key, dir string, temporary bool) (*Process, error) {
	p := &Process{sb: s, dir: dir, temporary: temporary, uid: -1, gid: -1}
	switch {
	case !s.asRoot:
		p.userWhy = fmt.Sprintf("the agent runs as uid %d, not root: plugins run as the agent's user (run the agent as root to give each plugin a uid of its own)", s.agentUID)
	case s.fixed != nil:
		p.uid, p.gid = int(s.fixed.uid), int(s.fixed.gid)
		p.userSetting = fmt.Sprintf("plugin_user %s (uid %d, gid %d), shared by every plugin: they can signal and read one another", s.fixed.name, s.fixed.uid, s.fixed.gid)
	default:
		uid, err := s.allocate(key)
		if err != nil {
			return nil, err
		}
		p.uid, p.gid = int(uid), int(uid)
		p.userSetting = fmt.Sprintf("dynamic uid %d gid %d (plugin_uid_range %s)", uid, uid, s.cfg.UIDRange)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !os.IsExist(err) {
		return nil, fmt.Errorf("sandbox: working dir: %w", err)
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil && !os.IsExist(err) {
		return nil, fmt.Errorf("sandbox: working dir: %w", err)
	}
	for _, d := range []string{dir, tmp} {
		if err := p.Own(d); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Process is how one plugin process is sandboxed.
type Process struct {
	sb          *Sandbox
	dir         string
	temporary   bool
	uid, gid    int // -1: the agent's
	userSetting string
	userWhy     string
}

// UID is the uid the process runs as; -1 when it keeps the agent's.
func (p *Process) UID() int { return p.uid }

// Dir is the process's working directory, also its HOME.
func (p *Process) Dir() string { return p.dir }

// Own gives dir, which the agent made for the process, to the process's
// user (the directory itself, not what is in it).
func (p *Process) Own(dir string) error {
	if p.uid < 0 {
		return nil
	}
	if err := os.Lchown(dir, p.uid, p.gid); err != nil {
		return fmt.Errorf("sandbox: giving %s to uid %d: %w", dir, p.uid, err)
	}
	return nil
}

// Release removes a probe's working dir; a plugin's stays for its next
// start.
func (p *Process) Release() {
	if p.temporary {
		_ = os.RemoveAll(p.dir)
	}
}

// Path is what PATH holds for a plugin.
const Path = "/usr/local/bin:/usr/bin:/bin"

// trampolineName is the argv[0] under which the agent's binary runs as the
// trampoline.
const trampolineName = "plughost-sandbox-exec"

// exeFD is the descriptor at which the trampoline finds the executable.
const exeFD = 3

// Command returns the command that runs exe, an executable the agent has
// opened (and checked), sandboxed: through the trampoline, in the working
// dir, with an environment of PATH, HOME and TMPDIR only (the caller adds
// what go-plugin needs). exe may be closed once the command started.
// SysProcAttr is left to the caller; the trampoline re-arms its parent-death
// signal (SIGTERM), which the kernel clears when the uid changes.
func (p *Process) Command(exe *os.File) *exec.Cmd {
	name := filepath.Base(exe.Name())
	cmd := &exec.Cmd{
		Path: reexec.Self(),
		Args: []string{trampolineName, strconv.Itoa(p.uid), strconv.Itoa(p.gid), strconv.Itoa(os.Getpid()), name},
		Dir:  p.dir,
		Env: []string{
			"PATH=" + Path,
			"HOME=" + p.dir,
			"TMPDIR=" + filepath.Join(p.dir, "tmp"),
		},
		ExtraFiles: []*os.File{exe},
	}
	return cmd
}

// Status says which parts of the sandbox hold for the process. cgroup is
// the process's cgroup ("" when it has none, noCgroup saying why).
func (p *Process) Status(cgroup, noCgroup string) []Part {
	s := p.sb
	var parts []Part
	add := func(part, setting, why string) {
		parts = append(parts, Part{Part: part, Setting: setting, Enforced: why == "", Reason: why})
	}
	add(PartUser, p.userSetting, p.userWhy)
	if p.uid >= 0 {
		add(PartCapabilities, "none: bounding set empty, no supplementary groups", "")
	} else if eff := capEff(); eff != 0 {
		add(PartCapabilities, "the agent's", fmt.Sprintf("the agent holds capabilities %#x, which its user keeps: run the agent as root to drop them", eff))
	} else {
		add(PartCapabilities, "none: the agent's user has none", "")
	}
	add(PartNoNewPrivs, "set: setuid binaries and file capabilities give nothing", "")
	add(PartFiles, "working dir "+p.dir+" (0700, its own)", p.filesWhy())
	add(PartAgent, "cannot signal the agent or read its memory", p.agentWhy())
	switch {
	case cgroup == "":
		add(PartCgroup, "none", "no cgroup: "+noCgroup)
	case p.uid < 0 && s.agentUID == 0:
		add(PartCgroup, cgroup, "the plugin runs as root and could move itself out")
	case p.uid < 0 && s.agentUID != 0:
		add(PartCgroup, cgroup, fmt.Sprintf("the plugin runs as the agent's uid %d, which may write cgroup files the agent may write", s.agentUID))
	default:
		add(PartCgroup, cgroup+" (its files are root's: the plugin cannot move itself or a child out)", "")
	}
	return parts
}

// filesWhy says why the process may read the agent's files, "" if it
// cannot.
func (p *Process) filesWhy() string {
	if p.uid < 0 {
		return "it runs as the agent's user, which owns the data dir"
	}
	dir := p.sb.cfg.DataDir
	if dir == "" {
		return ""
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return ""
	}
	perm := fi.Mode().Perm()
	open := perm&0o005 != 0
	if st, ok := statOwner(fi); ok && st.gid == uint32(p.gid) {
		open = open || perm&0o050 != 0
	}
	if st, ok := statOwner(fi); ok && st.uid == uint32(p.uid) {
		return fmt.Sprintf("the data dir %s belongs to the plugin's uid %d", dir, p.uid)
	}
	if open {
		return fmt.Sprintf("the data dir %s is mode %#o: other users may read it (chmod 0700 %s)", dir, perm, dir)
	}
	return ""
}

// agentWhy says why the process could signal the agent or read its
// memory, "" if it cannot.
func (p *Process) agentWhy() string {
	if p.uid >= 0 && p.uid != p.sb.agentUID {
		return ""
	}
	why := "it runs as the agent's user and may signal it"
	if ptraceScope() < 1 {
		why += " and read its memory (kernel.yama.ptrace_scope is 0 or absent)"
	} else {
		why += " (kernel.yama.ptrace_scope keeps it from reading the agent's memory)"
	}
	return why
}

// ErrNotKillable: the process's user is not its own alone, so what it
// left cannot be told apart from other processes of that user.
var ErrNotKillable = errors.New("sandbox: the process's user is shared")

// KillAll SIGKILLs every process of the probe's uid until none is left,
// within timeout: what a probe left where no cgroup holds it. Only a
// probe's dynamic uid is its own; for anything else it returns
// ErrNotKillable.
func (p *Process) KillAll(timeout time.Duration) error {
	if !p.temporary || p.uid < 0 || p.sb.fixed != nil || p.uid == p.sb.agentUID {
		return ErrNotKillable
	}
	deadline := time.Now().Add(timeout)
	for {
		left := processesOf(p.uid)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sandbox: uid %d still runs %v after %s", p.uid, left, timeout)
		}
		for _, pid := range left {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
