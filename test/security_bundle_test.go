package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// Security tests of bundle intake and the catalog (issue 14, findings 3
// and 7, and publisher signatures).

// sysNamespace is the store's reserved namespace, where the catalog is.
const sysNamespace = "_sys"

// unpackedEcho returns echo 1.0.0 as a directory bundle named
// echo-1.0.0.
func unpackedEcho(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "echo-1.0.0")
	if _, err := bundle.Open(bundlePath("echo", "1.0.0"), dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestDirectoryBundleSwapNeverRuns races the swap of finding 7: a
// directory bundle's executable is replaced, by rename, right after the
// agent has read it (the first, second or third time the agent closes it
// after reading, in turn). The replacement is a script that leaves a
// marker file. The agent must never run it: it runs the private copy it
// verified, or refuses the bundle.
func TestDirectoryBundleSwapNeverRuns(t *testing.T) {
	a := NewAgent(t, AgentOptions{Config: `{"start_timeout": "5s"}`})
	src := unpackedEcho(t)
	marker := filepath.Join(t.TempDir(), "swapped-in-script-ran")
	script := "#!/bin/sh\ntouch " + marker + "\nexit 1\n"
	spare := t.TempDir() // same file system as the data dir: both are t.TempDir
	kv := storev1.NewStoreServiceClient(a.Conn())
	dst := filepath.Join(a.DataDir, "bundles", "echo-1.0.0")
	refused := filepath.Join(a.DataDir, "bundles", "refused")

	const attempts = 9
	swaps := 0
	for i := range attempts {
		after := i%3 + 1
		if err := copyTree(src, dst+".tmp"); err != nil {
			t.Fatal(err)
		}
		replacement := filepath.Join(spare, fmt.Sprintf("swap-%d", i))
		if err := os.WriteFile(replacement, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		race := swapAfterReads(t, dst+".tmp", "echo", after, replacement, filepath.Join(dst, "echo"))
		if err := os.Rename(dst+".tmp", dst); err != nil {
			t.Fatal(err)
		}
		outcome := waitIntake(t, a, kv, "echo-1.0.0", "echo", "1.0.0")
		if race.stop() {
			swaps++
		}
		t.Logf("attempt %d: swap after read %d: %s", i+1, after, outcome)
		// Clear the way for the next attempt: the bundle, its refusal and
		// its registration (so the next is probed again).
		trash := filepath.Join(spare, fmt.Sprintf("trash-%d", i))
		if err := os.Rename(dst, trash); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		os.RemoveAll(trash)
		os.RemoveAll(refused)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := kv.Delete(ctx, &storev1.DeleteRequest{Namespace: sysNamespace, Key: []byte("catalog/echo/1.0.0")})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("attempt %d: the script swapped in after the agent read the bundle ran", i+1)
		}
	}
	if swaps == 0 {
		t.Fatal("no swap was made: the test raced nothing")
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the script swapped in after the agent read the bundle ran")
	}
}

// waitIntake waits until the bundle named base was refused or plugin
// version is registered, and says which.
func waitIntake(t *testing.T, a *Agent, kv storev1.StoreServiceClient, base, plugin, version string) string {
	t.Helper()
	var outcome string
	testenv.WaitFor(t, 30*time.Second, base+" to be registered or refused", func() error {
		entries, _ := os.ReadDir(filepath.Join(a.DataDir, "bundles", "refused"))
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), base) && strings.HasSuffix(e.Name(), ".reason.txt") {
				b, _ := os.ReadFile(filepath.Join(a.DataDir, "bundles", "refused", e.Name()))
				outcome = "refused: " + strings.TrimSpace(string(b))
				return nil
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := kv.Get(ctx, &storev1.GetRequest{Namespace: sysNamespace, Key: []byte("catalog/" + plugin + "/" + version)})
		if err != nil {
			return err
		}
		if resp.GetKv() != nil {
			outcome = "registered"
			return nil
		}
		return errors.New("neither registered nor refused yet")
	})
	return outcome
}

// swapRace renames a replacement over a file once the agent has read it
// a given number of times.
type swapRace struct {
	done    chan struct{}
	swapped chan bool
}

