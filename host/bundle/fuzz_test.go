package bundle

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func FuzzParseManifest(f *testing.F) {
	f.Add(manifestJSON(f, nil))
	f.Add(manifestJSON(f, func(m map[string]any) {
		m["health"] = map[string]any{"interval": "1m", "timeout": "10s"}
		m["config"] = map[string]any{"a": []any{1, nil, "x"}}
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
		if d, err := Digest(b.Executable); err != nil || d != b.Manifest.SHA256 {
			t.Fatalf("opened bundle's executable has digest %s (%v), manifest says %s", d, err, b.Manifest.SHA256)
		}
	})
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
