package sdk_test

import (
	"os/exec"
	"strings"
	"testing"
)

// serverModules are the agent's own dependencies. A plugin author's module
// requires whatever sdk/... imports, so none of these may be among its
// imports: they would land in every plugin's go.mod.
var serverModules = []string{
	"github.com/hashicorp/raft",
	"github.com/hashicorp/raft-wal",
	"github.com/hashicorp/raft-boltdb",
	"github.com/hashicorp/raft-boltdb/v2",
	"github.com/hashicorp/serf",
	"github.com/hashicorp/memberlist",
	"github.com/plughost/plughost/host",
}

// serverPackage reports whether pkg is one of the agent's: a package of
// serverModules, or the replicated store itself (its sub-packages fsm,
// watch and local run without raft and serve sdktest's in-memory store).
func serverPackage(pkg string) bool {
	if pkg == "github.com/plughost/plughost/store" {
		return true
	}
	for _, m := range serverModules {
		if pkg == m || strings.HasPrefix(pkg, m+"/") {
			return true
		}
	}
	return false
}

// TestSDKLeavesOutTheServer lists every package sdk/... (sdktest included)
// imports and fails on any of the agent's: a plugin author's test helper
// must not drag the server into the author's go.mod.
func TestSDKLeavesOutTheServer(t *testing.T) {
	cmd := exec.CommandContext(t.Context(), "go", "list", "-deps", "./...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./... in sdk/: %v\n%s", err, stderr(err))
	}
	var found []string
	for pkg := range strings.FieldsSeq(string(out)) {
		if serverPackage(pkg) {
			found = append(found, pkg)
		}
	}
	if len(found) > 0 {
		t.Errorf("sdk/... imports the agent's own packages, which every plugin module would then require:\n  %s",
			strings.Join(found, "\n  "))
	}
}

func stderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
