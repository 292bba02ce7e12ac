package sandbox

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// enter drops what a plugin must not have, on this thread, and executes the
// plugin from exeFD: args are uid, gid (-1: keep the agent's), the agent's
// pid and the plugin's argv[0].
//
// Credentials are changed with raw per-thread system calls, and exec is
// called from the same thread (its credentials are what the new program
// gets): Go's own Setuid changes every thread, which fails where cgo is in.
func enter(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("want uid, gid, agent pid and name, got %q", args)
	}
	uid, err1 := strconv.Atoi(args[0])
	gid, err2 := strconv.Atoi(args[1])
	agent, err3 := strconv.Atoi(args[2])
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("arguments %q: %w", args, err)
	}
	runtime.LockOSThread() // never unlocked: the thread execs or the process exits

	// The plugin reads nothing of the agent's stdin.
	null, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/null: %w", err)
	}
	if null != 0 {
		if err := unix.Dup3(null, 0, 0); err != nil {
			return fmt.Errorf("stdin: %w", err)
		}
		unix.Close(null)
	}

	if uid >= 0 {
		if err := dropBounding(); err != nil {
			return err
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
			return fmt.Errorf("setgroups: %w", e)
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
			return fmt.Errorf("setresgid %d: %w", gid, e)
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			return fmt.Errorf("setresuid %d: %w", uid, e)
		}
	}
	// Ambient and inheritable capabilities would survive an exec.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("clearing ambient capabilities: %w", err)
	}
	if uid >= 0 {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var none [2]unix.CapUserData
		if err := unix.Capset(&hdr, &none[0]); err != nil {
			return fmt.Errorf("clearing capabilities: %w", err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	// A change of uid clears the parent-death signal: arm it again, then
	// make sure the agent did not die before it was armed.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0); err != nil {
		return fmt.Errorf("parent-death signal: %w", err)
	}
	if unix.Getppid() != agent {
		return errors.New("the agent is gone")
	}
	if uid >= 0 {
		if err := checkDropped(uid, gid); err != nil {
			return err
		}
	}
	// A script needs its descriptor after exec: its interpreter opens
	// /proc/self/fd/3. A binary does not, and the plugin gets no more
	// descriptors than it needs.
	var magic [2]byte
	if n, _ := unix.Pread(exeFD, magic[:], 0); n != 2 || string(magic[:]) != "#!" {
		if _, err := unix.FcntlInt(uintptr(exeFD), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			return fmt.Errorf("executable descriptor: %w", err)
		}
	}
	path := "/proc/self/fd/" + strconv.Itoa(exeFD)
	err = unix.Exec(path, []string{args[3]}, os.Environ())
	return fmt.Errorf("executing the plugin: %w", err)
}

// dropBounding empties the capability bounding set of this thread.
func dropBounding() error {
	last := 63
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("dropping capability %d from the bounding set: %w", c, err)
		}
	}
	return nil
}

// checkDropped makes sure the thread holds uid and gid only, and cannot
// become root again.
func checkDropped(uid, gid int) error {
	r, e, s := unix.Getresuid()
	if r != uid || e != uid || s != uid {
		return fmt.Errorf("uid is %d/%d/%d, not %d", r, e, s, uid)
	}
	r, e, s = unix.Getresgid()
	if r != gid || e != gid || s != gid {
		return fmt.Errorf("gid is %d/%d/%d, not %d", r, e, s, gid)
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, 0, 0, 0); errno == 0 {
		return errors.New("the plugin could become root again")
	}
	return nil
}
