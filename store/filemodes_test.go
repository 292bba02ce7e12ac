package store

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestStoreFilesArePrivate: whatever the umask, the raft log (either
// store), its snapshots and every directory of the store are the agent's
// alone (files 0600, directories 0700), and a user other than the agent's
// cannot read a snapshot or the log even when the directories around the
// data dir let it in.
func TestStoreFilesArePrivate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reading as another user needs root")
	}
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	for _, kind := range []string{LogStoreWAL, LogStoreBoltDB} {
		t.Run(kind, func(t *testing.T) {
			root := t.TempDir()
			for _, d := range []string{filepath.Dir(root), root} {
				if err := os.Chmod(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			cfg := diskConfig(filepath.Join(root, "store"))
			cfg.LogStore = kind
			s := openDisk(t, cfg)
			defer s.Close()
			for i := range 50 {
				put(t, s, "secret", "k"+string(rune('a'+i%26)), "the value")
			}
			if err := s.Snapshot(); err != nil {
				t.Fatal(err)
			}
			put(t, s, "secret", "after", "the snapshot")

			var snapshot, logFile string
			err := filepath.WalkDir(cfg.Dir, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				fi, err := d.Info()
				if err != nil {
					return err
				}
				want := privateFileMode
				if d.IsDir() {
					want = privateDirMode
				}
				if fi.Mode().Perm() != want {
					t.Errorf("%s is %v, want %v", path, fi.Mode().Perm(), want)
				}
				switch {
				case d.Name() == "state.bin":
					snapshot = path
				case strings.HasSuffix(d.Name(), ".wal") || d.Name() == "raft.db":
					logFile = path
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if snapshot == "" || logFile == "" {
				t.Fatalf("no snapshot (%q) or log file (%q) under %s", snapshot, logFile, cfg.Dir)
			}
			for _, f := range []string{snapshot, logFile} {
				cmd := exec.Command("cat", f)
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
				out, err := cmd.CombinedOutput()
				if err == nil || !strings.Contains(string(out), "Permission denied") {
					t.Errorf("uid 65534 reading %s: %v, %q; want permission denied", f, err, out)
				}
			}
		})
	}
}
