package acl

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// devSetup points RegistryDir at a fresh directory, writes a token file
// and returns its path and the secret in it.
func devSetup(t *testing.T) (tokenFile, secret string) {
	t.Helper()
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	tokenFile = filepath.Join(t.TempDir(), TokenFileName)
	secret = "dev-secret-of-this-test"
	if err := WriteTokenFile(tokenFile, secret); err != nil {
		t.Fatal(err)
	}
	return tokenFile, secret
}

// listen listens on addr in this process, as an agent would, and returns
// the port.
func listen(t *testing.T, network, addr string) string {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { l.Close() })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// writeRecord writes a record by hand, as an agent with pid would.
func writeRecord(t *testing.T, key string, rec devRecord) string {
	t.Helper()
	if err := ownDir(RegistryDir(), true); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rec)
	path := filepath.Join(RegistryDir(), key)
	if err := writeFile0600(path, b); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFindTokenOfOwnAgentOnLoopback(t *testing.T) {
	tokenFile, secret := devSetup(t)
	port := listen(t, "tcp4", "127.0.0.1:0")
	if _, err := RecordTokenFile("127.0.0.1:"+port, tokenFile); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"127.0.0.1:" + port, "localhost:" + port} {
		if s, warn := FindToken(addr); s != secret || warn != nil {
			t.Errorf("FindToken(%s) = %q, %v; want the agent's token", addr, s, warn)
		}
	}
	// A clean stop removes the record.
	ForgetTokenFile("127.0.0.1:"+port, tokenFile)
	if s, _ := FindToken("127.0.0.1:" + port); s != "" {
		t.Errorf("after ForgetTokenFile: FindToken = %q", s)
	}
}

// A remote host is never sent a local agent's token, whatever the agent
// listens on (a wildcard included) and whatever spelling of the port.
func TestFindTokenNeverForARemoteHost(t *testing.T) {
	tokenFile, _ := devSetup(t)
	port := listen(t, "tcp4", "0.0.0.0:0")
	if _, err := RecordTokenFile("0.0.0.0:"+port, tokenFile); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"prod.example.com:" + port, "10.1.2.3:" + port, "0.0.0.0:" + port, "[::]:" + port, ":" + port, "[2001:db8::1]:" + port} {
		if s, _ := FindToken(addr); s != "" {
			t.Errorf("FindToken(%s) sent the local agent's token", addr)
		}
	}
	// Even a record made (by hand, or by an older agent) under a
	// remote-looking name is not used for that host.
	writeRecord(t, "api_prod.example.com_"+port, devRecord{TokenFile: tokenFile, PID: os.Getpid(), StartTime: ownStart(t)})
	if s, _ := FindToken("prod.example.com:" + port); s != "" {
		t.Errorf("FindToken(prod.example.com) used a record for it")
	}
	// An agent on a non-loopback address is not recorded at all.
	if _, err := RecordTokenFile("10.1.2.3:"+port, tokenFile); err == nil {
		t.Errorf("RecordTokenFile(10.1.2.3) recorded a non-loopback address")
	}
}

// An agent bound to a wildcard is found through its loopback form.
func TestFindTokenOfWildcardAgentViaLoopback(t *testing.T) {
	tokenFile, secret := devSetup(t)
	port := listen(t, "tcp4", "0.0.0.0:0")
	if _, err := RecordTokenFile("0.0.0.0:"+port, tokenFile); err != nil {
		t.Fatal(err)
	}
	if s, warn := FindToken("127.0.0.1:" + port); s != secret {
		t.Errorf("FindToken(127.0.0.1) = %q, %v; want the wildcard agent's token", s, warn)
	}

	port6 := listen(t, "tcp", "[::]:0")
	if _, err := RecordTokenFile("[::]:"+port6, tokenFile); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"127.0.0.1:" + port6, "[::1]:" + port6} {
		if s, warn := FindToken(addr); s != secret {
			t.Errorf("FindToken(%s) = %q, %v; want the [::] agent's token", addr, s, warn)
		}
	}
}

