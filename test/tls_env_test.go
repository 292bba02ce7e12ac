package test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/plughost/plughost/internal/testenv"
)

// clusterTLS is the cluster CA and the node certificates the test agents
// use, made once per test binary with the real `plughost tls` commands.
var clusterTLS struct {
	once  sync.Once
	err   error
	dir   string
	mu    sync.Mutex
	nodes map[string]error // node -> its certificate was made (nil) or not
}

// tlsDir is the directory with the test cluster's CA, made on first use.
func tlsDir(t testing.TB) string {
	t.Helper()
	buildAll(t)
	clusterTLS.once.Do(func() {
		clusterTLS.dir, clusterTLS.err = testenv.MkdirTemp("plughost-tls-")
		if clusterTLS.err == nil {
			clusterTLS.err = plughostIn(clusterTLS.dir, "tls", "ca", "create")
		}
	})
	if clusterTLS.err != nil {
		t.Fatalf("making the test cluster CA: %v", clusterTLS.err)
	}
	return clusterTLS.dir
}

// nodeTLSArgs are the agent flags giving node its certificate from the
// test cluster's CA, made the first time node asks.
func nodeTLSArgs(t testing.TB, node string) []string {
	t.Helper()
	dir := tlsDir(t)
	clusterTLS.mu.Lock()
	defer clusterTLS.mu.Unlock()
	if clusterTLS.nodes == nil {
		clusterTLS.nodes = map[string]error{}
	}
	err, ok := clusterTLS.nodes[node]
	if !ok {
		err = plughostIn(dir, "tls", "cert", "create", "-server", "-node", node)
		clusterTLS.nodes[node] = err
	}
	if err != nil {
		t.Fatalf("making %s's certificate: %v", node, err)
	}
	return []string{"-ca-file", filepath.Join(dir, "plughost-agent-ca.pem"),
		"-cert-file", filepath.Join(dir, "plughost-server-"+node+".pem"),
		"-key-file", filepath.Join(dir, "plughost-server-"+node+"-key.pem")}
}

// plughostIn runs the real plughost CLI in dir.
func plughostIn(dir string, args ...string) error {
	cmd := exec.Command(filepath.Join(binDir, "plughost"), args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("plughost %v: %v\n%s", args, err, out)
	}
	return nil
}
