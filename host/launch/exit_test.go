package launch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// script writes an executable shell script and returns a spec for it.
func script(t *testing.T, body string) Spec {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plugin")
	src := []byte("#!/bin/sh\n" + body + "\n")
	if err := os.WriteFile(path, src, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(src)
	return Spec{Plugin: "demo", Version: "1.0.0", Executable: path, SHA256: hex.EncodeToString(sum[:]), StartTimeout: 20 * time.Second}
}

// TestStartErrorsSayHowThePluginEnded starts processes that end before the
// handshake in each way, and checks that the error says how, with what the
// process wrote to stderr, and blames the SDK only when nothing else
// explains it.
func TestStartErrorsSayHowThePluginEnded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		body     string
		sentinel error
		want     []string
		not      []string
	}{
		{"killed", `echo "loading 2 GiB of state" >&2; kill -9 $$`, ErrExited,
			[]string{"plugin demo 1.0.0 died during start: killed by signal killed before its handshake", `"loading 2 GiB of state"`, "OOM kill"},
			[]string{"not a plughost plugin", "SDK"}},
		{"exits with a reason", `echo "demo: config: port must be set" >&2; exit 3`, ErrExited,
			[]string{"plugin demo 1.0.0 died during start: exited with status 3 before its handshake", `"demo: config: port must be set"`},
			[]string{"not a plughost plugin", "SDK"}},
		{"panics", `printf 'panic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/src/main.go:9 +0x1d\nexit status 2\n' >&2; exit 2`, ErrExited,
			[]string{"exited with status 2", `"panic: boom"`},
			[]string{"goroutine", "not a plughost plugin"}},
		{"silent", `exit 0`, ErrNotPlugin,
			[]string{"plugin demo 1.0.0: not a plughost plugin: it exited with status 0 without a handshake and wrote nothing to stderr", "plughost SDK"},
			[]string{"died during start"}},
		{"another host's go-plugin", `echo "This binary is a plugin. These are not meant to be executed directly." >&2; exit 1`, ErrNotPlugin,
			[]string{"not a plughost plugin: it exited with status 1, refusing plughost's handshake cookie", "plughost SDK"},
			[]string{"died during start"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inst, err := Start(context.Background(), script(t, tc.body))
			if err == nil {
				inst.Kill()
				t.Fatal("started")
			}
			if !errors.Is(err, tc.sentinel) {
				t.Errorf("error %q is not %v", err, tc.sentinel)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(msg, n) {
					t.Errorf("error %q says %q", msg, n)
				}
			}
		})
	}
}
