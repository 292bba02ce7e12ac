package acl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/plughost/plughost/store"
)

// TokenFileName is the file in a dev agent's data dir that holds its
// management token's secret (mode 0600).
const TokenFileName = "acl-token"

// A dev agent records, for the CLI on the same host, where its token file
// is: one small file per API address in a directory of the user's own
// (RegistryDir), naming the token file. The CLI looks there when it is
// given no token, so `plughost plugin list` works against `plughost agent
// -dev` with no flags. The token itself stays in the agent's data dir,
// readable by the agent's user alone.

// RegistryDir is the directory of the current user's dev agent records:
// $XDG_RUNTIME_DIR/plughost, else /run/plughost for root, else
// plughost-UID in the temp dir.
func RegistryDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "plughost")
	}
	if os.Geteuid() == 0 {
		return "/run/plughost"
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("plughost-%d", os.Geteuid()))
}

// registryKey is the record name of an API address; wildcard and
// loopback spellings of a host are made one.
func registryKey(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	switch ip := net.ParseIP(host); {
	case host == "" || (ip != nil && ip.IsUnspecified()):
		host = "any"
	case host == "localhost":
		host = "127.0.0.1"
	}
	return "api_" + strings.ReplaceAll(host, ":", "_") + "_" + port
}

// ownDir checks that dir is a directory of the current user's that no one
// else may write to, making it (0700) if it is missing.
func ownDir(dir string, make bool) error {
	if make {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	case ok && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s belongs to uid %d, not to this user (uid %d)", dir, st.Uid, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s may be written by others (mode %v)", dir, fi.Mode().Perm())
	}
	return nil
}

// RecordTokenFile records that the agent at apiAddr keeps its token in
// path, for the CLI of the same user on this host.
func RecordTokenFile(apiAddr, path string) (string, error) {
	key := registryKey(apiAddr)
	if key == "" {
		return "", fmt.Errorf("API address %q has no port", apiAddr)
	}
	dir := RegistryDir()
	if err := ownDir(dir, true); err != nil {
		return "", fmt.Errorf("dev token record: %w", err)
	}
	rec := filepath.Join(dir, key)
	if err := writeFile0600(rec, []byte(path+"\n")); err != nil {
		return "", fmt.Errorf("dev token record: %w", err)
	}
	return rec, nil
}

// ForgetTokenFile removes the record of apiAddr if it still names path.
func ForgetTokenFile(apiAddr, path string) {
	rec := filepath.Join(RegistryDir(), registryKey(apiAddr))
	if b, err := os.ReadFile(rec); err == nil && strings.TrimSpace(string(b)) == path {
		_ = os.Remove(rec)
	}
}

// FindToken returns the token of the dev agent at addr recorded by an
// agent of this user on this host, or "" when there is none.
func FindToken(addr string) string {
	dir := RegistryDir()
	if ownDir(dir, false) != nil {
		return ""
	}
	keys := []string{registryKey(addr)}
	if _, port, err := net.SplitHostPort(addr); err == nil {
		keys = append(keys, registryKey(net.JoinHostPort("", port)))
	}
	for _, k := range keys {
		if k == "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, k))
		if err != nil {
			continue
		}
		if s, err := ReadTokenFile(strings.TrimSpace(string(b))); err == nil && s != "" {
			return s
		}
	}
	return ""
}

// ReadTokenFile returns the secret in a token file.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return s, nil
}

// WriteTokenFile writes secret to path, mode 0600, replacing it whole.
func WriteTokenFile(path, secret string) error { return writeFile0600(path, []byte(secret+"\n")) }

func writeFile0600(path string, b []byte) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// EnsureDevToken makes sure the token file at path holds a management
// token of st's cluster, bootstrapping ACLs (or, when that was done,
// making another management token) if it does not. created says whether
// it wrote the file.
func EnsureDevToken(ctx context.Context, st *store.Store, r *Resolver, path string) (created bool, err error) {
	r.Reload(ctx)
	if s, err := ReadTokenFile(path); err == nil {
		if id, err := r.Resolve(s); err == nil && id.Authz.Management() && id != agentIdentity {
			return false, nil
		}
	}
	_, secret, err := Bootstrap(ctx, st)
	if errors.Is(err, ErrBootstrapped) {
		_, secret, err = CreateManagementToken(ctx, st, "dev agent management token")
	}
	if err != nil {
		return false, err
	}
	r.Reload(ctx)
	return true, WriteTokenFile(path, secret)
}
