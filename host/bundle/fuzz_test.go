package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzParseManifest(f *testing.F) {
	f.Add(manifestJSON(f, nil))
	f.Add(manifestJSON(f, func(m map[string]any) {
		m["health"] = map[string]any{"interval": "1m", "timeout": "10s"}
		m["config"] = map[string]any{"a": []any{1, nil, "x"}}
	}))
	f.Add(builtManifest(f))
	f.Add(manifestJSON(f, func(m map[string]any) {
		m["placement"] = map[string]any{"mode": "count", "count": 3, "constraint": `role == "edge" and (disk == "ssd" or rack matches "^r1")`}
	}))
	f.Add(manifestJSON(f, func(m map[string]any) {
		m["placement"] = map[string]any{"mode": "singleton", "standby": 1, "spread": "fault_domain"}
	}))
	f.Add([]byte(`{"name":"a","name":"b"}`))
	f.Add([]byte(`{"Name":"a"}`))
	f.Add([]byte(`{"health":{"interval":5}}`))
	f.Add([]byte(`{} {}`))
	f.Add([]byte(`[`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			if !errors.Is(err, ErrManifestInvalid) {
				t.Fatalf("error %q does not wrap ErrManifestInvalid", err)
			}
			return
		}
		// What parses, marshals and parses again to the same manifest.
		out, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseManifest(out)
		if err != nil {
			t.Fatalf("Marshal output does not parse: %v\n%s", err, out)
		}
		out2, err := again.Marshal()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("Marshal is not stable:\n%s\n%s", out, out2)
		}
	})
}

// FuzzCompileConstraint compiles fuzzed placement constraints and matches
// what compiles against a few nodes' tags: no panic, and a refusal wraps
// ErrManifestInvalid.
func FuzzCompileConstraint(f *testing.F) {
	for _, s := range []string{
		`role == "edge"`, `role != "edge" and disk == "ssd"`, `not (a == "b" or (c is empty))`,
		`rack matches "^r1[0-9]$"`, `"gpu" in features`, `features contains "nvme"`, `"/role" == "core"`,
		`role.sub == "x"`, `n == 3`, "a == `raw`", `all tags as k { k != "x" }`, `role = edge`, `((((a == "b"))))`,
	} {
		f.Add(s)
	}
	tags := []map[string]string{nil, {}, {"role": "edge", "disk": "ssd", "rack": "r12", "features": "gpu,nvme", "n": "3"}}
	f.Fuzz(func(t *testing.T, expr string) {
		c, err := CompileConstraint(expr)
		if err != nil {
			if !errors.Is(err, ErrManifestInvalid) {
				t.Fatalf("error %q does not wrap ErrManifestInvalid", err)
			}
			return
		}
		if c.String() != expr {
			t.Fatalf("String() = %q, want %q", c.String(), expr)
		}
		for _, tg := range tags {
			c.Match(tg)
		}
	})
}

// FuzzOpenTarball opens fuzzed archives. With raw set the input is a tar
// stream that the harness compresses, so that the fuzzer reaches past gzip.
func FuzzOpenTarball(f *testing.F) {
	goodTar := tarBytes(f, goodEntries(f, nil))
	good := gz(f, goodTar)
	f.Add(good, false)
	f.Add(good[:len(good)/2], false)
	f.Add([]byte{}, false)
	f.Add(goodTar, true)
	f.Add(goodTar[:1024], true)
	f.Add(tarBytes(f, []entry{{name: "echo", typeflag: tar.TypeSymlink, linkname: "/bin/sh"}}), true)
	f.Add(tarBytes(f, append(goodEntries(f, nil), file("../evil", "x", 0o644))), true)
	f.Add(tarBytes(f, append(goodEntries(f, nil), entry{name: "d/", typeflag: tar.TypeDir, mode: 0o755}, file("d/f", "x", 0o600))), true)
	f.Add(builtArchive(f), false)
	for _, entries := range hostileArchives(f) {
		f.Add(tarBytes(f, entries), true)
	}
	for _, name := range []string{"sparse-pax.tar.gz", "sparse-gnu.tar.gz"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, false)
	}
	lim := limits{file: 1 << 20, total: 2 << 20, entries: 64}
	f.Fuzz(func(t *testing.T, data []byte, raw bool) {
		if raw {
			data = gz(t, data)
		}
		dir := t.TempDir()
		p := writeFile(t, dir, "echo-1.2.0.tar.gz", data)
		unpack := filepath.Join(dir, "unpacked")
		b, err := openWith(p, unpack, lim)
		if err != nil {
			if !wrapsSentinel(err) {
				t.Fatalf("error %q wraps no sentinel", err)
			}
			if _, serr := os.Lstat(unpack); serr == nil {
				t.Fatal("refused bundle left its unpack directory behind")
			}
			return
		}
		checkOpened(t, b, unpack)
	})
}

