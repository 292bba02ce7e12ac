package bundle

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// limits bound what an archive may unpack to.
type limits struct {
	file    int64 // bytes in one file
	total   int64 // bytes in all files
	entries int   // entries of any type
}

// defaultLimits are Open's limits: a bundle holds a manifest and one
// executable, so these are far above any real bundle.
var defaultLimits = limits{file: 1 << 30, total: 1 << 30, entries: 1000}

// streamCap bounds the decompressed stream, headers and skipped data
// included, so that no archive can make Open read forever.
func (l limits) streamCap() int64 {
	return l.total + int64(l.entries)*(8<<10) + 1<<20
}

var errStreamCap = errors.New("decompressed stream over its cap")

// unpackTo prepares unpackDir and unpacks the archive into it, returning the
// directory's absolute path. On error nothing is left in unpackDir.
func unpackTo(archive, label, unpackDir string, lim limits) (string, error) {
	dir, err := prepareDir(label, unpackDir)
	if err != nil {
		return "", err
	}
	if err := unpack(archive, label, dir, lim); err != nil {
		discard(dir)
		return "", err
	}
	return dir, nil
}

// discard removes dir, the unpack directory of a refused bundle. Errors are
// ignored: there is a better error to report.
func discard(dir string) {
	_ = os.RemoveAll(dir)
}

// unpack extracts the archive into dir. Only regular files and directories
// inside dir are written; anything else refuses the whole archive.
func unpack(archive, label, dir string, lim limits) error {
	f, err := os.Open(archive)
	if err != nil {
		return osError(label, "cannot open it", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return archiveError(label, lim, err)
	}
	defer zr.Close()
	stream := &cappedReader{r: zr, left: lim.streamCap()}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return osError(label, "cannot open unpack directory", err)
	}
	defer root.Close()

	tr := tar.NewReader(stream)
	var total int64
	for n := 1; ; n++ {
		hdr, err := tr.Next()
		if errors.Is(err, tar.ErrInsecurePath) {
			err = nil // with GODEBUG=tarinsecurepath=0; entryName says more
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return archiveError(label, lim, err)
		}
		if n > lim.entries {
			return newError(label, ErrTooLarge, fmt.Sprintf("the archive has more than %d entries: a bundle holds %s and the executable; %s", lim.entries, ManifestFile, rebuildFix))
		}
		name, err := entryName(label, hdr)
		if err != nil {
			return err
		}
		if isSparse(hdr) {
			// archive/tar would fill the holes in with zeros: a few hundred
			// bytes of archive could write a gigabyte.
			return newError(label, ErrUnsafePath, fmt.Sprintf("entry %q is a GNU sparse file entry: a bundle holds only regular files and directories; re-create the archive without --sparse, or %s", name, rebuildFix))
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if name == "." {
				continue
			}
			if err := root.MkdirAll(name, 0o755); err != nil {
				return entryWriteError(label, name, err)
			}
		case tar.TypeReg:
			if name == "." {
				return newError(label, ErrUnsafePath, fmt.Sprintf("entry %q is a file without a name: %s", hdr.Name, rebuildFix))
			}
			if hdr.Size > lim.file {
				return newError(label, ErrTooLarge, fmt.Sprintf("entry %q is %s, more than the %s limit for one file", name, formatBytes(hdr.Size), formatBytes(lim.file)))
			}
			if total += hdr.Size; total > lim.total {
				return newError(label, ErrTooLarge, fmt.Sprintf("the archive unpacks to more than %s: a bundle holds %s and the executable; keep it smaller", formatBytes(lim.total), ManifestFile))
			}
			if err := writeEntry(root, label, name, hdr, tr, lim); err != nil {
				return err
			}
		case tar.TypeXGlobalHeader:
			// Written by git archive; says nothing about the files.
		case tar.TypeSymlink, tar.TypeLink:
			return newError(label, ErrUnsafePath, fmt.Sprintf("entry %q is a link to %q: a bundle holds only regular files and directories; %s", name, hdr.Linkname, rebuildFix))
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			return newError(label, ErrUnsafePath, fmt.Sprintf("entry %q is a device file or pipe: a bundle holds only regular files and directories; %s", name, rebuildFix))
		default:
			return newError(label, ErrUnsafePath, fmt.Sprintf("entry %q has tar type %q: a bundle holds only regular files and directories; %s", name, hdr.Typeflag, rebuildFix))
		}
	}
	// archive/tar takes a stream that ends between entries for a whole
	// archive. Only when tar stopped at its end marker, before asking for
	// bytes that were not there, is the archive whole.
	if stream.short {
		return archiveError(label, lim, io.ErrUnexpectedEOF)
	}
	// Read to the end so that gzip checks its checksum and length: a damaged
	// tail must refuse the archive too.
	if _, err := io.Copy(io.Discard, stream); err != nil {
		return archiveError(label, lim, err)
	}
	return nil
}

