package bundle

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// openArchive writes data as dir/fileName and opens it into dir/unpacked.
func openArchive(t *testing.T, fileName string, data []byte) (*Bundle, error) {
	t.Helper()
	dir := t.TempDir()
	p := writeFile(t, dir, fileName, data)
	unpack := filepath.Join(dir, "unpacked")
	b, err := Open(p, unpack)
	if err != nil {
		if _, serr := os.Stat(unpack); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("refused bundle left its unpack directory behind (%v)", serr)
		}
	}
	return b, err
}

func TestOpenTarball(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "echo-1.2.0.tar.gz", tarGz(t, goodEntries(t, nil)))
	unpack := filepath.Join(dir, "a", "b")
	b, err := Open(p, unpack)
	if err != nil {
		t.Fatal(err)
	}
	if b.Source != p || b.Dir != unpack || b.Executable != filepath.Join(unpack, "echo") {
		t.Errorf("bundle = %+v", b)
	}
	if b.Manifest.Name != "echo" || b.Manifest.Health.Interval.Duration == 0 {
		t.Errorf("manifest = %+v", b.Manifest)
	}
	fi, err := os.Stat(b.Executable)
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("executable: %v %v", fi, err)
	}
}

func TestOpenTarballExtras(t *testing.T) {
	// "./" prefixes (tar -C dir .), directories, extra files in
	// subdirectories and git's global header are all fine.
	entries := []entry{
		{name: "./", typeflag: tar.TypeDir, mode: 0o755},
		{name: "pax_global_header", typeflag: tar.TypeXGlobalHeader},
		file("./echo", exeBody, 0o4777), // setuid and world-write are dropped
		file("./plugin.json", string(manifestJSON(t, nil)), 0o644),
		file("./share/doc/LICENSE", "MIT", 0o644),
	}
	b, err := openArchive(t, "echo-1.2.0.tar.gz", tarGz(t, entries))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(b.Executable)
	if err != nil || fi.Mode() != 0o755 {
		t.Errorf("executable mode = %v, %v; want 0755", fi.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(b.Dir, "share", "doc", "LICENSE")); err != nil {
		t.Error(err)
	}
}

func TestOpenTarballRefusals(t *testing.T) {
	good := tarGz(t, goodEntries(t, nil))
	goodTar := tarBytes(t, goodEntries(t, nil))
	badCRC := append([]byte(nil), good...)
	badCRC[len(badCRC)-8] ^= 0xff // the gzip trailer's CRC-32
	withEntries := func(extra ...entry) []byte { return tarGz(t, append(goodEntries(t, nil), extra...)) }
	otherDigest := sha("something else")

	tests := []struct {
		name string
		file string // default echo-1.2.0.tar.gz
		data []byte
		want error
		msg  string // exact message, or substrings separated by "|"
	}{
		{"not gzip", "", []byte("PK\x03\x04 this is a zip"), ErrCorruptArchive,
			"bundle echo-1.2.0.tar.gz: corrupt archive (gzip: invalid header): the file is damaged, truncated or not a gzip-compressed tar; copy it again or rebuild the bundle with 'plughost bundle build'"},
		{"empty file", "", nil, ErrCorruptArchive, "bundle echo-1.2.0.tar.gz: corrupt archive (EOF)"},
		{"truncated gzip", "", good[:len(good)/2], ErrCorruptArchive, "bundle echo-1.2.0.tar.gz: corrupt archive (unexpected EOF)"},
		{"gzip without trailer", "", good[:len(good)-8], ErrCorruptArchive, "corrupt archive (unexpected EOF)"},
		{"bad gzip checksum", "", badCRC, ErrCorruptArchive, "corrupt archive (gzip: invalid checksum)"},
		{"truncated tar", "", gz(t, goodTar[:700]), ErrCorruptArchive, "corrupt archive (unexpected EOF)"},
		{"tar cut in a file", "", gz(t, goodTar[:520]), ErrCorruptArchive, "corrupt archive (unexpected EOF)"},
		{"tar cut at a header", "", gz(t, goodTar[:1024]), ErrCorruptArchive, "corrupt archive (unexpected EOF)"},
		{"tar without end marker", "", gz(t, goodTar[:len(goodTar)-1024]), ErrCorruptArchive, "corrupt archive (unexpected EOF)"},
		{"tar cut in a header", "", gz(t, goodTar[:1100]), ErrCorruptArchive, "corrupt archive (unexpected EOF)"},
		{"plain tar", "", goodTar, ErrCorruptArchive, "gzip: invalid header"},
		{"missing manifest", "", tarGz(t, []entry{file("echo", exeBody, 0o755)}), ErrManifestMissing,
			"bundle echo-1.2.0.tar.gz: no plugin.json at the top of the archive: rebuild the bundle with 'plughost bundle build'"},
		{"manifest in a subdirectory", "", tarGz(t, []entry{file("echo", exeBody, 0o755), file("echo-1.2.0/plugin.json", string(manifestJSON(t, nil)), 0o644)}), ErrManifestMissing, "no plugin.json at the top"},
		{"manifest is a directory", "", tarGz(t, []entry{file("echo", exeBody, 0o755), {name: "plugin.json/", typeflag: tar.TypeDir, mode: 0o755}}), ErrManifestMissing, "plugin.json is not a regular file"},
		{"unknown field", "", tarGz(t, goodEntries(t, func(m map[string]any) { m["colour"] = "red" })), ErrManifestInvalid,
			`bundle echo-1.2.0.tar.gz: plugin.json: unknown field "colour"`},
		{"bad semver", "echo-1.2.tar.gz", tarGz(t, goodEntries(t, func(m map[string]any) { m["version"] = "1.2" })), ErrBadVersion,
			`bundle echo-1.2.tar.gz: version "1.2" is not strict semver (MAJOR.MINOR.PATCH, e.g. 1.2.0)`},
		{"bad name", "Echo-1.2.0.tar.gz", tarGz(t, goodEntries(t, func(m map[string]any) { m["name"] = "Echo" })), ErrBadName,
			`bundle Echo-1.2.0.tar.gz: name "Echo" is invalid`},
		{"version mismatch", "echo-1.3.0.tar.gz", good, ErrNameMismatch,
			"bundle echo-1.3.0.tar.gz: file name says echo 1.3.0 but plugin.json says echo 1.2.0: rename the file to echo-1.2.0.tar.gz"},
		{"name mismatch", "ping-1.2.0.tar.gz", good, ErrNameMismatch,
			"bundle ping-1.2.0.tar.gz: file name says ping 1.2.0 but plugin.json says echo 1.2.0: rename the file to echo-1.2.0.tar.gz"},
		{"file name without version", "echo.tar.gz", good, ErrNameMismatch,
			`bundle echo.tar.gz: file name "echo" is not <name>-<version> and plugin.json says echo 1.2.0: rename the file to echo-1.2.0.tar.gz`},
		{"wrong digest", "", tarGz(t, goodEntries(t, func(m map[string]any) { m["sha256"] = otherDigest })), ErrDigestMismatch,
			`bundle echo-1.2.0.tar.gz: executable "echo" has sha256 ` + sha(exeBody) + ` but plugin.json says ` + otherDigest + `: rebuild the bundle with 'plughost bundle build'`},
		{"missing exec bit", "", tarGz(t, []entry{file("echo", exeBody, 0o644), file(ManifestFile, string(manifestJSON(t, nil)), 0o644)}), ErrNotExecutable,
			`bundle echo-1.2.0.tar.gz: executable "echo" is not executable (mode -rw-r--r--): rebuild the bundle with 'plughost bundle build'`},
		{"executable missing", "", tarGz(t, []entry{file(ManifestFile, string(manifestJSON(t, nil)), 0o644)}), ErrExecutableMissing,
			`bundle echo-1.2.0.tar.gz: executable "echo" named in plugin.json is not in the bundle: rebuild the bundle with 'plughost bundle build'`},
		{"executable is a directory", "", tarGz(t, []entry{{name: "echo/", typeflag: tar.TypeDir, mode: 0o755}, file(ManifestFile, string(manifestJSON(t, nil)), 0o644)}), ErrNotExecutable,
			`executable "echo" is not a regular file (d---------)`},
		{"api version", "", tarGz(t, goodEntries(t, func(m map[string]any) { m["api_versions"] = []any{2} })), ErrAPIVersion,
			"bundle echo-1.2.0.tar.gz: echo 1.2.0 speaks plugin API [2], this agent speaks [1]: rebuild the plugin with an SDK for API 1 or upgrade the agent"},
		{"path traversal", "", withEntries(file("../evil", "x", 0o644)), ErrUnsafePath,
			`bundle echo-1.2.0.tar.gz: entry "../evil" points outside the bundle: rebuild the bundle with 'plughost bundle build'`},
		{"path traversal inside", "", withEntries(file("share/../../evil", "x", 0o644)), ErrUnsafePath, `entry "share/../../evil" points outside the bundle`},
		{"absolute path", "", withEntries(file("/tmp/evil", "x", 0o644)), ErrUnsafePath, `entry "/tmp/evil" has an absolute path`},
		{"symlink", "", tarGz(t, []entry{{name: "echo", typeflag: tar.TypeSymlink, linkname: "/bin/sh"}, file(ManifestFile, string(manifestJSON(t, nil)), 0o644)}), ErrUnsafePath,
			`bundle echo-1.2.0.tar.gz: entry "echo" is a link to "/bin/sh": a bundle holds only regular files and directories; rebuild the bundle with 'plughost bundle build'`},
		{"symlink then write through it", "", tarGz(t, []entry{{name: "share", typeflag: tar.TypeSymlink, linkname: "/tmp"}, file("share/evil", "x", 0o644)}), ErrUnsafePath, `entry "share" is a link to "/tmp"`},
		{"hard link", "", withEntries(entry{name: "sh", typeflag: tar.TypeLink, linkname: "/bin/sh"}), ErrUnsafePath, `entry "sh" is a link to "/bin/sh"`},
		{"device", "", withEntries(entry{name: "null", typeflag: tar.TypeChar, mode: 0o666}), ErrUnsafePath, `entry "null" is a device file or pipe`},
		{"fifo", "", withEntries(entry{name: "pipe", typeflag: tar.TypeFifo, mode: 0o666}), ErrUnsafePath, `entry "pipe" is a device file or pipe`},
		{"duplicate entry", "", withEntries(file("echo", "#!/bin/sh\nrm -rf /\n", 0o755)), ErrUnsafePath, `entry "echo" appears twice or clashes with another entry`},
		{"file under a file", "", withEntries(file("echo/x", "x", 0o644)), ErrUnsafePath, `entry "echo/x" appears twice or clashes with another entry`},
		{"not a tar.gz", "echo-1.2.0.zip", good, ErrNotBundle, "bundle echo-1.2.0.zip: not a bundle: a bundle is a directory or a <name>-<version>.tar.gz file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := tt.file
			if name == "" {
				name = "echo-1.2.0.tar.gz"
			}
			b, err := openArchive(t, name, tt.data)
			if err == nil {
				t.Fatalf("opened %+v, want error %q", b, tt.msg)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("error %q does not wrap %v", err, tt.want)
			}
			if got := err.Error(); got != tt.msg && !strings.Contains(got, tt.msg) {
				t.Errorf("error\n got %q\nwant %q", got, tt.msg)
			}
		})
	}
}

