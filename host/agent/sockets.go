package agent

import (
	"fmt"
	"os"
	"path/filepath"
)

// socketDir is the agent's own directory for its plugins' unix sockets
// (launch.Spec.SocketDir), named after a hash of its data dir. It is in the
// system's temp dir rather than the data dir because a socket's path must
// stay under 108 bytes, which a deep data dir would not allow.
func socketDir(cfg *Config) (string, error) {
	_, sum, err := dataDirHash(cfg)
	if err != nil {
		return "", err
	}
	return filepath.Join(os.TempDir(), "plughost-sockets-"+sum), nil
}

// prepareSocketDir empties the agent's socket dir of what plugins of an
// earlier run left there (they are gone: the agent starts only once that
// run's reaper is done), and makes it again, private to the agent.
func prepareSocketDir(cfg *Config) (string, error) {
	dir, err := socketDir(cfg)
	if err != nil {
		return "", err
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("agent: removing the plugin socket dir of an earlier run %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("agent: plugin socket dir: %w", err)
	}
	return dir, nil
}
