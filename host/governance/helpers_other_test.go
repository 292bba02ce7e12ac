//go:build !linux

package governance

// cgroupDirs: without Linux there are no cgroup directories.
func cgroupDirs(*Manager, string) []string { return nil }

func cleanAbandoned() {}