func TestOpenTarballNothingEscapes(t *testing.T) {
	dir := t.TempDir()
	archives := [][]entry{
		{file("../evil", "x", 0o644)},
		{file("unpacked/../../evil", "x", 0o644)},
		{{name: "link", typeflag: tar.TypeSymlink, linkname: ".."}, file("link/evil", "x", 0o644)},
		{{name: "link/", typeflag: tar.TypeSymlink, linkname: "/"}, file("link/evil", "x", 0o644)},
	}
	for i, extra := range archives {
		data := tarGz(t, append(extra, goodEntries(t, nil)...))
		p := writeFile(t, dir, "echo-1.2.0.tar.gz", data)
		unpack := filepath.Join(dir, "u", "unpacked")
		if _, err := Open(p, unpack); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("archive %d: %v, want ErrUnsafePath", i, err)
		}
	}
	for _, p := range []string{filepath.Join(dir, "evil"), filepath.Join(dir, "u", "evil")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was written (%v)", p, err)
		}
	}
}

func TestOpenTarballLimits(t *testing.T) {
	lim := limits{file: 1 << 10, total: 2 << 10, entries: 5}
	big := strings.Repeat("x", 1<<10+1)
	tests := []struct {
		name    string
		entries []entry
		msg     string
	}{
		{"file too large", append(goodEntries(t, nil), file("big", big, 0o644)), `bundle echo-1.2.0.tar.gz: entry "big" is 1025 bytes, more than the 1 KiB limit for one file`},
		{"total too large", append(goodEntries(t, nil), file("a", big[:1000], 0o644), file("b", big[:1000], 0o644)), "bundle echo-1.2.0.tar.gz: the archive unpacks to more than 2 KiB: a bundle holds plugin.json and the executable; keep it smaller"},
		{"too many entries", append(goodEntries(t, nil), file("1", "", 0o644), file("2", "", 0o644), file("3", "", 0o644), file("4", "", 0o644)), "bundle echo-1.2.0.tar.gz: the archive has more than 5 entries"},
		// PAX headers are read by archive/tar itself and are not entries:
		// the cap on the decompressed stream stops them.
		{"large headers", []entry{
			{name: "a", typeflag: tar.TypeReg, pax: map[string]string{"comment": strings.Repeat("y", 700<<10)}},
			{name: "b", typeflag: tar.TypeReg, pax: map[string]string{"comment": strings.Repeat("y", 700<<10)}},
		}, "the archive unpacks to more than 2 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := writeFile(t, dir, "echo-1.2.0.tar.gz", tarGz(t, tt.entries))
			_, err := openWith(p, filepath.Join(dir, "u"), lim)
			checkErr(t, err, ErrTooLarge, tt.msg)
		})
	}
}

