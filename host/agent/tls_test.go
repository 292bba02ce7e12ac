package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plughost/plughost/host/tlsutil"
)

// testTLS writes a CA and a server certificate for node and returns the
// files, for tests that need a cluster agent's config to load.
func testTLS(t *testing.T, node string) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	p, err := tlsutil.CreateCA(1)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tlsutil.CreateCert(tlsutil.CertRequest{Node: node, Days: 1, CA: p})
	if err != nil {
		t.Fatal(err)
	}
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(ca, p.Cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tlsutil.WriteFiles(s, cert, key); err != nil {
		t.Fatal(err)
	}
	return ca, cert, key
}

// TestTLSFilesMustNameTheNode: an agent given another node's certificate
// is refused, naming both nodes and the command that makes the right one.
func TestTLSFilesMustNameTheNode(t *testing.T) {
	c := DefaultConfig()
	c.Node, c.DataDir, c.Encrypt = "n4", t.TempDir(), "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
	c.CAFile, c.CertFile, c.KeyFile = testTLS(t, "n2")
	_, err := New(c, nil)
	if err == nil || !contains(err.Error(), `the certificate is for node "n2", not "n4"`, "plughost tls cert create -server -node n4") {
		t.Fatalf("New with n2's certificate as n4 = %v", err)
	}
	c.CAFile, c.CertFile, c.KeyFile = testTLS(t, "n4")
	if _, err := New(c, nil); err != nil {
		t.Fatal(err)
	}
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
