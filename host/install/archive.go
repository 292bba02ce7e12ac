package install

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/plughost/plughost/host/bundle"
)

// archive is a bundle archive built from an installed copy, in a private
// temporary file.
type archive struct {
	path   string
	size   int64
	sha256 string
}

// buildArchive writes the bundle installed in dir (plugin.json, plugin.sig
// when there is one, and the executable, as bundle.InstallTo left them)
// as a .tar.gz into a new file in tmpDir, the form 'plughost bundle build'
// makes: entries sorted by name, zero times and owners, so that every node
// holding the same files serves the same bytes and a fetch can resume on
// another peer. The files are sent as they are on disk: the receiver
// verifies them against the catalog.
func buildArchive(dir, tmpDir string) (*archive, error) {
	b, err := bundle.ReadInstalled(dir)
	if err != nil {
		return nil, err
	}
	exe, err := os.OpenFile(b.Executable, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer exe.Close()
	fi, err := exe.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("executable %s is not a regular file", b.Executable)
	}
	from := func(r io.Reader, name string, size int64) func(io.Writer) error {
		return func(w io.Writer) error {
			if _, err := io.CopyN(w, r, size); err != nil {
				return fmt.Errorf("reading %s: %w", filepath.Join(dir, name), err)
			}
			return nil
		}
	}
	entries := []bundle.ArchiveEntry{
		{Name: bundle.ManifestFile, Mode: 0o644, Size: int64(len(b.ManifestJSON)), Write: from(bytes.NewReader(b.ManifestJSON), bundle.ManifestFile, int64(len(b.ManifestJSON)))},
		{Name: b.Manifest.Executable, Mode: 0o755, Size: fi.Size(), Write: from(exe, b.Manifest.Executable, fi.Size())},
	}
	if b.Signature != nil {
		entries = append(entries, bundle.ArchiveEntry{Name: bundle.SignatureFile, Mode: 0o644, Size: int64(len(b.Signature)),
			Write: from(bytes.NewReader(b.Signature), bundle.SignatureFile, int64(len(b.Signature)))})
	}

	f, err := os.CreateTemp(tmpDir, "serve-*.tar.gz")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	if err := bundle.WriteArchive(io.MultiWriter(f, h), gzip.BestSpeed, entries); err != nil {
		return nil, err
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	ok = true
	return &archive{path: f.Name(), size: size, sha256: hex.EncodeToString(h.Sum(nil))}, nil
}

// maxManifest bounds the plugin.json read out of a peer's archive.
const maxManifest = 1 << 20

// inspectArchive reads the archive at path, as a peer served it, and
// returns the SHA-256 of its entry named exe ("" when it has none) and its
// plugin.json (nil when it has none). It reads at most MaxArchive bytes
// out of the gzip stream.
func inspectArchive(path, exe string) (exeSHA string, manifest []byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return "", nil, err
	}
	tr := tar.NewReader(io.LimitReader(zr, MaxArchive))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return exeSHA, manifest, nil
		}
		if err != nil {
			return "", nil, err
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		switch filepath.Clean(hdr.Name) {
		case exe:
			h := sha256.New()
			if _, err := io.Copy(h, tr); err != nil {
				return "", nil, err
			}
			exeSHA = hex.EncodeToString(h.Sum(nil))
		case bundle.ManifestFile:
			if manifest, err = io.ReadAll(io.LimitReader(tr, maxManifest)); err != nil {
				return "", nil, err
			}
		}
	}
}
