package bundle

import "errors"

// Sentinel errors. Every error this package returns about a bundle wraps one
// or more of them, so callers can tell refusals apart with errors.Is, while
// the message itself names the bundle, what is wrong and how to fix it.
//
// ErrBadName, ErrBadVersion and every other manifest problem also match
// ErrManifestInvalid. Every refusal for what the bundle is or holds, as
// opposed to a failure of the file system, also matches ErrInvalid.
var (
	// ErrInvalid: the bundle itself is at fault; it matches every refusal
	// below, so a caller can map all of them at once.
	ErrInvalid = errors.New("invalid bundle")
	// ErrNotBundle: the path is neither a directory nor a .tar.gz file.
	ErrNotBundle = errors.New("not a bundle")
	// ErrCorruptArchive: the .tar.gz is not valid gzip or tar (truncated,
	// damaged, or not an archive at all).
	ErrCorruptArchive = errors.New("corrupt bundle archive")
	// ErrUnsafePath: the archive or directory holds an entry that could
	// escape the bundle or is not a plain file or directory: an absolute or
	// ".." path, a symlink, a hard link, a device file, a duplicate entry.
	ErrUnsafePath = errors.New("unsafe bundle entry")
	// ErrTooLarge: the bundle unpacks to more than the size or entry limits.
	ErrTooLarge = errors.New("bundle too large")
	// ErrManifestMissing: there is no plugin.json at the top of the bundle.
	ErrManifestMissing = errors.New("bundle manifest missing")
	// ErrManifestInvalid: plugin.json is not valid JSON, has an unknown or
	// duplicate field, a value of the wrong type or out of bounds.
	ErrManifestInvalid = errors.New("bundle manifest invalid")
	// ErrBadName: the manifest's name is not ^[a-z][a-z0-9-]{0,62}$.
	ErrBadName = errors.New("bad plugin name")
	// ErrBadVersion: the manifest's version is not strict semver 2.0.
	ErrBadVersion = errors.New("bad plugin version")
	// ErrNameMismatch: the bundle's file or directory name does not agree
	// with the name and version in plugin.json.
	ErrNameMismatch = errors.New("bundle name mismatch")
	// ErrExecutableMissing: the executable named in plugin.json is not in the
	// bundle.
	ErrExecutableMissing = errors.New("bundle executable missing")
	// ErrNotExecutable: the executable is not a regular file or has no
	// execute permission.
	ErrNotExecutable = errors.New("bundle executable not executable")
	// ErrDigestMismatch: the executable's SHA-256 differs from plugin.json's.
	ErrDigestMismatch = errors.New("bundle digest mismatch")
	// ErrAPIVersion: the bundle and the agent share no plugin API version.
	ErrAPIVersion = errors.New("plugin API version mismatch")
	// ErrUnsigned: the agent trusts publisher keys and the bundle has no
	// plugin.sig.
	ErrUnsigned = errors.New("bundle not signed")
	// ErrUntrustedKey: the bundle is signed by a key the agent does not
	// trust.
	ErrUntrustedKey = errors.New("bundle signed by an untrusted key")
	// ErrBadSignature: plugin.sig is malformed or does not verify: the
	// manifest or the executable changed after signing, or it was made for
	// another bundle.
	ErrBadSignature = errors.New("bad bundle signature")
)

// bundleError is an error about one bundle. Its message is the whole text an
// operator reads; the sentinels it matches are not repeated in it.
type bundleError struct {
	bundle string  // base name of the bundle; "" when not known yet
	msg    string  // what is wrong and the fix
	kinds  []error // sentinels it matches
	cause  error   // underlying error, or nil
}

func (e *bundleError) Error() string {
	if e.bundle == "" {
		return e.msg
	}
	return "bundle " + e.bundle + ": " + e.msg
}

func (e *bundleError) Unwrap() []error {
	errs := append([]error(nil), e.kinds...)
	if len(e.kinds) > 0 {
		errs = append(errs, ErrInvalid)
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

// newError returns an error about bundle that matches kind.
func newError(bundle string, kind error, msg string) *bundleError {
	return &bundleError{bundle: bundle, msg: msg, kinds: []error{kind}}
}

// manifestError returns a manifest problem: it matches ErrManifestInvalid and,
// when kind is not nil, kind as well.
func manifestError(kind error, msg string) *bundleError {
	kinds := []error{ErrManifestInvalid}
	if kind != nil {
		kinds = []error{kind, ErrManifestInvalid}
	}
	return &bundleError{msg: msg, kinds: kinds}
}

// withBundle names bundle in err unless err already names one.
func withBundle(bundle string, err error) error {
	if be, ok := err.(*bundleError); ok {
		if be.bundle != "" {
			return err
		}
		named := *be
		named.bundle = bundle
		return &named
	}
	return &bundleError{bundle: bundle, msg: err.Error(), cause: err}
}