// swapAfterReads watches dir (by inode: it may be renamed) and, the
// after-th time a reader that read the file name closes it, renames
// replacement to target at once. (Opens that read nothing, such as the
// agent's check for writers, do not count.) stop ends the watch and reports
// whether the swap was made.
func swapAfterReads(t *testing.T, dir, name string, after int, replacement, target string) *swapRace {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_ACCESS|unix.IN_CLOSE_NOWRITE); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	r := &swapRace{done: make(chan struct{}), swapped: make(chan bool, 1)}
	go func() {
		runtime.LockOSThread()
		defer unix.Close(fd)
		buf := make([]byte, 64<<10)
		closes, read := 0, false
		for {
			select {
			case <-r.done:
				r.swapped <- false
				return
			default:
			}
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if n, _ := unix.Poll(fds, 50); n <= 0 {
				continue
			}
			n, err := unix.Read(fd, buf)
			if err != nil || n <= 0 {
				continue
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				off += unix.SizeofInotifyEvent + int(ev.Len)
				if strings.TrimRight(string(nameBytes), "\x00") != name {
					continue
				}
				if ev.Mask&unix.IN_ACCESS != 0 {
					read = true
				}
				if ev.Mask&unix.IN_CLOSE_NOWRITE == 0 || !read {
					continue
				}
				read = false
				if closes++; closes == after {
					err := os.Rename(replacement, target)
					<-r.done
					r.swapped <- err == nil
					return
				}
			}
		}
	}()
	return r
}

func (r *swapRace) stop() bool {
	close(r.done)
	return <-r.swapped
}

