package acl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/prometheus/procfs"

	"github.com/plughost/plughost/store"
)

// TokenFileName is the file in a dev agent's data dir that holds its
// management token's secret (mode 0600).
const TokenFileName = "acl-token"

// A dev agent records, for the CLI on the same host, where its token file
// is: one small file per loopback API address in a directory of the user's
// own (RegistryDir), naming the token file and the agent's process. The
// CLI looks there when it is given no token, so `plughost plugin list`
// works against `plughost agent -dev` with no flags. The token itself
// stays in the agent's data dir, readable by the agent's user alone.
//
// The CLI sends a recorded token only to the loopback address it was
// recorded for, and only when the process that recorded it is still the
// one listening there: records outlive an agent killed with -9, and
// anyone on the host may bind a port it freed.

// RegistryDir is the directory of the current user's dev agent records
// (mode 0700): dev-tokens in $XDG_RUNTIME_DIR/plughost, else in
// /run/plughost for root, else in plughost-UID in the temp dir. Not the
// parent itself: root's agents share /run/plughost (0711) with their
// plugins' socket dirs.
func RegistryDir() string {
	base := filepath.Join(os.TempDir(), fmt.Sprintf("plughost-%d", os.Geteuid()))
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		base = filepath.Join(d, "plughost")
	} else if os.Geteuid() == 0 {
		base = "/run/plughost"
	}
	return filepath.Join(base, "dev-tokens")
}

// devRecord is what a dev agent records for the CLI.
type devRecord struct {
	TokenFile string `json:"token_file"`
	PID       int    `json:"pid"`
	// StartTime is field 22 of /proc/PID/stat: with PID, it names one
	// process even after the PID is reused.
	StartTime uint64 `json:"start_time"`
}

// loopbackIPs are the loopback IPs a CLI dialing host reaches, or nil
// when host is not a loopback address (the CLI then finds no token).
func loopbackIPs(host string) []net.IP {
	if strings.EqualFold(host, "localhost") {
		return []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return nil
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return []net.IP{ip}
}

// recordKey is the record name of a loopback IP and port.
func recordKey(ip net.IP, port string) string {
	return "api_" + strings.ReplaceAll(ip.String(), ":", "_") + "_" + port
}

// agentKeys are the names an agent listening on apiAddr is recorded
// under: its loopback address, or the loopback form of a wildcard one
// (0.0.0.0 is 127.0.0.1; :: is ::1 and, dual-stack, 127.0.0.1 too).
func agentKeys(apiAddr string) ([]string, error) {
	host, port, err := net.SplitHostPort(apiAddr)
	if err != nil || port == "" || port == "0" {
		return nil, fmt.Errorf("API address %q has no port", apiAddr)
	}
	ip := net.ParseIP(host)
	var ips []net.IP
	switch {
	case host == "" || (ip != nil && ip.Equal(net.IPv6unspecified)):
		ips = []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	case ip != nil && ip.IsUnspecified():
		ips = []net.IP{net.IPv4(127, 0, 0, 1).To4()}
	default:
		ips = loopbackIPs(host)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("API address %s is neither loopback nor a wildcard: the CLI sends a dev token to loopback addresses only", apiAddr)
	}
	keys := make([]string, len(ips))
	for i, ip := range ips {
		keys[i] = recordKey(ip, port)
	}
	return keys, nil
}

// ownDir checks that dir is a directory of the current user's that no one
// else may use (mode 0700), in a parent no one else may write in, making
// it if it is missing.
func ownDir(dir string, make bool) error {
	if make {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	parent := filepath.Dir(dir)
	if fi, err := os.Lstat(parent); err != nil {
		return err
	} else if st, ok := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || !ok || (int(st.Uid) != os.Geteuid() && st.Uid != 0) || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is not a directory of this user's that only it may write in", parent)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	case !ok:
		return fmt.Errorf("%s: cannot read its owner on this system", dir)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s belongs to uid %d, not to this user (uid %d)", dir, st.Uid, os.Geteuid())
	case fi.Mode().Perm() != 0o700:
		return fmt.Errorf("%s has mode %v, not 0700", dir, fi.Mode().Perm())
	}
	return nil
}

// readRecord reads a record, refusing anything but a regular file of the
// current user's (a symlink included: it is not followed).
func readRecord(path string) (devRecord, error) {
	var rec devRecord
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return rec, fmt.Errorf("%s is a symlink, not a record", path)
		}
		return rec, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return rec, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return rec, fmt.Errorf("%s is not a regular file", path)
	case !ok || int(st.Uid) != os.Geteuid():
		return rec, fmt.Errorf("%s does not belong to this user (uid %d)", path, os.Geteuid())
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil || rec.TokenFile == "" || rec.PID <= 0 {
		return rec, fmt.Errorf("%s is not a dev agent record", path)
	}
	return rec, nil
}

// processStart is field 22 of /proc/PID/stat (start time after boot).
func processStart(pid int) (uint64, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, err
	}
	return st.Starttime, nil
}

