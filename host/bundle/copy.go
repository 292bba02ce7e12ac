package bundle

import (
	"os"
	"path/filepath"
)

// CopyTo installs the bundle's manifest and executable into dest, replacing
// whatever an interrupted earlier copy left there: the files are written to
// dest+".tmp" and renamed into place.
func (b *Bundle) CopyTo(dest string) error {
	tmp := dest + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	if err := copyFile(filepath.Join(b.Dir, ManifestFile), filepath.Join(tmp, ManifestFile), 0o644); err != nil {
		return err
	}
	if err := copyFile(b.Executable, filepath.Join(tmp, b.Manifest.Executable), 0o755); err != nil {
		return err
	}
	if err := os.RemoveAll(dest); err != nil {
		return err
	}
	return os.Rename(tmp, dest)
}
