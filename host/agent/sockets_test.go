package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPrivateDir: the socket base is taken only as a directory of this
// user's that no one else may write in; what another user made first at
// that path is refused, not used.
func TestPrivateDir(t *testing.T) {
	base := t.TempDir()
	fresh := filepath.Join(base, "fresh")
	if _, err := privateDir(fresh); err != nil {
		t.Fatalf("a new dir: %v", err)
	}
	if _, err := privateDir(fresh); err != nil {
		t.Fatalf("the same dir again: %v", err)
	}

	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := privateDir(open); err == nil {
		t.Error("a dir anyone may write in was taken")
	}

	link := filepath.Join(base, "link")
	if err := os.Symlink(fresh, link); err != nil {
		t.Fatal(err)
	}
	if _, err := privateDir(link); err == nil {
		t.Error("a symlink was taken")
	}

	if os.Geteuid() == 0 {
		theirs := filepath.Join(base, "theirs")
		if err := os.Mkdir(theirs, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(theirs, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := privateDir(theirs); err == nil {
			t.Error("another user's dir was taken")
		}
	}
}
