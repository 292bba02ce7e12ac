package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// socketBase is where agents keep their plugins' unix sockets: /run/plughost
// for root (no other user may write in /run), else a directory of the
// user's own in the system's temp dir. Not the data dir: a socket's path
// must stay under 108 bytes, which a deep data dir would not allow.
func socketBase() (string, error) {
	if os.Geteuid() == 0 {
		if fi, err := os.Stat("/run"); err == nil && fi.IsDir() {
			return privateDir("/run/plughost")
		}
	}
	return privateDir(filepath.Join(os.TempDir(), fmt.Sprintf("plughost-%d", os.Geteuid())))
}

// runDirMode is the mode of the agent's socket base and socket dir: for a
// root agent, whose plugins run as other users, 0711, so that a plugin
// reaches its own directory inside by name but lists nothing; else 0700.
func runDirMode() os.FileMode {
	if os.Geteuid() == 0 {
		return 0o711
	}
	return 0o700
}

// privateDir makes dir, or takes it if it is already there as a directory
// of this user's that no one else may write in: anyone could have made a
// path in a shared temp dir first, to hand the agent a directory of theirs.
// It leaves it with runDirMode.
func privateDir(dir string) (string, error) {
	if err := os.Mkdir(dir, runDirMode()); err != nil && !os.IsExist(err) {
		return "", fmt.Errorf("agent: plugin socket dir: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("agent: plugin socket dir: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0 {
		return "", fmt.Errorf("agent: plugin socket dir %s is not a directory of this user's that only it may write in: remove it, and start the agent again", dir)
	}
	if err := os.Chmod(dir, runDirMode()); err != nil {
		return "", fmt.Errorf("agent: plugin socket dir: %w", err)
	}
	return dir, nil
}

// socketDir is the agent's own directory for its plugins' unix sockets
// (launch.Spec.SocketDir), named after a hash of its data dir.
func socketDir(cfg *Config) (string, error) {
	_, sum, err := dataDirHash(cfg)
	if err != nil {
		return "", err
	}
	base, err := socketBase()
	if err != nil {
		return "", err
	}
	return filepath.Join(base, "sockets-"+sum), nil
}

// The agent's socket dir also holds, in workDirName, its plugins' working
// dirs (see host/sandbox), so that the reaper of a killed agent removes
// them with the sockets; and the socket base holds uidLockDirName, the
// dynamic plugin uids that the machine's agents hold.
const (
	workDirName    = "work"
	uidLockDirName = "uids"
)

// prepareSocketDir empties the agent's socket dir of what plugins of an
// earlier run left there (they are gone: the agent starts only once that
// run's reaper is done), and makes it again, private to the agent. Another
// agent that stops meanwhile may remove the shared base when it looks
// empty: then it is made again.
func prepareSocketDir(cfg *Config) (string, error) {
	for attempt := 0; ; attempt++ {
		dir, err := socketDir(cfg)
		if err != nil {
			return "", err
		}
		if err := os.RemoveAll(dir); err != nil {
			return "", fmt.Errorf("agent: removing the plugin socket dir of an earlier run %s: %w", dir, err)
		}
		err = os.Mkdir(dir, runDirMode())
		if err == nil {
			return dir, os.Chmod(dir, runDirMode()) // past the umask
		}
		if !os.IsNotExist(err) || attempt == 3 {
			return "", fmt.Errorf("agent: plugin socket dir: %w", err)
		}
	}
}

// RemoveSocketDir removes an agent's socket dir, and the shared base if no
// other agent's is left in it: at the agent's stop, and by its reaper when
// it was killed. Only a directory named as socketDir names them is removed.
func RemoveSocketDir(dir string) {
	if !strings.HasPrefix(filepath.Base(dir), "sockets-") {
		return
	}
	_ = os.RemoveAll(dir)
	_ = os.Remove(filepath.Dir(dir)) // fails, harmlessly, while another agent's is there
}
