package test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// tarGz writes a gzipped tar of files (name → content); names ending in
// the executable's name get mode 0755.
func tarGz(t *testing.T, path string, files map[string][]byte, exe string) string {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, data := range files {
		mode := int64(0o644)
		if name == exe {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// manifestJSON is a valid manifest for an executable with digest.
func manifestJSON(name, version, digest string, extra map[string]any) []byte {
	m := map[string]any{
		"name": name, "version": version, "api_versions": []int{1}, "executable": name,
		"sha256": digest, "services": []string{"echo.v1.EchoService"},
	}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

// fixtureBundle builds a fixture plugin as name@version and bundles it.
func fixtureBundle(t *testing.T, dir, name, version string) string {
	t.Helper()
	exe := fixture(t, dir, name, version)
	out, err := bundle.Build(exe, &bundle.Manifest{Name: name, Version: version, APIVersions: []int{1}, Services: []string{"echo.v1.EchoService"}}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBadBundlesAreRefused drops one bad bundle after another into a running
// agent. Each must be moved aside with a reason that names what is wrong,
// while echo keeps serving and nothing bad gets registered.
func TestBadBundlesAreRefused(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{Config: `{"start_timeout": "2s"}`})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")

	// The real echo executable, to build bundles whose only fault is the one
	// under test.
	good, err := bundle.Verify(bundlePath("echo", "1.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	unpacked := t.TempDir()
	b, err := bundle.Open(bundlePath("echo", "1.0.0"), unpacked)
	if err != nil {
		t.Fatal(err)
	}
	echoExe, err := os.ReadFile(b.Executable)
	if err != nil {
		t.Fatal(err)
	}
	digest := good.SHA256
	dir := t.TempDir()

	cases := []struct {
		name   string
		make   func() string
		reason []string
	}{
		{"corrupt tarball", func() string {
			p := filepath.Join(dir, "echo-2.0.0.tar.gz")
			data, _ := os.ReadFile(bundlePath("echo", "1.0.0"))
			os.WriteFile(p, data[:len(data)/2], 0o644)
			return p
		}, []string{"echo-2.0.0.tar.gz", "corrupt"}},
		{"missing manifest", func() string {
			return tarGz(t, filepath.Join(dir, "echo-2.0.1.tar.gz"), map[string][]byte{"echo": echoExe}, "echo")
		}, []string{"echo-2.0.1.tar.gz", "plugin.json"}},
		{"unknown manifest field", func() string {
			return tarGz(t, filepath.Join(dir, "echo-2.0.2.tar.gz"), map[string][]byte{
				"plugin.json": manifestJSON("echo", "2.0.2", digest, map[string]any{"colour": "blue"}), "echo": echoExe}, "echo")
		}, []string{"echo-2.0.2.tar.gz", `unknown field "colour"`}},
		{"bad semver", func() string {
			return tarGz(t, filepath.Join(dir, "echo-2.1.tar.gz"), map[string][]byte{
				"plugin.json": manifestJSON("echo", "2.1", digest, nil), "echo": echoExe}, "echo")
		}, []string{"echo-2.1.tar.gz", `"2.1"`, "semver"}},
		{"name and file name disagree", func() string {
			return tarGz(t, filepath.Join(dir, "echo-2.0.4.tar.gz"), map[string][]byte{
				"plugin.json": manifestJSON("echo", "2.0.3", digest, nil), "echo": echoExe}, "echo")
		}, []string{"echo-2.0.4.tar.gz", "echo-2.0.3.tar.gz"}},
		{"wrong digest", func() string {
			return tarGz(t, filepath.Join(dir, "echo-2.0.5.tar.gz"), map[string][]byte{
				"plugin.json": manifestJSON("echo", "2.0.5", strings.Repeat("ab", 32), nil), "echo": echoExe}, "echo")
		}, []string{"echo-2.0.5.tar.gz", "sha256", "abababababab"}},
		{"api version with no overlap", func() string {
			return tarGz(t, filepath.Join(dir, "echo-2.0.6.tar.gz"), map[string][]byte{
				"plugin.json": manifestJSON("echo", "2.0.6", digest, map[string]any{"api_versions": []int{2}}), "echo": echoExe}, "echo")
		}, []string{"echo-2.0.6.tar.gz", "[2]", "[1]"}},
		{"reserved service", func() string {
			return tarGz(t, filepath.Join(dir, "echo-2.0.8.tar.gz"), map[string][]byte{
				"plugin.json": manifestJSON("echo", "2.0.8", digest, map[string]any{"services": []string{"grpc.health.v1.Health"}}), "echo": echoExe}, "echo")
		}, []string{"echo-2.0.8.tar.gz", `"grpc.health.v1.Health" is reserved`, "go-plugin serves it", "sdk.HealthChecker"}},
		{"GNU sparse entry", func() string {
			// 506 bytes that archive/tar would expand to 942 MiB.
			data, err := os.ReadFile(filepath.Join(repoRoot(), "host", "bundle", "testdata", "sparse-pax.tar.gz"))
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "echo-1.2.0.tar.gz")
			os.WriteFile(p, data, 0o644)
			return p
		}, []string{"echo-1.2.0.tar.gz", "GNU sparse file entry", "without --sparse"}},
		{"entry declared larger than the limit", func() string {
			p := filepath.Join(dir, "echo-2.0.7.tar.gz")
			os.WriteFile(p, hugeEntry(t, "echo", 2<<30), 0o644)
			return p
		}, []string{"echo-2.0.7.tar.gz", "is 2 GiB, more than the 1 GiB limit for one file"}},
		{"not a plugin (wrong cookie)", func() string {
			return fixtureBundle(t, "wrongcookie", "wrongcookie", "1.0.0")
		}, []string{"wrongcookie-1.0.0.tar.gz", "not a plughost plugin"}},
		{"exits at start", func() string {
			return fixtureBundle(t, "exitatstart", "exitatstart", "1.0.0")
		}, []string{"exitatstart-1.0.0.tar.gz", "exited with status 3"}},
		{"never finishes the handshake", func() string {
			return fixtureBundle(t, "nohandshake", "nohandshake", "1.0.0")
		}, []string{"nohandshake-1.0.0.tar.gz", "no handshake within 2s"}},
		{"same version, other digest", func() string {
			exe := filepath.Join(t.TempDir(), "echo")
			// The same version built stripped is another binary.
			if err := goBuild("./plugins/echo", exe, "1.0.0 -s -w", ""); err != nil {
				t.Fatal(err)
			}
			p, err := bundle.Build(exe, &bundle.Manifest{Name: "echo", Version: "1.0.0", APIVersions: []int{1}, Services: []string{"echo.v1.EchoService"}}, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{"echo-1.0.0.tar.gz", "already registered", "immutable"}},
	}
	echo := echov1.NewEchoServiceClient(a.Conn())
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.make()
			a.Drop(src)
			reason := waitRefused(t, a, filepath.Base(src))
			for _, want := range tc.reason {
				if !strings.Contains(reason, want) {
					t.Errorf("reason %q does not contain %q", reason, want)
				}
			}
			// What ran keeps running, and nothing was registered.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "still here"})
			if err != nil || resp.GetVersion() != "1.0.0" {
				t.Fatalf("echo after refusal: %v (version %q)", err, resp.GetVersion())
			}
			vs, err := a.Operator().ListVersions(ctx, &operatorv1.ListVersionsRequest{Name: "echo"})
			if err != nil || len(vs.GetVersions()) != 1 {
				t.Fatalf("echo versions after refusal: %v %v", vs, err)
			}
		})
	}
}

// waitRefused waits for the bundle to be moved aside and returns the reason
// written beside it.
func waitRefused(t *testing.T, a *Agent, name string) string {
	t.Helper()
	refused := filepath.Join(a.DataDir, "bundles", "refused")
	var reason string
	testenv.WaitFor(t, 30*time.Second, name+" to be refused", func() error {
		entries, err := os.ReadDir(refused)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), name) && strings.HasSuffix(e.Name(), ".reason.txt") {
				b, err := os.ReadFile(filepath.Join(refused, e.Name()))
				if err != nil {
					return err
				}
				reason = string(b)
				return nil
			}
		}
		if _, err := os.Stat(filepath.Join(a.DataDir, "bundles", name)); err == nil {
			return os.ErrExist
		}
		return os.ErrNotExist
	})
	return reason
}

// TestAddBundleRefusalsAreInvalidArgument uploads archives over the limits
// through the operator API: the refusal is the bundle's fault, so it comes
// back as INVALID_ARGUMENT with the reason, not as INTERNAL.
func TestAddBundleRefusalsAreInvalidArgument(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	cases := []struct {
		name   string
		data   []byte
		reason string
	}{
		{"too many entries", manyEntries(t, 1001), "more than 1000 entries"},
		{"too large", hugeEntry(t, "echo", 2<<30), "is 2 GiB, more than the 1 GiB limit for one file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			stream, err := a.Operator().AddBundle(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&operatorv1.AddBundleRequest{Payload: &operatorv1.AddBundleRequest_FileName{FileName: "echo-3.0.0.tar.gz"}}); err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&operatorv1.AddBundleRequest{Payload: &operatorv1.AddBundleRequest_Chunk{Chunk: tc.data}}); err != nil {
				t.Fatal(err)
			}
			_, err = stream.CloseAndRecv()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("add bundle: got %v, want INVALID_ARGUMENT saying %q", err, tc.reason)
			}
		})
	}
}

