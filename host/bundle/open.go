package bundle

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/plughost/plughost/sdk/wire"
)

// Bundle is a bundle that Open has verified, in a private copy on disk: the
// unpacked archive, or the copy of a directory bundle. Executable is the
// file whose digest Open checked; nothing else of the bundle is ever run.
type Bundle struct {
	Manifest *Manifest
	// ManifestJSON is plugin.json byte for byte as verified: what a
	// signature covers, and what InstallTo writes.
	ManifestJSON []byte
	// Signature is plugin.sig as read, or nil when the bundle is unsigned.
	// Open does not check it: see Signer and TrustedKeys.Check.
	Signature  []byte
	Dir        string // absolute path of the bundle's private copy
	Executable string // absolute path of the plugin's executable inside Dir
	Source     string // the path given to Open
}

// tarSuffix ends every bundle archive's file name.
const tarSuffix = ".tar.gz"

// rebuildFix is the fix for anything wrong inside a bundle archive.
const rebuildFix = "rebuild the bundle with 'plughost bundle build'"

// FileName returns the file name of the bundle archive for a plugin version:
// "<name>-<version>.tar.gz".
func FileName(name, version string) string {
	return name + "-" + version + tarSuffix
}

// kind is what a bundle was opened from; it changes the fix an error offers.
type kind int

const (
	fromDir kind = iota
	fromTarball
)

// Open verifies the bundle at path and returns it. Nothing is verified in
// place: a .tar.gz is unpacked into unpackDir, a directory bundle's
// plugin.json, plugin.sig and executable are copied into it, and the copy is
// what is checked. unpackDir is created with mode 0700 and must be empty if
// it exists; it is removed again if the bundle is refused. A source changed
// after Open read it cannot change what the returned Bundle holds.
//
// Open checks that plugin.json is present and valid, that the file or
// directory name agrees with it (FileName(name, version) for an archive;
// "<name>-<version>" or "<name>" for a directory), that the executable is a
// regular executable file with the manifest's SHA-256, and that the bundle
// speaks a plugin API version of this agent (wire.SupportedAPIVersions).
// Archives may hold only regular files and directories within the bundle, up
// to 1 GiB in all. Every refusal wraps one of the package's sentinel errors.
func Open(path, unpackDir string) (*Bundle, error) {
	return openWith(path, unpackDir, defaultLimits)
}

func openWith(path, unpackDir string, lim limits) (*Bundle, error) {
	clean := filepath.Clean(path)
	label := filepath.Base(clean)
	fi, err := os.Stat(clean)
	if err != nil {
		return nil, osError(label, "cannot open it", err)
	}
	var (
		dir  string
		from kind
	)
	switch {
	case fi.IsDir():
		from = fromDir
		src, err := filepath.Abs(clean)
		if err != nil {
			return nil, osError(label, "cannot resolve its path", err)
		}
		label = filepath.Base(src) // "." names no bundle
		if dir, err = prepareDir(label, unpackDir); err != nil {
			return nil, err
		}
		if err := copyDirBundle(src, dir, label, lim); err != nil {
			discard(dir)
			return nil, err
		}
	case fi.Mode().IsRegular() && strings.HasSuffix(label, tarSuffix):
		from = fromTarball
		if dir, err = unpackTo(clean, label, unpackDir, lim); err != nil {
			return nil, err
		}
	default:
		return nil, newError(label, ErrNotBundle, "not a bundle: a bundle is a directory or a <name>-<version>.tar.gz file")
	}
	b, err := verifyDir(dir, label, from)
	if err != nil {
		discard(dir)
		return nil, err
	}
	b.Source = path
	return b, nil
}

// Verify checks the bundle at path as Open does, unpacking an archive into a
// temporary directory that it removes, and returns its manifest.
func Verify(path string) (*Manifest, error) {
	tmp, err := os.MkdirTemp("", "plughost-verify-*")
	if err != nil {
		return nil, fmt.Errorf("verify bundle: %w", err)
	}
	defer os.RemoveAll(tmp)
	b, err := Open(path, filepath.Join(tmp, "bundle"))
	if err != nil {
		return nil, err
	}
	return b.Manifest, nil
}

// VerifyBundle checks the bundle at path as Verify does and returns it, with
// its manifest's bytes and signature for Signer and TrustedKeys.Check. Its
// private copy is removed again: Dir and Executable are empty.
func VerifyBundle(path string) (*Bundle, error) {
	tmp, err := os.MkdirTemp("", "plughost-verify-*")
	if err != nil {
		return nil, fmt.Errorf("verify bundle: %w", err)
	}
	defer os.RemoveAll(tmp)
	b, err := Open(path, filepath.Join(tmp, "bundle"))
	if err != nil {
		return nil, err
	}
	b.Dir, b.Executable = "", ""
	return b, nil
}

// verifyDir checks the bundle's private copy in dir and returns it.
func verifyDir(dir, label string, from kind) (*Bundle, error) {
	m, raw, err := readManifest(dir, label, from)
	if err != nil {
		return nil, err
	}
	if err := checkName(label, from, m); err != nil {
		return nil, err
	}
	exe := filepath.Join(dir, m.Executable)
	if err := checkExecutable(exe, label, from, m); err != nil {
		return nil, err
	}
	if detail := apiMismatch(m, wire.SupportedAPIVersions); detail != "" {
		return nil, newError(label, ErrAPIVersion, m.Name+" "+m.Version+" "+detail)
	}
	sig, err := readSignatureFile(dir, label)
	if err != nil {
		return nil, err
	}
	return &Bundle{Manifest: m, ManifestJSON: raw, Signature: sig, Dir: dir, Executable: exe}, nil
}