// RecordTokenFile records that this process, an agent listening on
// apiAddr, keeps its token in path, for the CLI of the same user on this
// host. It returns the records written.
func RecordTokenFile(apiAddr, path string) (string, error) {
	keys, err := agentKeys(apiAddr)
	if err != nil {
		return "", err
	}
	if runtime.GOOS != "linux" {
		return "", fmt.Errorf("the CLI checks who listens on an address through /proc, which %s does not have", runtime.GOOS)
	}
	start, err := processStart(os.Getpid())
	if err != nil {
		return "", fmt.Errorf("dev token record: this process's start time: %w", err)
	}
	b, err := json.Marshal(devRecord{TokenFile: path, PID: os.Getpid(), StartTime: start})
	if err != nil {
		return "", err
	}
	dir := RegistryDir()
	if err := ownDir(dir, true); err != nil {
		return "", fmt.Errorf("dev token record: %w", err)
	}
	var recs []string
	for _, k := range keys {
		rec := filepath.Join(dir, k)
		if err := writeFile0600(rec, append(b, '\n')); err != nil {
			return "", fmt.Errorf("dev token record: %w", err)
		}
		recs = append(recs, rec)
	}
	return strings.Join(recs, ", "), nil
}

// ForgetTokenFile removes the records of apiAddr this process wrote for
// path.
func ForgetTokenFile(apiAddr, path string) {
	keys, _ := agentKeys(apiAddr)
	for _, k := range keys {
		rec := filepath.Join(RegistryDir(), k)
		if r, err := readRecord(rec); err == nil && r.TokenFile == path && r.PID == os.Getpid() {
			_ = os.Remove(rec)
		}
	}
}

// FindToken returns the token a dev agent of this user on this host
// recorded for addr, the address the CLI dials, or "" when there is none.
// Only a loopback addr is looked up, and a record is used only when the
// process that wrote it is alive and owns the listening socket at addr.
// A record removed as stale (its agent is gone) counts as none; warn says
// why a record that is there was not used.
func FindToken(addr string) (secret string, warn error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil
	}
	ips := loopbackIPs(host)
	if len(ips) == 0 {
		return "", nil
	}
	dir := RegistryDir()
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err := ownDir(dir, false); err != nil {
		return "", fmt.Errorf("dev agent records not used: %w", err)
	}
	for _, ip := range ips {
		path := filepath.Join(dir, recordKey(ip, port))
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		rec, err := readRecord(path)
		if err != nil {
			return "", fmt.Errorf("dev agent record not used: %w", err)
		}
		if err := checkListener(rec, ips, port); err != nil {
			if errors.Is(err, errGone) {
				_ = os.Remove(path)
				continue
			}
			return "", fmt.Errorf("dev agent record %s for %s not used: %w", path, addr, err)
		}
		s, err := ReadTokenFile(rec.TokenFile)
		if err != nil {
			return "", fmt.Errorf("dev agent record %s: %w", path, err)
		}
		return s, nil
	}
	return "", nil
}

// errGone says the process that wrote a record is gone.
var errGone = errors.New("the agent that wrote it is gone")

// checkListener checks that rec's process is alive (the same one: same
// start time) and that every socket listening where a dial of ips:port
// may land is its own, and that there is one.
func checkListener(rec devRecord, ips []net.IP, port string) error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("cannot check that the agent still owns the address: %s has no /proc; give -token or -token-file", runtime.GOOS)
	}
	start, err := processStart(rec.PID)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errGone
	case err != nil:
		return fmt.Errorf("cannot check that the agent (pid %d) is alive: %w; give -token or -token-file", rec.PID, err)
	case start != rec.StartTime:
		return errGone
	}
	pfs, err := procfs.NewDefaultFS()
	if err != nil {
		return fmt.Errorf("cannot read /proc: %w; give -token or -token-file", err)
	}
	p, err := pfs.Proc(rec.PID)
	if err != nil {
		return fmt.Errorf("cannot check that the agent (pid %d) is alive: %w; give -token or -token-file", rec.PID, err)
	}
	fds, err := p.FileDescriptorTargets()
	if err != nil {
		return fmt.Errorf("cannot read the agent's (pid %d) open files: %w; give -token or -token-file", rec.PID, err)
	}
	own := map[string]bool{}
	for _, t := range fds {
		own[t] = true
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("port %q: %w", port, err)
	}
	var socks procfs.NetTCP
	for _, read := range []func() (procfs.NetTCP, error){pfs.NetTCP, pfs.NetTCP6} {
		lines, err := read()
		if errors.Is(err, fs.ErrNotExist) {
			continue // no IPv6 on this host
		}
		if err != nil {
			return fmt.Errorf("cannot read who listens on port %s: %w; give -token or -token-file", port, err)
		}
		socks = append(socks, lines...)
	}
	listeners := 0
	for _, s := range socks {
		if s.St != tcpListen || s.LocalPort != pn || !reaches(s.LocalAddr, ips) {
			continue
		}
		if !own[fmt.Sprintf("socket:[%d]", s.Inode)] {
			return fmt.Errorf("the socket listening on %s port %d (inode %d) is not the agent's (pid %d): another process may have taken the port", s.LocalAddr, pn, s.Inode, rec.PID)
		}
		listeners++
	}
	if listeners == 0 {
		return fmt.Errorf("the agent (pid %d) is alive but nothing listens on port %s", rec.PID, port)
	}
	return nil
}

// tcpListen is TCP_LISTEN in /proc/net/tcp's st column.
const tcpListen = 0x0a

// reaches says whether a socket listening on local may take a connection
// to one of ips: it is one of them, or a wildcard of its family (a
// wildcard IPv6 socket may take IPv4 too).
func reaches(local net.IP, ips []net.IP) bool {
	if local.Equal(net.IPv6unspecified) {
		return true
	}
	for _, ip := range ips {
		if local.Equal(ip) || (local.Equal(net.IPv4zero) && ip.To4() != nil) {
			return true
		}
	}
	return false
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
