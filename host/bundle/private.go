package bundle

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// The bundle's private copy: Open never verifies a bundle where others can
// write it, so what it verified is what runs. Its directories are 0700; once
// installed, plugin.json and plugin.sig are 0400 and the executable 0500.
const (
	privateDirMode  fs.FileMode = 0o700
	privateFileMode fs.FileMode = 0o400
	privateExecMode fs.FileMode = 0o500
)

// prepareDir creates unpackDir with mode 0700, or takes it if it exists and
// is empty, and returns its absolute path.
func prepareDir(label, unpackDir string) (string, error) {
	if unpackDir == "" {
		return "", &bundleError{bundle: label, msg: "no directory to unpack or copy the bundle into"}
	}
	dir, err := filepath.Abs(unpackDir)
	if err != nil {
		return "", osError(label, "cannot resolve unpack directory", err)
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, privateDirMode); err != nil {
			return "", osError(label, "cannot create unpack directory", err)
		}
	case err != nil:
		return "", osError(label, "cannot use unpack directory", err)
	case len(entries) > 0:
		return "", &bundleError{bundle: label, msg: fmt.Sprintf("unpack directory %s is not empty: remove it first", dir)}
	}
	// MkdirAll leaves an existing directory's mode, and the umask may have
	// cut this one's: make it private either way.
	if err := os.Chmod(dir, privateDirMode); err != nil {
		return "", osError(label, "cannot make unpack directory private", err)
	}
	return dir, nil
}

// copyDirBundle copies the directory bundle src's plugin.json, plugin.sig
// (when there is one) and executable into dst, each read once: the caller
// verifies the copy, never src. The checks made on src here only give
// better messages (they name src's paths); the copy is checked again.
func copyDirBundle(src, dst, label string, lim limits) error {
	m, raw, err := readManifest(src, label, fromDir)
	if err != nil {
		return err
	}
	if err := checkName(label, fromDir, m); err != nil {
		return err
	}
	exe := filepath.Join(src, m.Executable)
	if err := checkExecutableFile(exe, label, fromDir, m.Executable); err != nil {
		return err
	}
	sig, err := readSignatureFile(src, label)
	if err != nil {
		return err
	}
	if err := writeNew(filepath.Join(dst, ManifestFile), raw, 0o600); err != nil {
		return osError(label, "cannot copy "+ManifestFile, err)
	}
	if sig != nil {
		if err := writeNew(filepath.Join(dst, SignatureFile), sig, 0o600); err != nil {
			return osError(label, "cannot copy "+SignatureFile, err)
		}
	}
	return copyExecutableFile(exe, filepath.Join(dst, m.Executable), label, m.Executable, lim)
}

// copyExecutableFile copies the regular file exe to dst, mode 0700, without
// following a symlink and without blocking on a pipe put in its place.
func copyExecutableFile(exe, dst, label, name string, lim limits) error {
	in, err := os.OpenFile(exe, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return newError(label, ErrUnsafePath, fmt.Sprintf("executable %q is a symlink: put the file itself in the bundle", name))
		}
		return osError(label, fmt.Sprintf("cannot read executable %q", name), err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return osError(label, fmt.Sprintf("cannot read executable %q", name), err)
	}
	if !fi.Mode().IsRegular() {
		return newError(label, ErrNotExecutable, fmt.Sprintf("executable %q is not a regular file (%s): %s", name, fi.Mode().Type(), rebuildFix))
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o700)
	if err != nil {
		return osError(label, fmt.Sprintf("cannot copy executable %q", name), err)
	}
	n, err := io.Copy(writerOnly{out}, io.LimitReader(in, lim.file+1))
	if err == nil && n > lim.file {
		out.Close()
		return newError(label, ErrTooLarge, fmt.Sprintf("executable %q is more than the %s limit for one file", name, formatBytes(lim.file)))
	}
	if err == nil {
		err = out.Chmod(0o700)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return osError(label, fmt.Sprintf("cannot copy executable %q", name), err)
	}
	return nil
}

