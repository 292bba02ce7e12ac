package bundle

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Build makes a bundle archive of executable and m in outDir (created if
// needed) and returns its path, outDir/FileName(m.Name, m.Version). It sets
// m.Executable to the executable's base name and m.SHA256 to its digest,
// applies m's defaults and validates it.
//
// The archive holds plugin.json (mode 0644) and the executable (mode 0755),
// sorted by name, with zero times and owners, so the same inputs always give
// the same bytes. It is written to a hidden temporary file and renamed into
// place, so a folder watched for bundles never sees half of one.
func Build(executable string, m *Manifest, outDir string) (string, error) {
	if m == nil {
		return "", fmt.Errorf("bundle build: no manifest")
	}
	fi, err := os.Stat(executable)
	if err != nil {
		return "", fmt.Errorf("bundle build: executable: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("bundle build: executable %s is not a regular file", executable)
	}
	digest, err := Digest(executable)
	if err != nil {
		return "", fmt.Errorf("bundle build: %w", err)
	}
	m.Executable = filepath.Base(executable)
	m.SHA256 = digest
	m.SetDefaults()
	if err := m.Validate(); err != nil {
		return "", fmt.Errorf("bundle build: %w", err)
	}
	manifest, err := m.Marshal()
	if err != nil {
		return "", fmt.Errorf("bundle build: %w", err)
	}

	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("bundle build: %w", err)
	}
	name := FileName(m.Name, m.Version)
	out := filepath.Join(outDir, name)
	tmp, err := os.CreateTemp(outDir, "."+name+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("bundle build: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if err := writeArchive(tmp, executable, fi.Size(), m, manifest); err != nil {
		tmp.Close()
		return "", fmt.Errorf("bundle build: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", fmt.Errorf("bundle build: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("bundle build: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("bundle build: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", fmt.Errorf("bundle build: %w", err)
	}
	return out, nil
}

// writeArchive writes the bundle's tar.gz to w.
func writeArchive(w io.Writer, executable string, size int64, m *Manifest, manifest []byte) error {
	return WriteArchive(w, gzip.DefaultCompression, []ArchiveEntry{
		{ManifestFile, 0o644, int64(len(manifest)), func(w io.Writer) error {
			_, err := w.Write(manifest)
			return err
		}},
		{m.Executable, 0o755, size, func(w io.Writer) error {
			return copyExecutable(w, executable, size, m.SHA256)
		}},
	})
}

// ArchiveEntry is a regular file of a bundle archive: Write writes its
// Size bytes.
type ArchiveEntry struct {
	Name  string
	Mode  int64
	Size  int64
	Write func(io.Writer) error
}

// WriteArchive writes entries to w as a bundle's tar.gz, compressed at
// gzip level: sorted by name, with zero times and owners and a gzip header
// without name or time, so that the same files make the same bytes
// wherever they are written.
func WriteArchive(w io.Writer, level int, entries []ArchiveEntry) error {
	entries = slices.Clone(entries)
	slices.SortFunc(entries, func(a, b ArchiveEntry) int { return strings.Compare(a.Name, b.Name) })
	bw := bufio.NewWriterSize(w, 256<<10)
	zw, err := gzip.NewWriterLevel(bw, level)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.Name, Mode: e.Mode, Size: e.Size, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		if err := e.Write(tw); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// copyExecutable copies size bytes of the executable to w and checks that
// they still have the digest taken before.
func copyExecutable(w io.Writer, executable string, size int64, digest string) error {
	f, err := os.Open(executable)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(w, io.TeeReader(f, h), size); err != nil {
		return fmt.Errorf("copy executable %s: %w", executable, err)
	}
	if n, _ := f.Read(make([]byte, 1)); n > 0 || hex.EncodeToString(h.Sum(nil)) != digest {
		return fmt.Errorf("executable %s changed while the bundle was built: build it again", executable)
	}
	return nil
}

// DevVersion is the version a plugin reports when it was built without one:
// the SDK's convention is `var version = "0.0.0-dev"`, set at build time
// with -ldflags "-X main.version=1.2.3".
const DevVersion = "0.0.0-dev"

// Executable returns the plugin executable path names: path itself when it
// is a file, or the one executable regular file directly inside it when it
// is a directory. A directory with none or several is an error naming them.
func Executable(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return path, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return "", err
	}
	var found []string
	for _, e := range entries {
		info, err := e.Info()
		if err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0 {
			found = append(found, e.Name())
		}
	}
	switch len(found) {
	case 1:
		return filepath.Join(path, found[0]), nil
	case 0:
		return "", fmt.Errorf("%s is a directory with no executable file in it: give the plugin executable, or a directory holding only it", path)
	}
	return "", fmt.Errorf("%s is a directory with %d executables (%s): give the plugin executable itself", path, len(found), strings.Join(found, ", "))
}

// Digest returns the lowercase hex SHA-256 of the file at path.
func Digest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("digest %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
