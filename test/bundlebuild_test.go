package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBundleBuildDirAndDevVersion: 'plughost bundle build DIR' bundles the
// one executable in DIR, and a plugin built without a version is bundled
// as 0.0.0-dev with a warning that says how to set one.
func TestBundleBuildDirAndDevVersion(t *testing.T) {
	t.Parallel()
	buildAll(t)
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "echo"), "./plugins/echo")
	cmd.Dir = repoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	out := t.TempDir()
	plughost := func(args ...string) (string, string, int) {
		c := exec.Command(filepath.Join(binDir, "plughost"), args...)
		var o, e strings.Builder
		c.Stdout, c.Stderr = &o, &e
		err := c.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return o.String(), e.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), 0
	}
	stdout, stderr, code := plughost("bundle", "build", "-o", out, dir)
	if code != 0 {
		t.Fatalf("bundle build DIR: exit %d: %s", code, stderr)
	}
	if want := filepath.Join(out, "echo-0.0.0-dev.tar.gz"); strings.TrimSpace(stdout) != want {
		t.Errorf("bundle build printed %q, want %s", stdout, want)
	}
	if !strings.Contains(stderr, "warning:") || !strings.Contains(stderr, "0.0.0-dev") || !strings.Contains(stderr, `-ldflags "-X main.version=`) {
		t.Errorf("no warning of the dev version that says how to set one: %q", stderr)
	}

	// A directory holding two executables is refused, naming them.
	if err := os.WriteFile(filepath.Join(dir, "other"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = plughost("bundle", "build", "-o", out, dir)
	if code != 1 || !strings.Contains(stderr, "echo, other") {
		t.Errorf("bundle build of a dir with two executables: exit %d, %q", code, stderr)
	}
}