// A record of an agent that is gone (killed with -9) is ignored and
// removed, and so is one whose pid was reused by a later process.
func TestFindTokenDeadAgentRecordRemoved(t *testing.T) {
	tokenFile, _ := devSetup(t)
	port := listen(t, "tcp4", "127.0.0.1:0")
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	key := recordKey(net.IPv4(127, 0, 0, 1).To4(), port)
	for _, rec := range []devRecord{
		{TokenFile: tokenFile, PID: dead.Process.Pid, StartTime: 1},
		{TokenFile: tokenFile, PID: os.Getpid(), StartTime: ownStart(t) + 1}, // pid reused
	} {
		path := writeRecord(t, key, rec)
		if s, warn := FindToken("127.0.0.1:" + port); s != "" || warn != nil {
			t.Errorf("record of pid %d start %d: FindToken = %q, %v; want none", rec.PID, rec.StartTime, s, warn)
		}
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("stale record of pid %d start %d not removed (%v)", rec.PID, rec.StartTime, err)
		}
	}
}

// A record whose process is alive but does not own the listener (another
// process took the port after the agent died, the pid is someone else's)
// is ignored, with a warning, and left alone.
func TestFindTokenRecordOfProcessNotListeningIgnored(t *testing.T) {
	tokenFile, _ := devSetup(t)
	port := listen(t, "tcp4", "127.0.0.1:0") // the squatter: this test
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	start, err := processStart(other.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	path := writeRecord(t, recordKey(net.IPv4(127, 0, 0, 1).To4(), port), devRecord{TokenFile: tokenFile, PID: other.Process.Pid, StartTime: start})
	s, warn := FindToken("127.0.0.1:" + port)
	if s != "" || warn == nil || !strings.Contains(warn.Error(), "not the agent's") {
		t.Errorf("FindToken = %q, %v; want no token and a warning that the listener is not the agent's", s, warn)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the record of a live agent was removed: %v", err)
	}
	// Nothing listening on the port at all: no token either.
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, free, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	writeRecord(t, recordKey(net.IPv4(127, 0, 0, 1).To4(), free), devRecord{TokenFile: tokenFile, PID: os.Getpid(), StartTime: ownStart(t)})
	if s, warn := FindToken("127.0.0.1:" + free); s != "" || warn == nil {
		t.Errorf("nothing listening: FindToken = %q, %v; want no token and a warning", s, warn)
	}
}

// A symlinked record, and a locator dir others may use or that is a
// symlink, are ignored with a warning.
func TestFindTokenSymlinkRecordIgnored(t *testing.T) {
	tokenFile, _ := devSetup(t)
	port := listen(t, "tcp4", "127.0.0.1:0")
	key := recordKey(net.IPv4(127, 0, 0, 1).To4(), port)
	real := filepath.Join(t.TempDir(), "real-record")
	b, _ := json.Marshal(devRecord{TokenFile: tokenFile, PID: os.Getpid(), StartTime: ownStart(t)})
	if err := os.WriteFile(real, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ownDir(RegistryDir(), true); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(RegistryDir(), key)); err != nil {
		t.Fatal(err)
	}
	if s, warn := FindToken("127.0.0.1:" + port); s != "" || warn == nil || !strings.Contains(warn.Error(), "symlink") {
		t.Errorf("symlinked record: FindToken = %q, %v; want no token and a warning", s, warn)
	}

	// The same record, a regular file, but in a dir others may enter.
	os.Remove(filepath.Join(RegistryDir(), key))
	writeRecord(t, key, devRecord{TokenFile: tokenFile, PID: os.Getpid(), StartTime: ownStart(t)})
	if s, _ := FindToken("127.0.0.1:" + port); s == "" {
		t.Fatalf("the regular record is not found")
	}
	if err := os.Chmod(RegistryDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if s, warn := FindToken("127.0.0.1:" + port); s != "" || warn == nil {
		t.Errorf("locator dir 0755: FindToken = %q, %v; want no token and a warning", s, warn)
	}
	// A symlinked locator dir.
	if err := os.Chmod(RegistryDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	runtimeDir := t.TempDir()
	if err := os.Mkdir(filepath.Join(runtimeDir, "plughost"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(RegistryDir(), filepath.Join(runtimeDir, "plughost", "dev-tokens")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_RUNTIME_DIR", runtimeDir)
	if s, warn := FindToken("127.0.0.1:" + port); s != "" || warn == nil {
		t.Errorf("symlinked locator dir: FindToken = %q, %v; want no token and a warning", s, warn)
	}
}

func ownStart(t *testing.T) uint64 {
	t.Helper()
	s, err := processStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return s
}
