package test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plughost/plughost/host/tlsutil"
	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// serverCertIn makes a server certificate for node from the test cluster's
// CA in dir, with the real `plughost tls cert create`, and returns its
// certificate and key files and its serial number.
func serverCertIn(t *testing.T, dir, node string) (cert, key, serial string) {
	t.Helper()
	ca := tlsDir(t)
	if err := plughostIn(dir, "tls", "cert", "create", "-server", "-node", node,
		"-ca", filepath.Join(ca, "plughost-agent-ca.pem"), "-key", filepath.Join(ca, "plughost-agent-ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "plughost-server-"+node+".pem"), filepath.Join(dir, "plughost-server-"+node+"-key.pem")
	b, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s holds no PEM block", cert)
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, leaf.SerialNumber.String()
}

// servedSerial is the serial of the certificate the cluster RPC port at
// addr presents as node, to a handshake made with from's certificate.
func servedSerial(from tls.Certificate, pool *x509.CertPool, addr, node string) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{from}, RootCAs: pool, ServerName: tlsutil.ServerName(node)})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

// TestCertificateRotationInARunningCluster: a node's certificate replaced
// on disk is served from the next handshake on, without a restart, and the
// cluster goes on through that node; SIGHUP reloads rather than ending the
// agent; a certificate for another node put in its place is refused and
// the one in use stays.
func TestCertificateRotationInARunningCluster(t *testing.T) {
	t.Parallel()
	ca := tlsDir(t)
	n2dir := t.TempDir()
	cert, key, first := serverCertIn(t, n2dir, "n2")
	agents := NewClusterEach(t, 3, func(i int) []string {
		if i != 1 {
			return nil
		}
		return []string{"-ca-file", filepath.Join(ca, "plughost-agent-ca.pem"), "-cert-file", cert, "-key-file", key}
	})
	n2 := agents[1]
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(ca, "plughost-agent-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	n1args := nodeTLSArgs(t, "n1")
	n1cert, err := tls.LoadX509KeyPair(n1args[3], n1args[5])
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		t.Helper()
		s, err := servedSerial(n1cert, pool, n2.RPC, "n2")
		if err != nil {
			t.Fatalf("a handshake with n2's cluster RPC port: %v", err)
		}
		return s
	}
	if got := serial(); got != first {
		t.Fatalf("n2 serves serial %s, want its first certificate's %s", got, first)
	}
	put := func(what string) {
		t.Helper()
		ctx := testenv.Context(t, 20*time.Second)
		if _, err := n2.Store().Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte(what), Value: []byte("v")}); err != nil {
			t.Fatalf("a put through n2 %s: %v", what, err)
		}
	}
	put("before")

	// A new certificate renamed into place, the certificate then the key,
	// as a tool would: n2 serves it from then on.
	staged := t.TempDir()
	newCert, newKey, second := serverCertIn(t, staged, "n2")
	for _, mv := range [][2]string{{newCert, cert}, {newKey, key}} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 20*time.Second, "n2 to serve its new certificate", func() error {
		if got := serial(); got != second {
			return fmt.Errorf("n2 serves serial %s, want the new %s", got, second)
		}
		return nil
	})
	if !strings.Contains(n2.Log(), "TLS certificates reloaded") {
		t.Errorf("n2's log does not say it reloaded its certificates:\n%s", n2.Log())
	}
	put("after the rotation")

	// SIGHUP reloads; the agent goes on.
	n2.Signal(syscall.SIGHUP)
	testenv.WaitFor(t, 10*time.Second, "n2 to log its reload on SIGHUP", func() error {
		if !strings.Contains(n2.Log(), "TLS files unchanged") {
			return fmt.Errorf("no reload logged")
		}
		return nil
	})
	put("after SIGHUP")

	// n3's certificate in n2's place: refused, n2 keeps serving its own.
	n3args := nodeTLSArgs(t, "n3")
	for _, cp := range [][2]string{{n3args[3], cert}, {n3args[5], key}} {
		b, err := os.ReadFile(cp[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cp[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n2.Signal(syscall.SIGHUP)
	testenv.WaitFor(t, 10*time.Second, "n2 to refuse n3's certificate", func() error {
		if !strings.Contains(n2.Log(), "TLS files not reloaded") {
			return fmt.Errorf("no refusal logged")
		}
		return nil
	})
	if got := serial(); got != second {
		t.Fatalf("after n3's certificate was put in its place n2 serves %s, want its own %s", got, second)
	}
	put("after a refused certificate")
}

// TestHTTPPortTLS: with -http-tls the health and metrics port answers only
// over TLS with the API's certificate, so a request's bearer token never
// crosses the network in clear; a plaintext request gets no answer.
func TestHTTPPortTLS(t *testing.T) {
	t.Parallel()
	ca := tlsDir(t)
	a := NewAgent(t, AgentOptions{Args: append(nodeTLSArgs(t, "n1"), "-http-tls")})
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(ca, "plughost-agent-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	req, err := http.NewRequest(http.MethodGet, "https://"+a.HTTP+"/v1/health", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.Token())
	c := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, ServerName: tlsutil.ServerName("n1")}}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET /v1/health over TLS: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("GET /v1/health over TLS: %s %s", resp.Status, body)
	}
	if resp, err := a.HTTPGet("/v1/health"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("a plaintext GET /v1/health with the token was answered %s", resp.Status)
		}
	}
	if strings.Contains(a.Log(), "reachable beyond this machine without TLS") {
		t.Errorf("a loopback -http-tls port was warned about:\n%s", a.Log())
	}
}
