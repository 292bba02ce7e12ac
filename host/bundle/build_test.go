package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestBuildOpenRoundTrip(t *testing.T) {
	src := t.TempDir()
	exe := writeExe(t, src, "echo", exeBody)
	m := newManifest()
	m.Resources = Resources{MemoryMB: 64}
	out := filepath.Join(t.TempDir(), "out")
	p, err := Build(exe, m, out)
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(out, "echo-1.2.0.tar.gz") {
		t.Errorf("Build wrote %s", p)
	}
	if m.Executable != "echo" || m.SHA256 != sha(exeBody) || m.Health.Interval.Duration == 0 {
		t.Errorf("Build did not complete the manifest: %+v", m)
	}
	b, err := Open(p, filepath.Join(t.TempDir(), "unpacked"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(b.Manifest, m) {
		t.Errorf("opened manifest %+v\nbuilt %+v", b.Manifest, m)
	}
	got, err := os.ReadFile(b.Executable)
	if err != nil || string(got) != exeBody {
		t.Errorf("executable = %q, %v", got, err)
	}
	left, _ := os.ReadDir(out)
	if len(left) != 1 {
		t.Errorf("out dir holds %v, want only the bundle", left)
	}
}

func TestBuildDeterministic(t *testing.T) {
	src := t.TempDir()
	exe := writeExe(t, src, "echo", exeBody)
	build := func() []byte {
		p, err := Build(exe, newManifest(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	first := build()
	// A different mtime and mode on the input change nothing.
	if err := os.Chmod(exe, 0o700); err != nil {
		t.Fatal(err)
	}
	if second := build(); !bytes.Equal(first, second) {
		t.Fatal("building twice gave different archives")
	}

	zr, err := gzip.NewReader(bytes.NewReader(first))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header has name %q, time %v", zr.Name, zr.ModTime)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if hdr.ModTime.Unix() != 0 || hdr.Uid != 0 || hdr.Gid != 0 || hdr.Uname != "" || hdr.Gname != "" || hdr.Typeflag != tar.TypeReg {
			t.Errorf("%s: header %+v", hdr.Name, hdr)
		}
		want := int64(0o644)
		if hdr.Name == "echo" {
			want = 0o755
		}
		if hdr.Mode != want {
			t.Errorf("%s: mode %o, want %o", hdr.Name, hdr.Mode, want)
		}
	}
	if !reflect.DeepEqual(names, []string{"echo", "plugin.json"}) {
		t.Errorf("entries %v, want sorted [echo plugin.json]", names)
	}
}

func TestBuildSortsEntries(t *testing.T) {
	exe := writeExe(t, t.TempDir(), "zz-echo", exeBody)
	p, err := Build(exe, newManifest(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	zr, _ := gzip.NewReader(bytes.NewReader(data))
	tr := tar.NewReader(zr)
	first, err := tr.Next()
	if err != nil || first.Name != ManifestFile {
		t.Errorf("first entry %v, %v; want plugin.json", first, err)
	}
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	exe := writeExe(t, dir, "echo", exeBody)

	m := newManifest()
	m.Version = "1.2"
	_, err := Build(exe, m, dir)
	checkErr(t, err, ErrBadVersion, `bundle build: version "1.2" is not strict semver`)

	_, err = Build(filepath.Join(dir, "missing"), newManifest(), dir)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing executable: %v", err)
	}
	if _, err := Build(dir, newManifest(), dir); err == nil || !strings.Contains(err.Error(), "is not a regular file") {
		t.Errorf("directory as executable: %v", err)
	}
	if _, err := Build(exe, nil, dir); err == nil {
		t.Error("nil manifest: no error")
	}
	manifest := writeExe(t, t.TempDir(), ManifestFile, exeBody)
	_, err = Build(manifest, newManifest(), dir)
	checkErr(t, err, ErrManifestInvalid, "executable cannot be named plugin.json")

	left, _ := filepath.Glob(filepath.Join(dir, "*.tar.gz"))
	hidden, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(left)+len(hidden) != 0 {
		t.Errorf("failed builds left %v %v", left, hidden)
	}
}

// TestOpenSystemTar opens a bundle made by tar(1), which pads archives
// differently from archive/tar.
func TestOpenSystemTar(t *testing.T) {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("no tar(1)")
	}
	src := makeDir(t, "echo-1.2.0", goodEntries(t, nil))
	out := filepath.Join(t.TempDir(), "echo-1.2.0.tar.gz")
	if b, err := exec.Command(tarBin, "-czf", out, "-C", src, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, b)
	}
	if _, err := Open(out, filepath.Join(t.TempDir(), "u")); err != nil {
		t.Fatal(err)
	}
}

func TestDigest(t *testing.T) {
	p := writeExe(t, t.TempDir(), "echo", exeBody)
	d, err := Digest(p)
	if err != nil || d != sha(exeBody) {
		t.Errorf("Digest = %s, %v", d, err)
	}
	if _, err := Digest(p + ".missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Digest(missing) = %v", err)
	}
}

func TestInstallToMovesThePrivateCopy(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "echo")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path, err := Build(exe, &Manifest{Name: "echo", Version: "1.0.0", APIVersions: []int{1}, Services: []string{"echo.v1.EchoService"}}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(path, filepath.Join(t.TempDir(), "unpacked"))
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "echo-1.0.0")
	// A leftover from an interrupted copy is replaced.
	if err := os.MkdirAll(dest+".tmp", 0o755); err != nil {
		t.Fatal(err)
	}
	unpacked := b.Executable
	before, err := os.Stat(unpacked)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.InstallTo(dest); err != nil {
		t.Fatal(err)
	}
	if b.Dir != dest || b.Executable != filepath.Join(dest, "echo") {
		t.Errorf("after InstallTo the bundle is at %s, %s; want %s", b.Dir, b.Executable, dest)
	}
	// The file installed is the file Open hashed, moved, not a copy of it.
	after, err := os.Stat(b.Executable)
	if err != nil || !os.SameFile(before, after) {
		t.Errorf("installed executable is not the verified file: %v", err)
	}
	if after.Mode().Perm() != 0o500 {
		t.Errorf("installed executable has mode %s, want 0500", after.Mode().Perm())
	}
	if fi, err := os.Stat(dest); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("install dir: %v, %v; want mode 0700", fi.Mode().Perm(), err)
	}
	got, err := Verify(dest)
	if err != nil {
		t.Fatalf("the copy is not a valid bundle: %v", err)
	}
	if got.SHA256 != b.Manifest.SHA256 {
		t.Fatalf("digest %s, want %s", got.SHA256, b.Manifest.SHA256)
	}
	if fi, err := os.Stat(filepath.Join(dest, "echo")); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Fatalf("executable missing or not executable: %v %v", fi, err)
	}
	if _, err := os.Stat(dest + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temp dir left behind: %v", err)
	}
}

// TestExecutable: a directory names the one executable file in it; one
// with none or several is refused, naming what it holds.
func TestExecutable(t *testing.T) {
	one := t.TempDir()
	exe := writeExe(t, one, "greeter", exeBody)
	if err := os.WriteFile(filepath.Join(one, "README"), []byte("not executable"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(one, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	two := t.TempDir()
	writeExe(t, two, "a", exeBody)
	writeExe(t, two, "b", exeBody)
	cases := []struct {
		path, want, err string
	}{
		{exe, exe, ""},
		{one, exe, ""},
		{t.TempDir(), "", "no executable file"},
		{two, "", "2 executables (a, b)"},
		{filepath.Join(one, "missing"), "", "no such file"},
	}
	for _, tc := range cases {
		got, err := Executable(tc.path)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Executable(%s) = %q, %v; want an error saying %q", tc.path, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Executable(%s) = %q, %v; want %q", tc.path, got, err, tc.want)
		}
	}
}
