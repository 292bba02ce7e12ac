package agent

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	hclog "github.com/hashicorp/go-hclog"
)

// Modes of the data dir and what holds the cluster's data or secrets in
// it: the store (raft log, snapshots), the gossip keyring and serf's
// files, and the files at the top (tokens, records).
const (
	privateDirMode  os.FileMode = 0o700
	privateFileMode os.FileMode = 0o600
)

// privateTrees are the directories of the data dir made private whole.
var privateTrees = []string{"store", "serf"}

// secureDataDir makes the data dir the agent's alone, whatever wrote it and
// under whatever umask: the data dir and every directory in store/ and
// serf/ 0700; the files in those and at the top of the data dir 0600. It
// fixes what it finds otherwise, with a warning naming each path and its
// mode before. Symbolic links are left alone (a chmod would follow them).
// The rest of the data dir (bundles, plugins) is closed by the data dir's
// own mode.
func secureDataDir(dataDir string, log hclog.Logger) error {
	fix := func(path string, mode, want os.FileMode) error {
		if mode.Perm() == want {
			return nil
		}
		if err := os.Chmod(path, want); err != nil {
			return fmt.Errorf("agent: making %s private: %w", path, err)
		}
		log.Warn("data dir path was open to other users; made it private", "path", path,
			"mode_was", fmt.Sprintf("%#o", mode.Perm()), "mode", fmt.Sprintf("%#o", want))
		return nil
	}
	fi, err := os.Stat(dataDir)
	if err != nil {
		return fmt.Errorf("agent: data dir: %w", err)
	}
	if err := fix(dataDir, fi.Mode(), privateDirMode); err != nil {
		return err
	}
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		return fmt.Errorf("agent: data dir: %w", err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // gone meanwhile
		}
		if err := fix(filepath.Join(dataDir, e.Name()), info.Mode(), privateFileMode); err != nil {
			return err
		}
	}
	for _, tree := range privateTrees {
		root := filepath.Join(dataDir, tree)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) && path == root {
					return nil // a new data dir
				}
				return err
			}
			want := privateFileMode
			switch {
			case d.IsDir():
				want = privateDirMode
			case !d.Type().IsRegular():
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			return fix(path, info.Mode(), want)
		})
		if err != nil {
			return fmt.Errorf("agent: data dir: %w", err)
		}
	}
	return nil
}