// isSparse reports whether hdr is a GNU sparse file, in the old GNU format
// (type 'S') or in one of the PAX formats, which archive/tar reports as
// regular files of their expanded size.
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// entryName checks an entry's name and returns it cleaned and relative.
func entryName(label string, hdr *tar.Header) (string, error) {
	name := hdr.Name
	switch {
	case name == "":
		return "", newError(label, ErrUnsafePath, "the archive has an entry without a name: "+rebuildFix)
	case strings.HasPrefix(name, "/"):
		return "", newError(label, ErrUnsafePath, fmt.Sprintf("entry %q has an absolute path: %s", name, rebuildFix))
	case !filepath.IsLocal(name):
		return "", newError(label, ErrUnsafePath, fmt.Sprintf("entry %q points outside the bundle: %s", name, rebuildFix))
	}
	return path.Clean(name), nil
}

// writeEntry writes one regular file. It keeps the entry's execute and read
// bits, lets the owner read and write, and no one else write.
func writeEntry(root *os.Root, label, name string, hdr *tar.Header, tr *tar.Reader, lim limits) error {
	if parent := path.Dir(name); parent != "." {
		if err := root.MkdirAll(parent, 0o755); err != nil {
			return entryWriteError(label, name, err)
		}
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return entryWriteError(label, name, err)
	}
	_, err = io.Copy(writerOnly{f}, tr)
	var we writeErr
	switch {
	case errors.As(err, &we):
		f.Close()
		return osError(label, fmt.Sprintf("cannot write entry %q", name), we.error)
	case err != nil:
		f.Close()
		return archiveError(label, lim, err)
	}
	perm := fs.FileMode(hdr.Mode).Perm()&0o755 | 0o600
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return osError(label, fmt.Sprintf("cannot set mode of entry %q", name), err)
	}
	if err := f.Close(); err != nil {
		return osError(label, fmt.Sprintf("cannot write entry %q", name), err)
	}
	return nil
}

// entryWriteError reports a failure to create an entry: a clash with another
// entry is the archive's fault, anything else the file system's.
func entryWriteError(label, name string, err error) error {
	if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTDIR) {
		return newError(label, ErrUnsafePath, fmt.Sprintf("entry %q appears twice or clashes with another entry: %s", name, rebuildFix))
	}
	return osError(label, fmt.Sprintf("cannot create entry %q", name), err)
}

// archiveError reports an error reading the archive.
func archiveError(label string, lim limits, err error) error {
	if errors.Is(err, errStreamCap) {
		return newError(label, ErrTooLarge, fmt.Sprintf("the archive unpacks to more than %s: a bundle holds %s and the executable; keep it smaller", formatBytes(lim.total), ManifestFile))
	}
	e := newError(label, ErrCorruptArchive, fmt.Sprintf("corrupt archive (%v): the file is damaged, truncated or not a gzip-compressed tar; copy it again or %s", err, rebuildFix))
	e.cause = err
	return e
}

// cappedReader fails with errStreamCap once more than left bytes are read,
// and remembers whether a read met the end of the stream before it had all
// the bytes it asked for. archive/tar never asks for more than it needs.
type cappedReader struct {
	r     io.Reader
	left  int64
	short bool
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n > 0 {
			return 0, errStreamCap
		}
		c.short = c.short || err == io.EOF
		return 0, err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	c.short = c.short || (err == io.EOF && n < len(p))
	return n, err
}

// writeErr marks an error as the destination's, not the archive's.
type writeErr struct{ error }

func (e writeErr) Unwrap() error { return e.error }

// writerOnly hides ReadFrom so that io.Copy reports write errors as writeErr.
type writerOnly struct{ f *os.File }

func (w writerOnly) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		return n, writeErr{err}
	}
	return n, nil
}