// TestOpenTarballSparse opens archives made by GNU tar --sparse of a
// 942 MiB file holding 21 bytes: a few hundred bytes that archive/tar would
// expand to the whole file. They are refused at the entry's header, before
// anything of it is written.
func TestOpenTarballSparse(t *testing.T) {
	for _, f := range []string{"sparse-pax.tar.gz", "sparse-gnu.tar.gz"} {
		t.Run(f, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", f))
			if err != nil {
				t.Fatal(err)
			}
			_, err = openArchive(t, "echo-1.2.0.tar.gz", data)
			checkErr(t, err, ErrUnsafePath, `bundle echo-1.2.0.tar.gz: entry "echo" is a GNU sparse file entry: a bundle holds only regular files and directories; re-create the archive without --sparse`)
		})
	}
}

func TestOpenUnpackDir(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "echo-1.2.0.tar.gz", tarGz(t, goodEntries(t, nil)))

	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p, empty); err != nil {
		t.Errorf("empty existing unpack directory: %v", err)
	}
	if _, err := Open(p, empty); err == nil || !strings.Contains(err.Error(), "is not empty: remove it first") {
		t.Errorf("full unpack directory: %v", err)
	}
	if _, err := Open(p, ""); err == nil {
		t.Error("no unpack directory: no error")
	}
	if _, err := Open(filepath.Join(dir, "missing-1.0.0.tar.gz"), filepath.Join(dir, "u")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing bundle: %v", err)
	}
}