// craftedRecord is a catalog record as Register writes it, for a manifest
// whose fields edit may set to anything: what someone who can write _sys
// could put there.
func craftedRecord(t *testing.T, name, version, executable, digest string) []byte {
	t.Helper()
	m := &bundle.Manifest{Name: name, Version: "1.0.0", APIVersions: []int{1}, Executable: name, SHA256: digest,
		Services: []string{name + ".v1.Service"}}
	m.SetDefaults()
	m.Version, m.Executable = version, executable
	b, err := json.Marshal(map[string]any{"name": name, "version": version, "sha256": digest, "manifest": m,
		"registered_at": time.Now().UTC(), "actor": "intruder"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCraftedCatalogRecordsNeverRun is finding 3: catalog records written
// straight into _sys, whose version or executable leads out of the bundle
// store or whose installed file is a symlink out of it, to a script the
// records' digests match. No record may make the agent run it; plugin
// status and events say why, and the agent keeps serving echo.
func TestCraftedCatalogRecordsNeverRun(t *testing.T) {
	a := NewAgent(t, AgentOptions{})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")

	outside := t.TempDir()
	marker := filepath.Join(t.TempDir(), "crafted-record-ran")
	script := filepath.Join(outside, "evil")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntouch "+marker+"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	digest, err := bundle.Digest(script)
	if err != nil {
		t.Fatal(err)
	}
	plugins := filepath.Join(a.DataDir, "plugins")
	up, err := filepath.Rel(filepath.Join(plugins, "escape"), outside)
	if err != nil {
		t.Fatal(err)
	}
	// A version dir of the store whose executable is a symlink out of it.
	if err := os.MkdirAll(filepath.Join(plugins, "linked", "1.0.0"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(script, filepath.Join(plugins, "linked", "1.0.0", "linked")); err != nil {
		t.Fatal(err)
	}
	records := []struct {
		plugin, key string
		value       []byte
		why         string
	}{
		{"escape", "catalog/escape/" + up, craftedRecord(t, "escape", up, "evil", digest), "is not strict semver"},
		{"absolute", "catalog/absolute/1.0.0", craftedRecord(t, "absolute", "1.0.0", "/bin/sh", digest), `executable "/bin/sh" must be a plain file name`},
		{"dotdot", "catalog/dotdot/1.0.0", craftedRecord(t, "dotdot", "1.0.0", "../../../../../../.."+script, digest), "must be a plain file name"},
		{"linked", "catalog/linked/1.0.0", craftedRecord(t, "linked", "1.0.0", "linked", digest), "resolves to " + script},
	}
	kv := storev1.NewStoreServiceClient(a.Conn())
	for _, r := range records {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := kv.Put(ctx, &storev1.PutRequest{Namespace: sysNamespace, Key: []byte(r.key), Value: r.value})
		cancel()
		if err != nil {
			t.Fatalf("writing %s: %v", r.key, err)
		}
	}
	for _, r := range records {
		testenv.WaitFor(t, 30*time.Second, r.plugin+"'s refusal to be recorded", func() error {
			if _, err := os.Stat(marker); err == nil {
				t.Fatalf("the crafted catalog record %s made the agent run a file outside its bundle store", r.key)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			resp, err := a.Operator().ListEvents(ctx, &operatorv1.ListEventsRequest{Name: r.plugin})
			if err != nil {
				return err
			}
			for _, ev := range resp.GetEvents() {
				if ev.GetType() == "refused" && strings.Contains(ev.GetReason(), r.why) {
					return nil
				}
			}
			return fmt.Errorf("no refused event saying %q in %v", r.why, resp.GetEvents())
		})
		stdout, stderr, _ := a.CLI("plugin", "status", r.plugin)
		if out := stdout + stderr; !strings.Contains(out, r.why) {
			t.Errorf("plugin status %s does not say why it does not run (%q):\n%s", r.plugin, r.why, out)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a crafted catalog record made the agent run a file outside its bundle store")
	}
	// The agent keeps serving what it runs, and takes new bundles.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := echov1.NewEchoServiceClient(a.Conn()).Echo(ctx, &echov1.EchoRequest{Message: "still here"})
	if err != nil || resp.GetVersion() != "1.0.0" {
		t.Fatalf("echo after the crafted records: %v (version %q)", err, resp.GetVersion())
	}
	if _, stderr, code := a.CLI("bundle", "add", bundlePath("counter", "1.0.0")); code != 0 {
		t.Fatalf("bundle add after the crafted records: %s", stderr)
	}
	a.WaitRunning("counter", "1.0.0")
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a crafted catalog record made the agent run a file outside its bundle store")
	}
}

// markerBundle builds name 1.0.0 whose executable is a script that leaves
// marker: it must never run.
func markerBundle(t *testing.T, name, marker string) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(exe, []byte("#!/bin/sh\ntouch "+marker+"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := bundle.Build(exe, &bundle.Manifest{Name: name, Version: "1.0.0", APIVersions: []int{1}, Services: []string{name + ".v1.Service"}}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// cli runs the plughost CLI and fails the test unless it exits 0.
func cli(t *testing.T, a *Agent, args ...string) string {
	t.Helper()
	stdout, stderr, code := a.CLI(args...)
	if code != 0 {
		t.Fatalf("plughost %s: exit %d: %s%s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// TestOnlyTrustedSignedBundlesRun: an agent with a trusted key runs a
// bundle signed with it, and refuses, before anything of them runs (not
// even the probe), bundles that are unsigned, signed by another key, or
// changed after they were signed, saying why and naming the key.
func TestOnlyTrustedSignedBundlesRun(t *testing.T) {
	buildAll(t)
	keys := t.TempDir()
	trustedPrefix, otherPrefix := filepath.Join(keys, "acme"), filepath.Join(keys, "other")
	plughost := &Agent{t: t} // the CLI alone, before there is an agent
	trustedID := strings.TrimSpace(cli(t, plughost, "bundle", "keygen", "-o", trustedPrefix))
	otherID := strings.TrimSpace(cli(t, plughost, "bundle", "keygen", "-o", otherPrefix))
	if !strings.HasPrefix(trustedID, "ed25519:") || trustedID == otherID {
		t.Fatalf("key ids %q and %q", trustedID, otherID)
	}
	a := NewAgent(t, AgentOptions{Args: []string{"-trusted-key", trustedPrefix + ".pub"}})
	marker := filepath.Join(t.TempDir(), "untrusted-bundle-ran")

	// Signed with the trusted key: registered and running.
	signed := filepath.Join(t.TempDir(), "echo-1.0.0.tar.gz")
	if err := copyTree(bundlePath("echo", "1.0.0"), signed); err != nil {
		t.Fatal(err)
	}
	if out := cli(t, a, "bundle", "sign", "-key", trustedPrefix+".key", signed); !strings.Contains(out, trustedID) {
		t.Errorf("bundle sign says %q, want the key id %s", out, trustedID)
	}
	if out := cli(t, a, "bundle", "verify", signed); !strings.Contains(out, "signed by "+trustedID) {
		t.Errorf("bundle verify says %q, want the signer %s", out, trustedID)
	}
	cli(t, a, "bundle", "add", signed)
	a.WaitRunning("echo", "1.0.0")

	// Unsigned, and signed by another key: refused at bundle add.
	unsigned := markerBundle(t, "sneaky", marker)
	other := markerBundle(t, "stranger", marker)
	cli(t, a, "bundle", "sign", "-key", otherPrefix+".key", other)
	for _, c := range []struct {
		path string
		want []string
	}{
		{unsigned, []string{"sneaky-1.0.0.tar.gz", "not signed", trustedID}},
		{other, []string{"stranger-1.0.0.tar.gz", "signed by key " + otherID, "does not trust", trustedID}},
	} {
		stdout, stderr, code := a.CLI("bundle", "add", c.path)
		if code == 0 {
			t.Fatalf("bundle add %s was accepted: %s", c.path, stdout)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("bundle add %s: %q does not say %q", filepath.Base(c.path), stderr, w)
			}
		}
	}
	if _, stderr, code := a.CLI("bundle", "verify", "-trusted-key", trustedPrefix+".pub", other); code == 0 || !strings.Contains(stderr, otherID) {
		t.Errorf("bundle verify -trusted-key of the other key's bundle: exit %d, %q", code, stderr)
	}

	// Signed with the trusted key, then its executable replaced (and the
	// manifest's digest with it): dropped into the bundles dir, refused.
	tampered := filepath.Join(t.TempDir(), "echo-1.1.0")
	if _, err := bundle.Open(bundlePath("echo", "1.1.0"), tampered); err != nil {
		t.Fatal(err)
	}
	cli(t, a, "bundle", "sign", "-key", trustedPrefix+".key", tampered)
	script := []byte("#!/bin/sh\ntouch " + marker + "\nexit 1\n")
	if err := os.WriteFile(filepath.Join(tampered, "echo"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	digest, err := bundle.Digest(filepath.Join(tampered, "echo"))
	if err != nil {
		t.Fatal(err)
	}
	manifestPath := filepath.Join(tampered, bundle.ManifestFile)
	var m map[string]any
	data, err := os.ReadFile(manifestPath)
	if err == nil {
		err = json.Unmarshal(data, &m)
	}
	if err != nil {
		t.Fatal(err)
	}
	m["sha256"] = digest
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(manifestPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	a.Drop(tampered)
	reason := waitRefused(t, a, "echo-1.1.0")
	for _, w := range []string{"echo-1.1.0", trustedID, "does not match this bundle", "changed after it was signed"} {
		if !strings.Contains(reason, w) {
			t.Errorf("refusal of the tampered bundle %q does not say %q", reason, w)
		}
	}

	if _, err := os.Stat(marker); err == nil {
		t.Fatal("an unsigned, untrusted or tampered bundle's executable ran")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vs, err := a.Operator().ListVersions(ctx, &operatorv1.ListVersionsRequest{Name: "echo"})
	if err != nil || len(vs.GetVersions()) != 1 {
		t.Fatalf("echo versions: %v %v; want 1.0.0 alone", vs, err)
	}
	for _, name := range []string{"sneaky", "stranger"} {
		if _, err := a.Operator().ListVersions(ctx, &operatorv1.ListVersionsRequest{Name: name}); err == nil {
			t.Errorf("%s was registered", name)
		}
	}
}

// TestTrustedKeysStopWhatWasInstalledUnsigned: an agent restarted with a
// trusted key does not start the unsigned bundle it installed before; the
// same version, signed, added again, runs.
func TestTrustedKeysStopWhatWasInstalledUnsigned(t *testing.T) {
	a := NewAgent(t, AgentOptions{})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")

	prefix := filepath.Join(t.TempDir(), "acme")
	id := strings.TrimSpace(cli(t, a, "bundle", "keygen", "-o", prefix))
	a.Stop()
	a.extra = append(a.extra, "-trusted-key", prefix+".pub")
	a.Start()

	testenv.WaitFor(t, 30*time.Second, "echo to be refused for want of a signature", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := a.Operator().GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: "echo"})
		if err != nil {
			return err
		}
		p := resp.GetPlugin()
		if p.GetRunningVersion() != "" {
			return fmt.Errorf("echo %s runs", p.GetRunningVersion())
		}
		if !strings.Contains(p.GetLastError(), "not signed") || !strings.Contains(p.GetLastError(), id) {
			return fmt.Errorf("last error %q does not say it is not signed by %s", p.GetLastError(), id)
		}
		return nil
	})

	signed := filepath.Join(t.TempDir(), "echo-1.0.0.tar.gz")
	if err := copyTree(bundlePath("echo", "1.0.0"), signed); err != nil {
		t.Fatal(err)
	}
	cli(t, a, "bundle", "sign", "-key", prefix+".key", signed)
	cli(t, a, "bundle", "add", signed)
	a.WaitRunning("echo", "1.0.0")
}
