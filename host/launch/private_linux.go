package launch

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// memfdNameMax is the longest name memfd_create takes.
const memfdNameMax = 249

// openChecked copies spec's executable into a sealed memory file while it
// hashes it, and returns that copy, read-only, once the digest matches:
// the sandbox executes exactly what was checked, whatever happens to the
// file on disk afterwards and whatever its mode (an installed executable
// is its owner's alone: 0500 in a 0700 dir, which a plugin's user could
// not execute). The copy lives as long as the process that runs it.
func openChecked(what string, spec Spec, sum []byte) (*os.File, error) {
	f, err := os.Open(spec.Executable)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	// Named after the file it copies: /proc/<pid>/exe of the plugin reads
	// "/memfd:<path> (deleted)".
	name := spec.Executable
	if len(name) > memfdNameMax {
		name = name[len(name)-memfdNameMax:]
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("%s: a private copy of the executable: %w", what, err)
	}
	mem := os.NewFile(uintptr(fd), spec.Executable)
	defer mem.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(mem, h), f); err != nil {
		return nil, fmt.Errorf("%s: reading %s: %w", what, spec.Executable, err)
	}
	if !bytes.Equal(h.Sum(nil), sum) {
		return nil, fmt.Errorf("%s: %s does not match the manifest's sha256 %s: %w (re-add the bundle)", what, spec.Executable, spec.SHA256, ErrChecksum)
	}
	if err := seal(fd); err != nil {
		return nil, fmt.Errorf("%s: sealing the private copy: %w", what, err)
	}
	if err := unix.Fchmod(fd, 0o555); err != nil {
		return nil, fmt.Errorf("%s: private copy: %w", what, err)
	}
	// A file open for writing cannot be executed (ETXTBSY): hand on a
	// read-only descriptor of the copy.
	ro, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: private copy: %w", what, err)
	}
	return os.NewFile(uintptr(ro), spec.Executable), nil
}

// Sealing against writes fails with EBUSY while a page of the copy still
// has a reference the kernel has not let go of (a per-CPU LRU batch of
// another CPU holds one for a moment after the write): seal tries again,
// sealTries times at most, sealPause apart.
const (
	sealTries = 50
	sealPause = 10 * time.Millisecond
)

// seal seals fd, a memory file, against every change.
func seal(fd int) error {
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	var err error
	for range sealTries {
		if _, err = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); !errors.Is(err, unix.EBUSY) {
			return err
		}
		time.Sleep(sealPause)
	}
	return err
}
