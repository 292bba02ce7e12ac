package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	hclog "github.com/hashicorp/go-hclog"
)

// TestSecureDataDir: a data dir left open (0755 directories, 0644 files)
// is made private at start, with a warning naming each path fixed; a
// second start finds nothing to fix; symbolic links are not followed.
func TestSecureDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dirs := []string{"", "store", "store/snapshots", "store/snapshots/1-2-3", "store/wal", "serf", "bundles"}
	files := []string{"store/wal/wal-meta.db", "store/snapshots/1-2-3/state.bin", "serf/keyring", "cgroup.json", "bundles/echo.tar.gz"}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Whatever the umask made of them.
	for _, p := range dirs {
		if err := os.Chmod(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range files {
		if err := os.Chmod(filepath.Join(dir, p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(dir, "store", "link")); err != nil {
		t.Fatal(err)
	}

	var log bytes.Buffer
	if err := secureDataDir(dir, hclog.New(&hclog.LoggerOptions{Output: &log})); err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{
		"": 0o700, "store": 0o700, "store/snapshots": 0o700, "store/snapshots/1-2-3": 0o700, "store/wal": 0o700, "serf": 0o700,
		"store/wal/wal-meta.db": 0o600, "store/snapshots/1-2-3/state.bin": 0o600, "serf/keyring": 0o600, "cgroup.json": 0o600,
		// Closed by the data dir's mode, and not the agent's to change.
		"bundles": 0o755, "bundles/echo.tar.gz": 0o644,
	}
	for p, mode := range want {
		path := filepath.Join(dir, p)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s is %#o, want %#o", path, fi.Mode().Perm(), mode)
		}
		if fixed := strings.Contains(log.String(), "path="+path+" "); fixed != (mode&0o077 == 0) {
			t.Errorf("%s fixed %v, warned %v:\n%s", path, mode&0o077 == 0, fixed, log.String())
		}
	}
	if fi, _ := os.Stat(outside); fi.Mode().Perm() != 0o644 {
		t.Errorf("a symbolic link in the store was followed: %s is %#o", outside, fi.Mode().Perm())
	}
	if !strings.Contains(log.String(), "[WARN]") || !strings.Contains(log.String(), "mode_was=0644") {
		t.Errorf("no warning with the mode before:\n%s", log.String())
	}

	log.Reset()
	if err := secureDataDir(dir, hclog.New(&hclog.LoggerOptions{Output: &log})); err != nil || log.Len() > 0 {
		t.Fatalf("second start: %v, logged:\n%s", err, log.String())
	}
}