// FuzzOpenDir opens fuzzed directory bundles: a plugin.json and an
// executable named "echo", in a directory of a fuzzed name. The shape bits
// make the executable a symlink to a copy outside the bundle (1), take its
// execute bit away (2), make plugin.json a symlink (4), or put the
// executable in a directory that is a symlink to the outside (8).
func FuzzOpenDir(f *testing.F) {
	good := manifestJSON(f, nil)
	f.Add(good, []byte(exeBody), "echo", uint8(0))
	f.Add(good, []byte(exeBody), "echo-1.2.0", uint8(0))
	f.Add(builtManifest(f), []byte(exeBody), "echo", uint8(0))
	f.Add(good, []byte("#!/bin/sh\n"), "echo", uint8(0))
	f.Add(good, []byte(exeBody), "echo-1.3.0", uint8(0))
	f.Add(good, []byte(exeBody), "ping", uint8(0))
	f.Add(good, []byte(exeBody), "echo", uint8(1))
	f.Add(good, []byte(exeBody), "echo", uint8(2))
	f.Add(good, []byte(exeBody), "echo", uint8(4))
	f.Add(manifestJSON(f, func(m map[string]any) { m["executable"] = "bin/echo" }), []byte(exeBody), "echo", uint8(8))
	f.Add(manifestJSON(f, func(m map[string]any) { m["executable"] = "../echo" }), []byte(exeBody), "echo", uint8(0))
	f.Add(manifestJSON(f, func(m map[string]any) { m["health"] = map[string]any{"colour": 1} }), []byte(exeBody), "echo", uint8(0))
	f.Fuzz(func(t *testing.T, manifest, exe []byte, name string, shape uint8) {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 200 {
			name = "echo"
		}
		outside := t.TempDir()
		dir := filepath.Join(t.TempDir(), name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o755)
		if shape&2 != 0 {
			mode = 0o644
		}
		exeDir := dir
		if shape&8 != 0 {
			if err := os.Symlink(outside, filepath.Join(dir, "bin")); err != nil {
				t.Fatal(err)
			}
			exeDir = filepath.Join(dir, "bin")
		}
		if shape&1 != 0 {
			writeMode(t, outside, "real-echo", exe, mode)
			if err := os.Symlink(filepath.Join(outside, "real-echo"), filepath.Join(exeDir, "echo")); err != nil {
				t.Fatal(err)
			}
		} else {
			writeMode(t, exeDir, "echo", exe, mode)
		}
		if shape&4 != 0 {
			writeMode(t, outside, "real.json", manifest, 0o644)
			if err := os.Symlink(filepath.Join(outside, "real.json"), filepath.Join(dir, ManifestFile)); err != nil {
				t.Fatal(err)
			}
		} else {
			writeMode(t, dir, ManifestFile, manifest, 0o644)
		}
		private := filepath.Join(t.TempDir(), "private")
		b, err := Open(dir, private)
		if err != nil {
			if _, serr := os.Stat(private); !errors.Is(serr, os.ErrNotExist) {
				t.Fatalf("refused bundle left its private copy behind: %v", serr)
			}
			if !wrapsSentinel(err) {
				t.Fatalf("error %q wraps no sentinel", err)
			}
			if !strings.HasPrefix(err.Error(), "bundle "+name+": ") {
				t.Fatalf("error %q does not name the bundle %q", err, name)
			}
			return
		}
		if shape&(1|4|8) != 0 {
			t.Fatalf("opened a bundle whose files are symlinks to the outside (shape %#x): %+v", shape, b)
		}
		checkOpened(t, b, private)
	})
}