// readManifest reads, parses and validates plugin.json in dir, returning it
// and its bytes.
func readManifest(dir, label string, from kind) (*Manifest, []byte, error) {
	p := filepath.Join(dir, ManifestFile)
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		msg := "no " + ManifestFile + " at the top of the archive: " + rebuildFix
		if from == fromDir {
			msg = fmt.Sprintf("no %s in %s: write one beside the executable, or make a bundle with 'plughost bundle build'", ManifestFile, dir)
		}
		return nil, nil, newError(label, ErrManifestMissing, msg)
	}
	if err != nil {
		return nil, nil, osError(label, "cannot read "+ManifestFile, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil, nil, newError(label, ErrUnsafePath, ManifestFile+" is a symlink: put the file itself in the bundle")
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, newError(label, ErrManifestMissing, ManifestFile+" is not a regular file: "+rebuildFix)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, osError(label, "cannot read "+ManifestFile, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
	if err != nil {
		return nil, nil, osError(label, "cannot read "+ManifestFile, err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, nil, withBundle(label, err)
	}
	return m, data, nil
}

// checkName checks that the bundle's file or directory name agrees with its
// manifest.
func checkName(label string, from kind, m *Manifest) error {
	says := func(what, base string) string {
		if n, v, ok := splitNameVersion(base); ok {
			return fmt.Sprintf("%s says %s %s but %s says %s %s", what, n, v, ManifestFile, m.Name, m.Version)
		}
		return fmt.Sprintf("%s %q is not <name>-<version> and %s says %s %s", what, base, ManifestFile, m.Name, m.Version)
	}
	var msg string
	switch from {
	case fromTarball:
		want := FileName(m.Name, m.Version)
		if label == want {
			return nil
		}
		msg = says("file name", strings.TrimSuffix(label, tarSuffix)) + ": rename the file to " + want
	case fromDir:
		if label == m.Name || label == m.Name+"-"+m.Version {
			return nil
		}
		msg = says("directory name", label) + fmt.Sprintf(": rename the directory to %s-%s or %s", m.Name, m.Version, m.Name)
	}
	return newError(label, ErrNameMismatch, msg)
}

// splitNameVersion splits "<name>-<version>". Names hold no dots and versions
// start with MAJOR., so the name ends at the last dash before the first dot.
func splitNameVersion(s string) (name, version string, ok bool) {
	dot := strings.IndexByte(s, '.')
	if dot < 0 {
		return "", "", false
	}
	dash := strings.LastIndexByte(s[:dot], '-')
	if dash <= 0 {
		return "", "", false
	}
	return s[:dash], s[dash+1:], true
}

// checkExecutable checks that exe is a regular, executable file with the
// manifest's digest.
func checkExecutable(exe, label string, from kind, m *Manifest) error {
	if err := checkExecutableFile(exe, label, from, m.Executable); err != nil {
		return err
	}
	name := m.Executable
	got, err := Digest(exe)
	if err != nil {
		return osError(label, fmt.Sprintf("cannot read executable %q", name), err)
	}
	if got != m.SHA256 {
		return newError(label, ErrDigestMismatch, fmt.Sprintf("executable %q has sha256 %s but %s says %s: %s", name, got, ManifestFile, m.SHA256, rebuildFix))
	}
	return nil
}

// checkExecutableFile checks that exe, named name in the manifest, is a
// regular, executable file and not a symlink.
func checkExecutableFile(exe, label string, from kind, name string) error {
	fi, err := os.Lstat(exe)
	if errors.Is(err, fs.ErrNotExist) {
		fix := rebuildFix
		if from == fromDir {
			fix = "copy it into " + filepath.Dir(exe) + " or fix \"executable\" in " + ManifestFile
		}
		return newError(label, ErrExecutableMissing, fmt.Sprintf("executable %q named in %s is not in the bundle: %s", name, ManifestFile, fix))
	}
	if err != nil {
		return osError(label, fmt.Sprintf("cannot inspect executable %q", name), err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return newError(label, ErrUnsafePath, fmt.Sprintf("executable %q is a symlink: put the file itself in the bundle", name))
	case !fi.Mode().IsRegular():
		return newError(label, ErrNotExecutable, fmt.Sprintf("executable %q is not a regular file (%s): %s", name, fi.Mode().Type(), rebuildFix))
	case fi.Mode().Perm()&0o111 == 0:
		fix := rebuildFix
		if from == fromDir {
			fix = "run chmod +x " + exe
		}
		return newError(label, ErrNotExecutable, fmt.Sprintf("executable %q is not executable (mode %s): %s", name, fi.Mode().Perm(), fix))
	}
	return nil
}

// osError reports a failure of the file system, not of the bundle.
func osError(label, what string, err error) error {
	return &bundleError{bundle: label, msg: what + ": " + err.Error(), cause: err}
}
