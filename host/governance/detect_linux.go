package governance

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// defaultRoot is where cgroups are mounted on every mainstream distribution.
const defaultRoot = "/sys/fs/cgroup"

// detect chooses the cgroup layout at root ("" = the host's) and prepares
// the cgroup own in it. It returns the backend, or nil and why there is none.
func detect(root, own string, log hclog.Logger) (backend, string) {
	if root == "" {
		switch cgroups.Mode() {
		case cgroups.Unavailable:
			return nil, fmt.Sprintf("no cgroup filesystem is mounted at %s", defaultRoot)
		case cgroups.Unified:
			return prepare(newV2(defaultRoot, own, log))
		case cgroups.Hybrid:
			// v1 holds the controllers; the v2 mount of a hybrid host has
			// only those no v1 hierarchy took, usually none.
			if len(mountedV1(defaultRoot)) == 0 {
				return prepare(newV2(filepath.Join(defaultRoot, "unified"), own, log))
			}
		}
		root = defaultRoot
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return nil, fmt.Sprintf("no cgroup filesystem at %s: %v", root, err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return prepare(newV2(root, own, log))
	}
	if len(mountedV1(root)) == 0 {
		return nil, fmt.Sprintf("%s is neither a cgroup2 mount nor holds cgroup v1 mounts of memory, cpu, cpuacct or pids", root)
	}
	return prepare(newV1(root, own, log))
}

// prepare turns a backend constructor's failure into the reason there is
// no backend.
func prepare(b backend, dir string, err error) (backend, string) {
	if err == nil {
		return b, ""
	}
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EROFS) {
		return nil, fmt.Sprintf("no permission to create cgroup %s: %v (run the agent as root, or give it a delegated cgroup v2 subtree and set Parent inside it)", dir, err)
	}
	return nil, fmt.Sprintf("could not create cgroup %s: %v", dir, err)
}

// isMount reports whether dir is the top of a filesystem of type magic.
func isMount(dir string, magic int64) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && int64(st.Type) == magic
}

// fieldsOf returns the space-separated words of a cgroup file such as
// cgroup.controllers, or nil if it cannot be read.
func fieldsOf(file string) []string {
	b, err := readSmall(file)
	if err != nil {
		return nil
	}
	return strings.Fields(b)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
