package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// node writes a CA's server certificate for name into dir and loads it.
func node(t *testing.T, ca PEM, name string, now time.Time) *Config {
	t.Helper()
	p, err := CreateCert(CertRequest{Node: name, Days: 1, CA: ca, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if !now.IsZero() {
		// Load refuses an expired certificate: build the config by hand,
		// as a peer that does not check its own would have it.
		cert, err := tls.X509KeyPair(p.Cert, p.Key)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "ca.pem"), ca.Cert, 0o644)
		pool, err := LoadCA(filepath.Join(dir, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		c := &Config{Node: name}
		c.cur.Store(&material{pool: pool, cert: cert, leaf: leaf})
		return c
	}
	return load(t, ca, p, name)
}

func load(t *testing.T, ca, p PEM, name string) *Config {
	t.Helper()
	dir := t.TempDir()
	f := Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
	if err := os.WriteFile(f.CA, ca.Cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFiles(p, f.Cert, f.Key); err != nil {
		t.Fatal(err)
	}
	c, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newCA(t *testing.T) PEM {
	t.Helper()
	ca, err := CreateCA(1)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// handshake runs a TLS handshake between client and server configs over
// a pipe and returns each side's error.
func handshake(client, server *tls.Config) (clientErr, serverErr error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err, err
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		b, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		s := tls.Server(b, server)
		s.SetDeadline(time.Now().Add(5 * time.Second))
		err = s.Handshake()
		if err == nil {
			// TLS 1.3: the client's certificate is checked after the
			// client's handshake returns; read to see the server's verdict.
			s.Write([]byte{1})
		}
		b.Close()
		done <- err
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err, err
	}
	c := tls.Client(a, client)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	clientErr = c.Handshake()
	if clientErr == nil {
		_, clientErr = c.Read(make([]byte, 1))
	}
	a.Close()
	return clientErr, <-done
}

func TestNodeToNode(t *testing.T) {
	ca := newCA(t)
	n1, n2 := node(t, ca, "n1", time.Time{}), node(t, ca, "n2", time.Time{})
	other := newCA(t)
	rogue := node(t, other, "n2", time.Time{})
	expired := node(t, ca, "n2", time.Now().Add(-48*time.Hour))
	clientPEM, err := CreateCert(CertRequest{Days: 1, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	client := load(t, ca, clientPEM, "client")

	cases := []struct {
		name           string
		dialer, server *Config
		expect         string // the node the dialer expects
		ok             bool
	}{
		{"same CA, right node", n1, n2, "n2", true},
		{"node name with dots and underscore", n1, node(t, ca, "db_1.rack-2", time.Time{}), "db_1.rack-2", true},
		{"server names another node", n1, n2, "n3", false},
		{"server from another CA", n1, rogue, "n2", false},
		{"dialer from another CA", rogue, n1, "n1", false},
		{"server certificate expired", n1, expired, "n2", false},
		{"dialer certificate expired", expired, n1, "n1", false},
		{"dialer holds a client certificate", client, n1, "n1", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cerr, serr := handshake(tc.dialer.Outgoing(tc.expect), tc.server.Incoming())
			if tc.ok && (cerr != nil || serr != nil) {
				t.Fatalf("refused: dialer %v, server %v", cerr, serr)
			}
			if !tc.ok && cerr == nil && serr == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestLoadRefuses(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	p, err := CreateCert(CertRequest{Node: "n1", Days: 1, CA: other})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "n1.pem"), Key: filepath.Join(dir, "n1-key.pem")}
	os.WriteFile(f.CA, ca.Cert, 0o644)
	if err := WriteFiles(p, f.Cert, f.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(f); err == nil || !strings.Contains(err.Error(), "not valid under the CA") {
		t.Fatalf("a certificate of another CA loaded: %v", err)
	}
	if _, err := Load(Files{CA: f.CA}); err == nil || !strings.Contains(err.Error(), "-cert-file, -key-file not given") {
		t.Fatalf("missing files: %v", err)
	}
	if err := WriteFiles(p, f.Cert, f.Key); err == nil {
		t.Fatal("WriteFiles overwrote a certificate")
	}
	if fi, _ := os.Stat(f.Key); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	good := node(t, ca, "n1", time.Time{})
	if err := good.CheckServerFor("n2"); err == nil {
		t.Fatal("a certificate for n1 passed as n2's")
	}
	if err := good.CheckServerFor("n1"); err != nil {
		t.Fatal(err)
	}
}

func TestCheckNode(t *testing.T) {
	ca := newCA(t)
	c := node(t, ca, "n1", time.Time{})
	leaf := c.Leaf()
	if err := CheckNode(leaf, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := CheckNode(leaf, "n2"); !errors.Is(err, ErrWrongNode) {
		t.Fatalf("n1's certificate checked as n2: %v", err)
	}
}

func TestAPI(t *testing.T) {
	ca := newCA(t)
	n1 := node(t, ca, "n1", time.Time{})
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.Cert, 0o644)
	clientPEM, _ := CreateCert(CertRequest{Days: 1, CA: ca})
	if err := WriteFiles(clientPEM, filepath.Join(dir, "c.pem"), filepath.Join(dir, "c-key.pem")); err != nil {
		t.Fatal(err)
	}
	anon, err := Client(caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	anon.ServerName = "127.0.0.1"
	withCert, err := Client(caFile, filepath.Join(dir, "c.pem"), filepath.Join(dir, "c-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	withCert.ServerName = "127.0.0.1"
	if cerr, serr := handshake(anon, n1.API(false)); cerr != nil || serr != nil {
		t.Fatalf("API without client certificates refused a CLI: %v %v", cerr, serr)
	}
	if cerr, serr := handshake(anon, n1.API(true)); cerr == nil && serr == nil {
		t.Fatal("API that verifies clients took one without a certificate")
	}
	if cerr, serr := handshake(withCert, n1.API(true)); cerr != nil || serr != nil {
		t.Fatalf("API refused a client certificate of its CA: %v %v", cerr, serr)
	}
	otherCA := filepath.Join(dir, "other.pem")
	os.WriteFile(otherCA, newCA(t).Cert, 0o644)
	wrong, _ := Client(otherCA, "", "")
	wrong.ServerName = "127.0.0.1"
	if cerr, serr := handshake(wrong, n1.API(false)); cerr == nil && serr == nil {
		t.Fatal("a CLI trusting another CA accepted the agent")
	}
}

// servedSerial is the serial of the certificate server presents to a
// handshake from client (which must succeed).
func servedSerial(t *testing.T, client, server *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			s := tls.Server(c, server)
			_ = s.Handshake()
			s.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestReloadRotatesCertificates: after Reload, the tls.Configs given out
// before present the new certificate and trust the new CA file's CAs; a
// certificate for another node, or a key that does not match, is refused
// and the one in use stays.
func TestReloadRotatesCertificates(t *testing.T) {
	ca := newCA(t)
	p1, err := CreateCert(CertRequest{Node: "n1", Days: 1, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	n1 := load(t, ca, p1, "n1")
	n2 := node(t, ca, "n2", time.Time{})
	incoming, api := n1.Incoming(), n1.API(false)
	first := servedSerial(t, n2.Outgoing("n1"), incoming)
	if changed, err := n1.Reload(); changed || err != nil {
		t.Fatalf("Reload of unchanged files: changed %v, %v", changed, err)
	}

	// Another node's certificate, and a mismatched key: refused, kept.
	f := n1.Files()
	other, err := CreateCert(CertRequest{Node: "n3", Days: 1, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	write := func(cert, key []byte) {
		t.Helper()
		if err := os.WriteFile(f.Cert, cert, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.Key, key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(other.Cert, other.Key)
	if _, err := n1.Reload(); !errors.Is(err, ErrNodeChanged) {
		t.Fatalf("Reload of n3's certificate: %v, want ErrNodeChanged", err)
	}
	p2, err := CreateCert(CertRequest{Node: "n1", Days: 1, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	write(p2.Cert, p1.Key)
	if _, err := n1.Reload(); err == nil {
		t.Fatal("Reload of a certificate with another's key succeeded")
	}
	if got := servedSerial(t, n2.Outgoing("n1"), incoming); got != first {
		t.Fatalf("after refused reloads n1 serves %s, want the first %s", got, first)
	}

	// The new certificate: served by the configs given out before.
	write(p2.Cert, p2.Key)
	if changed, err := n1.Reload(); !changed || err != nil {
		t.Fatalf("Reload of a new certificate: changed %v, %v", changed, err)
	}
	leaf, err := x509.ParseCertificate(mustDER(t, p2.Cert))
	if err != nil {
		t.Fatal(err)
	}
	want := leaf.SerialNumber.String()
	if got := servedSerial(t, n2.Outgoing("n1"), incoming); got != want {
		t.Fatalf("n1's node-to-node port serves %s after Reload, want %s", got, want)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.Cert)
	if got := servedSerial(t, &tls.Config{RootCAs: pool, ServerName: ServerName("n1"), NextProtos: []string{"h2"}}, api); got != want {
		t.Fatalf("n1's API serves %s after Reload, want %s", got, want)
	}

	// A CA file that adds a second CA: its nodes are trusted from then on.
	ca2 := newCA(t)
	m := node(t, ca2, "n4", time.Time{})
	if c, _ := handshake(m.Outgoing("n1"), incoming); c == nil {
		t.Fatal("a node of another CA was taken before the CA file named it")
	}
	if err := os.WriteFile(f.CA, append(append([]byte{}, ca.Cert...), ca2.Cert...), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := n1.Reload(); !changed || err != nil {
		t.Fatalf("Reload of a CA bundle: changed %v, %v", changed, err)
	}
	mOut := m.Outgoing("n1")
	mOut.RootCAs.AppendCertsFromPEM(ca.Cert)
	if c, s := handshake(mOut, incoming); c != nil || s != nil {
		t.Fatalf("a node of the added CA: client %v, server %v", c, s)
	}
}

func mustDER(t *testing.T, certPEM []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM block")
	}
	return b.Bytes
}
