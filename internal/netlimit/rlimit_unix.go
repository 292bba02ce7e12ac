//go:build unix

package netlimit

import "syscall"

// FileLimit is the process's limit on open file descriptors (its soft
// RLIMIT_NOFILE, which Go raises to the hard limit at start), if known.
func FileLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return uint64(rl.Cur), true
}
