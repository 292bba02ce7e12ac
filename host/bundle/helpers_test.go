package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// exeBody is the fake executable of the test bundles; this package never
// runs it.
const exeBody = "#!/bin/sh\necho hello\n"

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// baseManifest returns the fields of a valid echo 1.2.0 manifest whose
// executable is exeBody.
func baseManifest() map[string]any {
	return map[string]any{
		"name":         "echo",
		"version":      "1.2.0",
		"api_versions": []any{1},
		"executable":   "echo",
		"sha256":       sha(exeBody),
		"services":     []any{"echo.v1.EchoService"},
	}
}

// manifestJSON returns baseManifest, changed by edit, as JSON.
func manifestJSON(t testing.TB, edit func(map[string]any)) []byte {
	t.Helper()
	m := baseManifest()
	if edit != nil {
		edit(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newManifest returns a valid manifest for Build.
func newManifest() *Manifest {
	return &Manifest{
		Name:        "echo",
		Version:     "1.2.0",
		APIVersions: []int{1},
		Services:    []string{"echo.v1.EchoService"},
	}
}

// writeExe writes an executable file named name into dir.
func writeExe(t testing.TB, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// entry is one entry of a crafted archive.
type entry struct {
	name     string
	typeflag byte
	mode     int64
	body     string
	linkname string
	pax      map[string]string
}

func file(name, body string, mode int64) entry {
	return entry{name: name, typeflag: tar.TypeReg, mode: mode, body: body}
}

// goodEntries are the entries of a valid echo 1.2.0 archive.
func goodEntries(t testing.TB, edit func(map[string]any)) []entry {
	return []entry{
		file("echo", exeBody, 0o755),
		file(ManifestFile, string(manifestJSON(t, edit)), 0o644),
	}
}

// tarGz returns a .tar.gz of entries.
func tarGz(t testing.TB, entries []entry) []byte {
	t.Helper()
	return gz(t, tarBytes(t, entries))
}

func tarBytes(t testing.TB, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typeflag, Mode: e.mode, Linkname: e.linkname, PAXRecords: e.pax, Format: tar.FormatPAX}
		hdr.Size = int64(len(e.body))
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// writeFile writes data to dir/name and returns its path.
func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkErr fails unless err wraps want and ErrInvalid and its message
// contains every one of subs.
func checkErr(t testing.TB, err, want error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("error %q does not wrap %v", err, want)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("error %q does not wrap ErrInvalid", err)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}

// sentinels are every sentinel error of the package.
var sentinels = []error{
	ErrNotBundle, ErrCorruptArchive, ErrUnsafePath, ErrTooLarge,
	ErrManifestMissing, ErrManifestInvalid, ErrBadName, ErrBadVersion,
	ErrNameMismatch, ErrExecutableMissing, ErrNotExecutable,
	ErrDigestMismatch, ErrAPIVersion, ErrUnsigned, ErrUntrustedKey, ErrBadSignature,
}

func wrapsSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// semverOrgRE is the regular expression semver.org suggests; tests check
// ValidVersion against it.
var semverOrgRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
