package bundle

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRefuse(t *testing.T) {
	drop := t.TempDir()
	refused := filepath.Join(t.TempDir(), "refused")
	reason := newError("echo-1.2.0.tar.gz", ErrDigestMismatch, `executable "echo" has sha256 x but plugin.json says y`)

	var moved []string
	for i := 0; i < 3; i++ {
		p := writeFile(t, drop, "echo-1.2.0.tar.gz", []byte(fmt.Sprint("bundle ", i)))
		before := time.Now().UTC().Truncate(time.Second)
		dst, err := Refuse(p, refused, reason)
		if err != nil {
			t.Fatal(err)
		}
		moved = append(moved, dst)
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still in the drop folder", p)
		}
		data, err := os.ReadFile(dst)
		if err != nil || string(data) != fmt.Sprint("bundle ", i) {
			t.Errorf("%s holds %q, %v", dst, data, err)
		}
		text, err := os.ReadFile(dst + ".reason.txt")
		if err != nil {
			t.Fatal(err)
		}
		checkReason(t, string(text), p, reason.Error(), before)
	}
	want := []string{"echo-1.2.0.tar.gz", "echo-1.2.0.tar.gz.1", "echo-1.2.0.tar.gz.2"}
	for i, dst := range moved {
		if dst != filepath.Join(refused, want[i]) {
			t.Errorf("refusal %d moved to %s, want %s", i, dst, want[i])
		}
	}
}

func checkReason(t *testing.T, text, src, reason string, before time.Time) {
	t.Helper()
	fields := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("reason file line %q", line)
		}
		fields[k] = v
	}
	if fields["reason"] != reason || fields["refused"] != filepath.Base(src) || fields["from"] != src {
		t.Errorf("reason file:\n%s", text)
	}
	at, err := time.Parse(time.RFC3339, fields["time"])
	if err != nil || at.Before(before) || at.After(time.Now().Add(time.Second)) {
		t.Errorf("reason file time %q (%v)", fields["time"], err)
	}
}

func TestRefuseDirectory(t *testing.T) {
	dir := makeDir(t, "echo", goodEntries(t, nil))
	refused := t.TempDir()
	// A stale reason file alone also takes the name.
	writeFile(t, refused, "echo.reason.txt", []byte("old"))
	dst, err := Refuse(dir, refused, errors.New("bad"))
	if err != nil {
		t.Fatal(err)
	}
	if dst != filepath.Join(refused, "echo.1") {
		t.Errorf("moved to %s", dst)
	}
	if _, err := os.Stat(filepath.Join(dst, ManifestFile)); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there", dir)
	}
	text, _ := os.ReadFile(dst + ".reason.txt")
	if !strings.Contains(string(text), "reason: bad\n") {
		t.Errorf("reason file:\n%s", text)
	}
}

func TestRefuseErrors(t *testing.T) {
	refused := t.TempDir()
	if _, err := Refuse(filepath.Join(t.TempDir(), "missing.tar.gz"), refused, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing bundle: %v", err)
	}
	if left, _ := os.ReadDir(refused); len(left) != 0 {
		t.Errorf("refusing a missing bundle left %v", left)
	}
}

func TestRefuseNoReason(t *testing.T) {
	p := writeFile(t, t.TempDir(), "x.tar.gz", []byte("x"))
	dst, err := Refuse(p, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := os.ReadFile(dst + ".reason.txt")
	if !strings.Contains(string(text), "reason: no reason given\n") {
		t.Errorf("reason file:\n%s", text)
	}
}

// TestRefuseAcrossFileSystems moves a bundle from /dev/shm, which is often
// another file system than the test's temporary directory.
func TestRefuseAcrossFileSystems(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "plughost-refuse-*")
	if err != nil {
		t.Skip("no /dev/shm:", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	refused := t.TempDir()
	var a, b syscall.Stat_t
	if syscall.Stat(shm, &a) != nil || syscall.Stat(refused, &b) != nil || a.Dev == b.Dev {
		t.Skip("/dev/shm is on the same file system as", refused)
	}

	p := writeFile(t, shm, "echo-1.2.0.tar.gz", []byte("bundle"))
	dst, err := Refuse(p, refused, errors.New("bad"))
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(dst); err != nil || string(data) != "bundle" {
		t.Errorf("moved bundle holds %q, %v", data, err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there", p)
	}

	dir := filepath.Join(shm, "echo")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Refuse(dir, refused, errors.New("bad"))
	if err == nil || !strings.Contains(err.Error(), "put the refused folder on the same file system as the bundle") {
		t.Errorf("directory across file systems: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(refused, "echo.reason.txt")); len(left) != 0 {
		t.Errorf("failed refusal left %v", left)
	}
}
