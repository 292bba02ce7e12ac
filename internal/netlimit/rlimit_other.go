//go:build !unix

package netlimit

// FileLimit is the process's limit on open file descriptors, if known.
func FileLimit() (uint64, bool) { return 0, false }
