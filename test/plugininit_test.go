package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPluginInitBuildsAndTests is a plugin author's first steps outside this
// repository: 'plughost plugin init' writes a module, the pinned buf
// generates its code with the scaffold's buf.yaml and buf.gen.yaml, and
// the module builds and passes its own sdktest test. buf comes from
// 'make tools' (.bin/buf), which CI runs first; the module proxy fills in
// the plugin's go.sum.
func TestPluginInitBuildsAndTests(t *testing.T) {
	buildAll(t)
	bin := filepath.Join(repoRoot(), ".bin")
	if _, err := os.Stat(filepath.Join(bin, "buf")); err != nil {
		t.Fatalf("the pinned buf is not installed (%v): run 'make tools'", err)
	}
	dir := filepath.Join(t.TempDir(), "kv")
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		if name == filepath.Join(binDir, "plughost") {
			cmd.Dir = ""
		}
		cmd.Env = append(os.Environ(),
			"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
			"GOFLAGS=-mod=mod", "GOWORK=off")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	out := run(filepath.Join(binDir, "plughost"), "plugin", "init", "-module", "example.com/kv", "-dir", dir, "-replace", repoRoot(), "key-value")
	for _, f := range []string{"go.mod", "buf.yaml", "buf.gen.yaml", "proto/keyvalue/v1/keyvalue.proto", "main.go", "server.go", "server_test.go", "Makefile"} {
		if !strings.Contains(out, filepath.Join(dir, f)) {
			t.Errorf("plugin init did not list %s:\n%s", f, out)
		}
	}
	run(filepath.Join(bin, "buf"), "lint")
	run(filepath.Join(bin, "buf"), "generate")
	if _, err := os.Stat(filepath.Join(dir, "gen", "keyvalue", "v1", "keyvalue_grpc.pb.go")); err != nil {
		t.Fatalf("buf generate did not write the service: %v", err)
	}
	run("go", "mod", "tidy")
	run("go", "build", "-o", filepath.Join(dir, "bin", "key-value"), ".")
	if out := run("go", "test", "-count=1", "./..."); !strings.Contains(out, "ok") {
		t.Errorf("go test in the new module:\n%s", out)
	}
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(gomod), "hashicorp/raft") {
		t.Errorf("the plugin's go.mod requires raft:\n%s", gomod)
	}

	// The binary is a plugin the real bundler accepts.
	run(filepath.Join(binDir, "plughost"), "bundle", "build", "-o", filepath.Join(dir, "bundles"), filepath.Join(dir, "bin", "key-value"))
}