// manyEntries is a gzipped tar of n empty files.
func manyEntries(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for i := range n {
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d", i), Mode: 0o644, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// hugeEntry is a small gzipped tar whose one entry declares size bytes and
// holds none of them.
func hugeEntry(t *testing.T, name string, size int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	// WriteHeader writes the header block at once; the data never follows.
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: size, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestSlowCopiesAreWaitedFor drops bundles whose writers pause halfway: one
// for a second, one for longer than the watcher's settle time while holding
// the file open. Neither may be moved while it is written, and both must be
// installed once whole.
func TestSlowCopiesAreWaitedFor(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	for _, tc := range []struct {
		name, version string
		pause         time.Duration
	}{
		{"echo", "1.0.0", time.Second},
		{"counter", "1.0.0", 3 * time.Second},
	} {
		slowDrop(t, a, bundlePath(tc.name, tc.version), tc.pause)
		a.WaitRunning(tc.name, tc.version)
	}
	if entries, _ := os.ReadDir(filepath.Join(a.DataDir, "bundles", "refused")); len(entries) > 0 {
		t.Errorf("refused %v", entries)
	}
}

// slowDrop writes the bundle at src straight into the agent's bundles dir:
// half of it, a pause, then the rest. During the pause the half-written file
// must stay where it is.
func slowDrop(t *testing.T, a *Agent, src string, pause time.Duration) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(a.DataDir, "bundles", filepath.Base(src))
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}
	const step = 100 * time.Millisecond
	for range int(pause / step) {
		time.Sleep(step)
		if _, err := os.Stat(dst); err != nil {
			t.Fatalf("%s was moved while half written: %v", filepath.Base(dst), err)
		}
	}
	if _, err := f.Write(data[len(data)/2:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSymlinkInBundlesDirIsRefused links a valid bundle directory into the
// bundles dir. The link is moved aside with a reason; what it points at is
// neither installed nor moved.
func TestSymlinkInBundlesDirIsRefused(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	target := filepath.Join(t.TempDir(), "echo-1.0.0")
	if _, err := bundle.Open(bundlePath("echo", "1.0.0"), target); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(a.DataDir, "bundles", "echo-1.0.0")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	reason := waitRefused(t, a, "echo-1.0.0")
	for _, want := range []string{"echo-1.0.0 is a symlink to " + target, "copy or move the bundle itself"} {
		if !strings.Contains(reason, want) {
			t.Errorf("reason %q does not contain %q", reason, want)
		}
	}
	moved := filepath.Join(a.DataDir, "bundles", "refused", "echo-1.0.0")
	if fi, err := os.Lstat(moved); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("refused/echo-1.0.0 is not the link: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(target, "plugin.json")); err != nil {
		t.Errorf("the link's target changed: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Operator().ListVersions(ctx, &operatorv1.ListVersionsRequest{Name: "echo"}); status.Code(err) != codes.NotFound {
		t.Errorf("echo versions after refusal: got %v, want NotFound", err)
	}
}