// makeDir writes a bundle directory dir/name holding entries.
func makeDir(t *testing.T, name string, entries []entry) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	for _, e := range entries {
		p := filepath.Join(dir, e.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch e.typeflag {
		case tar.TypeSymlink:
			if err := os.Symlink(e.linkname, p); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(p, []byte(e.body), os.FileMode(e.mode)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

func TestOpenDir(t *testing.T) {
	for _, name := range []string{"echo-1.2.0", "echo"} {
		dir := makeDir(t, name, goodEntries(t, nil))
		private := filepath.Join(t.TempDir(), "private")
		b, err := Open(dir+"/", private)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b.Dir != private || b.Executable != filepath.Join(private, "echo") || b.Source != dir+"/" {
			t.Errorf("%s: bundle = %+v", name, b)
		}
		if fi, err := os.Stat(private); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: private copy dir: %v %v, want mode 0700", name, fi.Mode().Perm(), err)
		}
	}
}

// TestOpenDirVerifiesAPrivateCopy: what Open returns is a copy it checked;
// the source changed afterwards changes nothing of it, and a source changed
// before the copy was taken is refused.
func TestOpenDirVerifiesAPrivateCopy(t *testing.T) {
	dir := makeDir(t, "echo", goodEntries(t, nil))
	b, err := Open(dir, filepath.Join(t.TempDir(), "private"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "echo"), []byte("#!/bin/sh\ntouch /tmp/pwned\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(b.Executable)
	if err != nil || string(got) != exeBody {
		t.Fatalf("private copy changed with its source: %q %v", got, err)
	}
	if d, err := Digest(b.Executable); err != nil || d != b.Manifest.SHA256 {
		t.Fatalf("private copy digest %s %v, want %s", d, err, b.Manifest.SHA256)
	}
	if _, err := Open(dir, filepath.Join(t.TempDir(), "private")); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("swapped source: %v, want ErrDigestMismatch", err)
	}
}

func TestOpenDirRelative(t *testing.T) {
	dir := makeDir(t, "echo", goodEntries(t, nil))
	t.Chdir(filepath.Dir(dir))
	b, err := Open("echo", filepath.Join(t.TempDir(), "p1"))
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(b.Dir) || !filepath.IsAbs(b.Executable) {
		t.Errorf("bundle = %+v", b)
	}
	// Inside the bundle, "." is named by its real name.
	t.Chdir(dir)
	if _, err := Open(".", filepath.Join(t.TempDir(), "p2")); err != nil {
		t.Errorf(`Open("."): %v`, err)
	}
	if _, err := Open(".", ""); err == nil {
		t.Error("directory bundle without a directory to copy it into: no error")
	}
}

func TestOpenDirRefusals(t *testing.T) {
	manifest := string(manifestJSON(t, nil))
	tests := []struct {
		name    string
		dir     string
		entries []entry
		want    error
		msg     string
	}{
		{"name mismatch", "echo-1.3.0", goodEntries(t, nil), ErrNameMismatch,
			"bundle echo-1.3.0: directory name says echo 1.3.0 but plugin.json says echo 1.2.0: rename the directory to echo-1.2.0 or echo"},
		{"other name", "ping", goodEntries(t, nil), ErrNameMismatch,
			`bundle ping: directory name "ping" is not <name>-<version> and plugin.json says echo 1.2.0: rename the directory to echo-1.2.0 or echo`},
		{"missing manifest", "echo", []entry{file("echo", exeBody, 0o755)}, ErrManifestMissing,
			"bundle echo: no plugin.json in |: write one beside the executable, or make a bundle with 'plughost bundle build'"},
		{"invalid manifest", "echo", goodEntries(t, func(m map[string]any) { m["health"] = map[string]any{"colour": 1} }), ErrManifestInvalid,
			`bundle echo: plugin.json: unknown field "health.colour"`},
		{"missing exec bit", "echo", []entry{file("echo", exeBody, 0o644), file(ManifestFile, manifest, 0o644)}, ErrNotExecutable,
			`bundle echo: executable "echo" is not executable (mode -rw-r--r--): run chmod +x /|/echo/echo`},
		{"missing executable", "echo", []entry{file(ManifestFile, manifest, 0o644)}, ErrExecutableMissing,
			`bundle echo: executable "echo" named in plugin.json is not in the bundle: copy it into /|/echo or fix "executable" in plugin.json`},
		{"wrong digest", "echo", []entry{file("echo", "#!/bin/sh\n", 0o755), file(ManifestFile, manifest, 0o644)}, ErrDigestMismatch,
			`bundle echo: executable "echo" has sha256 ` + sha("#!/bin/sh\n") + " but plugin.json says " + sha(exeBody)},
		{"symlinked executable", "echo", []entry{{name: "echo", typeflag: tar.TypeSymlink, linkname: "/bin/sh"}, file(ManifestFile, manifest, 0o644)}, ErrUnsafePath,
			`bundle echo: executable "echo" is a symlink: put the file itself in the bundle`},
		{"symlinked manifest", "echo", []entry{file("echo", exeBody, 0o755), file("real.json", manifest, 0o644), {name: ManifestFile, typeflag: tar.TypeSymlink, linkname: "real.json"}}, ErrUnsafePath,
			"bundle echo: plugin.json is a symlink: put the file itself in the bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := makeDir(t, tt.dir, tt.entries)
			private := filepath.Join(t.TempDir(), "private")
			_, err := Open(dir, private)
			checkErr(t, err, tt.want, strings.Split(tt.msg, "|")...)
			if _, serr := os.Stat(private); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("the private copy of a refused bundle was left behind: %v", serr)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	dir := t.TempDir()
	good := writeFile(t, dir, "echo-1.2.0.tar.gz", tarGz(t, goodEntries(t, nil)))
	m, err := Verify(good)
	if err != nil || m.Name != "echo" {
		t.Fatalf("Verify = %+v, %v", m, err)
	}
	bad := writeFile(t, dir, "echo-1.3.0.tar.gz", tarGz(t, goodEntries(t, nil)))
	if _, err := Verify(bad); !errors.Is(err, ErrNameMismatch) {
		t.Errorf("Verify(bad) = %v", err)
	}
	left, err := os.ReadDir(tmp)
	if err != nil || len(left) != 0 {
		t.Errorf("Verify left %v behind in its temporary directory (%v)", left, err)
	}
}

func TestSplitNameVersion(t *testing.T) {
	tests := []struct{ in, name, version string }{
		{"echo-1.2.0", "echo", "1.2.0"},
		{"my-plugin2-1.2.0-rc.1+b-5", "my-plugin2", "1.2.0-rc.1+b-5"},
		{"a-1-1.0.0", "a-1", "1.0.0"},
		{"echo-1.2", "echo", "1.2"},
		{"echo", "", ""},
		{"-1.2.0", "", ""},
		{"1.2.0", "", ""},
	}
	for _, tt := range tests {
		n, v, ok := splitNameVersion(tt.in)
		if n != tt.name || v != tt.version || ok != (tt.name != "") {
			t.Errorf("splitNameVersion(%q) = %q, %q, %v", tt.in, n, v, ok)
		}
	}
}

func TestCappedReader(t *testing.T) {
	for _, tt := range []struct {
		data string
		cap  int64
		err  error
	}{
		{"abc", 3, nil},
		{"abc", 4, nil},
		{"abcd", 3, errStreamCap},
	} {
		c := &cappedReader{r: strings.NewReader(tt.data), left: tt.cap}
		_, err := io.ReadAll(c)
		if !errors.Is(err, tt.err) && !(err == nil && tt.err == nil) {
			t.Errorf("%q capped at %d: %v, want %v", tt.data, tt.cap, err, tt.err)
		}
	}
}