// readSignatureFile returns plugin.sig in dir, or nil when there is none.
func readSignatureFile(dir, label string) ([]byte, error) {
	p := filepath.Join(dir, SignatureFile)
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, osError(label, "cannot read "+SignatureFile, err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, newError(label, ErrUnsafePath, SignatureFile+" is a symlink: put the file itself in the bundle")
	case !fi.Mode().IsRegular():
		return nil, newError(label, ErrBadSignature, SignatureFile+" is not a regular file: sign the bundle again with 'plughost bundle sign'")
	case fi.Size() > maxSignatureSize:
		return nil, newError(label, ErrBadSignature, fmt.Sprintf("%s is larger than %s: sign the bundle again with 'plughost bundle sign'", SignatureFile, formatBytes(maxSignatureSize)))
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, osError(label, "cannot read "+SignatureFile, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSignatureSize+1))
	if err != nil {
		return nil, osError(label, "cannot read "+SignatureFile, err)
	}
	if len(data) > maxSignatureSize {
		return nil, newError(label, ErrBadSignature, fmt.Sprintf("%s is larger than %s: sign the bundle again with 'plughost bundle sign'", SignatureFile, formatBytes(maxSignatureSize)))
	}
	return data, nil
}

// writeNew writes data to a new file at path.
func writeNew(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// InstallTo moves the bundle's private copy to dest, replacing whatever an
// interrupted earlier install left there, and points b at it: dest holds
// plugin.json and plugin.sig as Open read them (0400) and the executable
// (0500), in a 0700 directory whose parents are created 0700. The
// executable is renamed, not copied, so the file that runs from dest is the
// very file whose digest Open checked. Only when b's copy is on another file
// system is it copied, and then checked again.
func (b *Bundle) InstallTo(dest string) error {
	if err := os.MkdirAll(filepath.Dir(dest), privateDirMode); err != nil {
		return err
	}
	tmp := dest + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.Mkdir(tmp, privateDirMode); err != nil {
		return err
	}
	if err := writeNew(filepath.Join(tmp, ManifestFile), b.ManifestJSON, privateFileMode); err != nil {
		return err
	}
	if b.Signature != nil {
		if err := writeNew(filepath.Join(tmp, SignatureFile), b.Signature, privateFileMode); err != nil {
			return err
		}
	}
	exe := filepath.Join(tmp, b.Manifest.Executable)
	if err := moveExecutable(b.Executable, exe, b.Manifest.SHA256); err != nil {
		return err
	}
	if err := os.Chmod(exe, privateExecMode); err != nil {
		return err
	}
	if err := os.RemoveAll(dest); err != nil {
		return err
	}
	if err := os.Rename(tmp, dest); err != nil {
		return err
	}
	b.Dir, b.Executable = dest, filepath.Join(dest, b.Manifest.Executable)
	return nil
}

// moveExecutable renames src to dst; across file systems it copies and
// checks the copy's digest.
func moveExecutable(src, dst, digest string) error {
	err := os.Rename(src, dst)
	if err == nil || !errors.Is(err, syscall.EXDEV) {
		return err
	}
	if err := copyFile(src, dst, 0o700); err != nil {
		return err
	}
	got, err := Digest(dst)
	if err != nil {
		return err
	}
	if got != digest {
		return fmt.Errorf("executable %s changed while it was installed (sha256 %s, want %s): add the bundle again", src, got, digest)
	}
	return nil
}

// ReadInstalled reads the manifest and signature of the bundle InstallTo
// installed in dir, to check its signature again before it is started
// (see TrustedKeys.Check). The executable is not read: its digest is
// checked when it is started.
func ReadInstalled(dir string) (*Bundle, error) {
	label := "installed in " + dir
	m, raw, err := readManifest(dir, label, fromDir)
	if err != nil {
		return nil, err
	}
	sig, err := readSignatureFile(dir, label)
	if err != nil {
		return nil, err
	}
	return &Bundle{Manifest: m, ManifestJSON: raw, Signature: sig, Dir: dir, Executable: filepath.Join(dir, m.Executable),
		Source: m.Name + "-" + m.Version}, nil
}
