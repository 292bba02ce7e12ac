//go:build !linux

package governance

// parentDirs: without Linux there are no cgroup directories.
func parentDirs(*Manager) []string { return nil }

func cleanAbandoned() {}
