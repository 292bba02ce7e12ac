package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/store"
)

// Records read back from the store are checked again, every time, as a
// bundle is at intake: whoever could write _sys must not be able to make a
// node run a file of their choosing.
var (
	// ErrInvalidRecord means a catalog record read from the store fails the
	// checks every bundle passes at intake. No node runs it.
	ErrInvalidRecord = errors.New("invalid catalog record")
	// ErrOutsideStore means a version's executable does not resolve to a
	// regular file of the agent's own inside its bundle store.
	ErrOutsideStore = errors.New("executable outside the bundle store")
)

// RecordError is a refused catalog record: its key and what is wrong.
type RecordError struct {
	Key    string
	Reason string
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("catalog record %q in %s is refused: %s; no node runs it (delete it with 'plughost store delete -ns %s %s', then add the bundle again)",
		e.Key, store.SystemNamespace, e.Reason, store.SystemNamespace, e.Key)
}

// Unwrap makes a RecordError match ErrInvalidRecord.
func (e *RecordError) Unwrap() error { return ErrInvalidRecord }

// decodeEntry decodes the catalog record at key and checks it: its
// manifest goes through bundle.ParseManifest, the strict decoding and
// validation of plugin.json at intake, and its name, version and digest
// must be the manifest's, and its key catalog/NAME/VERSION.
func decodeEntry(key, value []byte) (*Entry, error) {
	refuse := func(format string, args ...any) error {
		return &RecordError{Key: string(key), Reason: fmt.Sprintf(format, args...)}
	}
	var raw struct {
		Name         string          `json:"name"`
		Version      string          `json:"version"`
		SHA256       string          `json:"sha256"`
		Manifest     json.RawMessage `json:"manifest"`
		RegisteredAt time.Time       `json:"registered_at"`
		Actor        string          `json:"actor"`
	}
	if err := json.Unmarshal(value, &raw); err != nil {
		return nil, refuse("it is not a catalog entry (%v)", err)
	}
	if t := bytes.TrimSpace(raw.Manifest); len(t) == 0 || string(t) == "null" {
		return nil, refuse("it has no manifest")
	}
	m, err := bundle.ParseManifest(raw.Manifest)
	if err != nil {
		return nil, refuse("its manifest is invalid: %v", err)
	}
	switch {
	case raw.Name != m.Name:
		return nil, refuse("it names plugin %q but its manifest says %q", raw.Name, m.Name)
	case raw.Version != m.Version:
		return nil, refuse("it names version %q but its manifest says %q", raw.Version, m.Version)
	case raw.SHA256 != m.SHA256:
		return nil, refuse("it gives sha256 %q but its manifest says %q", raw.SHA256, m.SHA256)
	case string(key) != string(catalogKey(m.Name, m.Version)):
		return nil, refuse("it holds %s %s, whose key is %q", m.Name, m.Version, catalogKey(m.Name, m.Version))
	}
	return &Entry{Name: m.Name, Version: m.Version, SHA256: m.SHA256, Manifest: m, RegisteredAt: raw.RegisteredAt, Actor: raw.Actor}, nil
}

// ExecutableIn returns the path of e's executable in the bundle store
// storeDir, storeDir/NAME/VERSION/EXECUTABLE, after checking that it
// resolves, symlinks evaluated, to that very path (no symlink anywhere
// below storeDir), and that it is a regular file owned by the agent's user
// that no one else may write. An executable that is not there wraps
// fs.ErrNotExist: the version is not installed on this node. Anything else
// wraps ErrOutsideStore, or ErrInvalidRecord for an entry that is not
// valid, and says what to do.
func (e *Entry) ExecutableIn(storeDir string) (string, error) {
	if e.Manifest == nil || !bundle.ValidName(e.Name) || !bundle.ValidVersion(e.Version) || e.Manifest.Validate() != nil ||
		e.Name != e.Manifest.Name || e.Version != e.Manifest.Version {
		return "", &RecordError{Key: string(catalogKey(e.Name, e.Version)), Reason: "it is not a valid catalog entry"}
	}
	root, err := filepath.EvalSymlinks(storeDir)
	if err != nil {
		return "", fmt.Errorf("bundle store %s: %w", storeDir, err)
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("bundle store %s: %w", storeDir, err)
	}
	want := filepath.Join(root, e.Name, e.Version, e.Manifest.Executable)
	fix := fmt.Sprintf("remove %s and add the bundle of %s %s again", filepath.Join(root, e.Name, e.Version), e.Name, e.Version)
	got, err := filepath.EvalSymlinks(want)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s %s is not installed on this node: %w", e.Name, e.Version, err)
	}
	if err != nil {
		return "", fmt.Errorf("%s %s: executable %s: %v: %s: %w", e.Name, e.Version, want, err, fix, ErrOutsideStore)
	}
	if got != want {
		return "", fmt.Errorf("%s %s: executable %s resolves to %s, and only a file inside the bundle store %s, reached through no symlink, is run: %s: %w",
			e.Name, e.Version, want, got, root, fix, ErrOutsideStore)
	}
	fi, err := os.Lstat(want)
	if err != nil {
		return "", fmt.Errorf("%s %s: executable %s: %w", e.Name, e.Version, want, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("%s %s: executable %s is not a regular file: %s: %w", e.Name, e.Version, want, fix, ErrOutsideStore)
	case fi.Mode().Perm()&0o022 != 0:
		return "", fmt.Errorf("%s %s: executable %s is writable by others (mode %s): %s: %w", e.Name, e.Version, want, fi.Mode().Perm(), fix, ErrOutsideStore)
	case ok && int(st.Uid) != os.Geteuid():
		return "", fmt.Errorf("%s %s: executable %s belongs to uid %d, not to the agent's uid %d: %s: %w", e.Name, e.Version, want, st.Uid, os.Geteuid(), fix, ErrOutsideStore)
	}
	return want, nil
}