// checkOpened checks what Open says of a bundle it accepted: its
// executable is a regular, executable file inside the bundle's directory,
// with the manifest's digest.
func checkOpened(t *testing.T, b *Bundle, dir string) {
	t.Helper()
	if b.Dir != dir || filepath.Dir(b.Executable) != dir {
		t.Fatalf("bundle in %s has Dir %s and Executable %s", dir, b.Dir, b.Executable)
	}
	fi, err := os.Lstat(b.Executable)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("opened bundle's executable %s: %v, %v", b.Executable, fi, err)
	}
	if d, err := Digest(b.Executable); err != nil || d != b.Manifest.SHA256 {
		t.Fatalf("opened bundle's executable has digest %s (%v), manifest says %s", d, err, b.Manifest.SHA256)
	}
}

func writeMode(t *testing.T, dir, name string, data []byte, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// builtArchive is the archive Build makes of the test executable.
func builtArchive(t testing.TB) []byte {
	t.Helper()
	dir := t.TempDir()
	p, err := Build(writeExe(t, dir, "echo", exeBody), newManifest(), filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// builtManifest is the plugin.json in the archive Build makes.
func builtManifest(t testing.TB) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(builtArchive(t)))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("no %s in the built archive: %v", ManifestFile, err)
		}
		if hdr.Name == ManifestFile {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
	}
}

// hostileArchives are the entries of archives the package's tests refuse.
func hostileArchives(t testing.TB) [][]entry {
	manifest := file(ManifestFile, string(manifestJSON(t, nil)), 0o644)
	exe := file("echo", exeBody, 0o755)
	with := func(extra ...entry) []entry { return append(goodEntries(t, nil), extra...) }
	return [][]entry{
		{exe},
		{exe, file("echo-1.2.0/plugin.json", manifest.body, 0o644)},
		{exe, {name: "plugin.json/", typeflag: tar.TypeDir, mode: 0o755}},
		{file("echo", exeBody, 0o644), manifest},
		{manifest},
		{{name: "echo/", typeflag: tar.TypeDir, mode: 0o755}, manifest},
		{{name: "echo", typeflag: tar.TypeSymlink, linkname: "/bin/sh"}, manifest},
		{{name: "share", typeflag: tar.TypeSymlink, linkname: "/tmp"}, file("share/evil", "x", 0o644)},
		{{name: "link", typeflag: tar.TypeSymlink, linkname: ".."}, file("link/evil", "x", 0o644)},
		with(file("share/../../evil", "x", 0o644)),
		with(file("/tmp/evil", "x", 0o644)),
		with(entry{name: "sh", typeflag: tar.TypeLink, linkname: "/bin/sh"}),
		with(entry{name: "null", typeflag: tar.TypeChar, mode: 0o666}),
		with(entry{name: "pipe", typeflag: tar.TypeFifo, mode: 0o666}),
		with(file("echo", "#!/bin/sh\nrm -rf /\n", 0o755)),
		with(file("echo/x", "x", 0o644)),
		with(entry{name: "big", typeflag: tar.TypeReg, pax: map[string]string{"comment": strings.Repeat("y", 64<<10)}}),
		with(entry{name: "sparse", typeflag: tar.TypeReg, pax: map[string]string{"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}}),
		{{name: "./", typeflag: tar.TypeDir, mode: 0o755}, {name: "pax_global_header", typeflag: tar.TypeXGlobalHeader},
			file("./echo", exeBody, 0o4777), file("./plugin.json", manifest.body, 0o644), file("./share/doc/LICENSE", "MIT", 0o644)},
	}
}

func FuzzValidVersion(f *testing.F) {
	for _, v := range []string{"1.2.0", "1.2.0-rc.1+b5", "v1.2.0", "1.2", "01.2.0", "1.2.0-", "1.0.0-0a.01"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		want := len(v) <= maxVersionLen && semverOrgRE.MatchString(v)
		if got := ValidVersion(v); got != want {
			t.Fatalf("ValidVersion(%q) = %v, semver.org says %v", v, got, want)
		}
	})
}
