package bundle

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// reasonSuffix ends the file Refuse writes beside a refused bundle.
const reasonSuffix = ".reason.txt"

// maxRefusedCopies bounds the names Refuse tries for one bundle.
const maxRefusedCopies = 10000

// Refuse moves the bundle at path (an archive or a directory) into
// refusedDir, created if needed, and writes "<moved name>.reason.txt" beside
// it with the reason and the time. If the name is taken it appends ".1",
// ".2", ... It returns the bundle's new path.
//
// Bundles are moved with rename; an archive on another file system is copied
// and then removed, a directory on another file system is an error.
func Refuse(path, refusedDir string, reason error) (string, error) {
	src := filepath.Clean(path)
	if _, err := os.Lstat(src); err != nil {
		return "", fmt.Errorf("refuse bundle: %w", err)
	}
	if err := os.MkdirAll(refusedDir, 0o755); err != nil {
		return "", fmt.Errorf("refuse bundle %s: %w", src, err)
	}
	base := filepath.Base(src)
	for i := 0; i < maxRefusedCopies; i++ {
		name := base
		if i > 0 {
			name = fmt.Sprintf("%s.%d", base, i)
		}
		dst := filepath.Join(refusedDir, name)
		// The reason file is created first and exclusively: it reserves the
		// name against another Refuse running at the same time.
		rf, err := os.OpenFile(dst+reasonSuffix, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("refuse bundle %s: %w", src, err)
		}
		if _, err := os.Lstat(dst); err == nil {
			rf.Close()
			os.Remove(rf.Name())
			continue
		}
		if err := move(src, dst); err != nil {
			rf.Close()
			os.Remove(rf.Name())
			return "", fmt.Errorf("refuse bundle %s: %w", src, err)
		}
		_, werr := io.WriteString(rf, reasonText(src, reason, time.Now()))
		if cerr := rf.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return dst, fmt.Errorf("refuse bundle %s: moved to %s but could not write why: %w", src, dst, werr)
		}
		return dst, nil
	}
	return "", fmt.Errorf("refuse bundle %s: %d refused copies of it in %s already: clean it out", src, maxRefusedCopies, refusedDir)
}

func reasonText(src string, reason error, now time.Time) string {
	why := "no reason given"
	if reason != nil {
		why = reason.Error()
	}
	if abs, err := filepath.Abs(src); err == nil {
		src = abs
	}
	return fmt.Sprintf("refused: %s\nfrom: %s\ntime: %s\nreason: %s\n",
		filepath.Base(src), src, now.UTC().Format(time.RFC3339), why)
}

// move renames src to dst, copying a regular file across file systems.
func move(src, dst string) error {
	err := os.Rename(src, dst)
	if err == nil || !errors.Is(err, syscall.EXDEV) {
		return err
	}
	fi, serr := os.Lstat(src)
	if serr != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: put the refused folder on the same file system as the bundle", err)
	}
	if err := copyFile(src, dst, fi.Mode().Perm()); err != nil {
		os.Remove(dst)
		return err
	}
	return os.Remove(src)
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
