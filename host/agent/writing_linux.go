package agent

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// openForWrite reports whether some process holds the regular file at path
// open for writing. Linux refuses a read lease on such a file with EAGAIN;
// the lease is let go at once, so a writer opening the file meanwhile waits
// no longer than that. ok is false when it cannot be told: the agent neither
// owns the file nor has CAP_LEASE, or the file system has no leases.
func openForWrite(path string) (busy, ok bool) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false, false
	}
	defer f.Close()
	sc, err := f.SyscallConn()
	if err != nil {
		return false, false
	}
	var lerr error
	if err := sc.Control(func(fd uintptr) {
		if _, lerr = unix.FcntlInt(fd, unix.F_SETLEASE, unix.F_RDLCK); lerr == nil {
			_, _ = unix.FcntlInt(fd, unix.F_SETLEASE, unix.F_UNLCK)
		}
	}); err != nil {
		return false, false
	}
	switch {
	case lerr == nil:
		return false, true
	case errors.Is(lerr, unix.EAGAIN):
		return true, true
	}
	return false, false
}
