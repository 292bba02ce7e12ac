// Package tlsutil makes a plughost cluster's certificate authority and the
// certificates signed by it, and turns them into the tls.Config that every
// node-to-node connection and the API port use.
//
// A node's identity is its certificate: a server certificate names its node
// with the DNS name server.<node>.plughost (ServerName), so a dial to raft
// server X verifies the peer's certificate names X, and a listener accepts
// only certificates signed by the cluster CA. Client certificates, for the
// CLI, name client.plughost and are not accepted between nodes.
package tlsutil

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// Names in certificates.
const (
	serverPrefix = "server."
	domain       = ".plughost"
	// ClientName is the DNS name in every client certificate.
	ClientName = "client" + domain
)

// Errors a peer's certificate is refused with.
var (
	ErrNotServer = errors.New("tlsutil: the peer's certificate is not a plughost server certificate")
	ErrWrongNode = errors.New("tlsutil: the peer's certificate names another node")
)

// ServerName is the DNS name a server certificate for node carries.
func ServerName(node string) string { return serverPrefix + node + domain }

// NodeOf is the node a server certificate names, if it names one.
func NodeOf(cert *x509.Certificate) (string, bool) {
	for _, n := range cert.DNSNames {
		if strings.HasPrefix(n, serverPrefix) && strings.HasSuffix(n, domain) && len(n) > len(serverPrefix)+len(domain) {
			return n[len(serverPrefix) : len(n)-len(domain)], true
		}
	}
	return "", false
}

// CheckNode checks that cert is a server certificate naming node.
func CheckNode(cert *x509.Certificate, node string) error {
	got, ok := NodeOf(cert)
	if !ok {
		return ErrNotServer
	}
	if got != node {
		return fmt.Errorf("%w: it names %q, expected %q", ErrWrongNode, got, node)
	}
	return nil
}

// Files are the PEM files a node or a CLI user loads.
type Files struct {
	CA   string // the cluster CA's certificate
	Cert string // this node's (or user's) certificate
	Key  string // its private key
}

// Set reports whether any of the files is named.
func (f Files) Set() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Config is a node's TLS material: the CA that signs every node's
// certificate and this node's own certificate. Reload reads its files
// again; the tls.Configs it gives (Incoming, Outgoing, API) take the
// material current at each handshake, so certificates rotate without a
// restart. Its methods are safe for concurrent use.
type Config struct {
	files Files // zero: made in memory (Ephemeral), nothing to reload
	cur   atomic.Pointer[material]
	// Node is the node this node's certificate names ("" for a client
	// certificate). A reload keeps it: a node's identity does not change.
	Node string
}

// material is one loading of a Config's files.
type material struct {
	pool    *x509.CertPool
	cert    tls.Certificate
	leaf    *x509.Certificate
	caPEM   []byte // as read, to tell whether a reload changed anything
	certPEM []byte
	keyPEM  []byte
}

// Load reads f. Every file must be given; the certificate must be signed
// by the CA.
func Load(f Files) (*Config, error) {
	var missing []string
	for _, m := range []struct{ flag, v string }{{"-ca-file", f.CA}, {"-cert-file", f.Cert}, {"-key-file", f.Key}} {
		if m.v == "" {
			missing = append(missing, m.flag)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("tlsutil: %s not given (make them with `plughost tls ca create` and `plughost tls cert create`)", strings.Join(missing, ", "))
	}
	m, err := loadMaterial(f)
	if err != nil {
		return nil, err
	}
	c := &Config{files: f}
	c.Node, _ = NodeOf(m.leaf)
	c.cur.Store(m)
	return c, nil
}

// loadMaterial reads and checks f's files.
func loadMaterial(f Files) (*material, error) {
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("tlsutil: CA file %s holds no PEM certificate", f.CA)
	}
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: certificate %s with key %s: %w", f.Cert, f.Key, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tlsutil: certificate %s: %w", f.Cert, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("tlsutil: certificate %s is not valid under the CA %s: %w", f.Cert, f.CA, err)
	}
	return &material{pool: pool, cert: cert, leaf: leaf, caPEM: caPEM, certPEM: certPEM, keyPEM: keyPEM}, nil
}

// Errors of Reload.
var (
	// ErrNotReloadable: the Config was made in memory (Ephemeral).
	ErrNotReloadable = errors.New("tlsutil: the certificates were made in memory for this run; there are no files to reload")
	// ErrNodeChanged: the new certificate names another node, or none.
	ErrNodeChanged = errors.New("tlsutil: the new certificate does not name this node")
)

// Reload reads the files again and, if they changed and hold a valid
// certificate for the same node under the CA, uses them from the next
// handshake on; connections already open keep theirs. On an error the
// material in use stays. changed reports whether anything was swapped.
func (c *Config) Reload() (changed bool, err error) {
	if c.files == (Files{}) {
		return false, ErrNotReloadable
	}
	m, err := loadMaterial(c.files)
	if err != nil {
		return false, err
	}
	if node, _ := NodeOf(m.leaf); node != c.Node {
		return false, fmt.Errorf("%w: %s names %q, this node is %q; make one with `plughost tls cert create -server -node %s`",
			ErrNodeChanged, c.files.Cert, node, c.Node, c.Node)
	}
	old := c.cur.Load()
	if bytes.Equal(old.caPEM, m.caPEM) && bytes.Equal(old.certPEM, m.certPEM) && bytes.Equal(old.keyPEM, m.keyPEM) {
		return false, nil
	}
	c.cur.Store(m)
	return true, nil
}

// Files are the files the Config was loaded from (zero for Ephemeral).
func (c *Config) Files() Files { return c.files }

// Leaf is the certificate in use.
func (c *Config) Leaf() *x509.Certificate { return c.cur.Load().leaf }

// Ephemeral is a CA and a server certificate for node made in memory and
// never written: a -dev agent's cluster RPC port is mutual TLS with them,
// so nothing else on the machine can speak raft or forward to it.
func Ephemeral(node string) (*Config, error) {
	ca, err := CreateCA(1)
	if err != nil {
		return nil, err
	}
	p, err := CreateCert(CertRequest{Node: node, Days: 1, CA: ca})
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(p.Cert, p.Key)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.Cert)
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, err
	}
	c := &Config{Node: node}
	c.cur.Store(&material{pool: pool, cert: cert, leaf: leaf})
	return c, nil
}

// LoadCA reads a PEM file of CA certificates into a pool.
func LoadCA(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("tlsutil: CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// CheckServerFor checks that this config holds a server certificate for
// node, as an agent's must.
func (c *Config) CheckServerFor(node string) error {
	if c.Node == "" {
		return fmt.Errorf("tlsutil: the certificate is not a server certificate; make one with `plughost tls cert create -server -node %s`", node)
	}
	if c.Node != node {
		return fmt.Errorf("tlsutil: the certificate is for node %q, not %q; make one with `plughost tls cert create -server -node %s`", c.Node, node, node)
	}
	return nil
}

// Incoming is the tls.Config of a node-to-node listener: TLS 1.3, and the
// peer must present a server certificate signed by the CA. Each handshake
// takes the material current then (see Reload).
func (c *Config) Incoming() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := c.cur.Load()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{m.cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    m.pool,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 {
						return ErrNotServer
					}
					if _, ok := NodeOf(cs.PeerCertificates[0]); !ok {
						return ErrNotServer
					}
					return nil
				},
			}, nil
		},
	}
}

// Outgoing is the tls.Config of a dial to node: TLS 1.3, this node's
// certificate, and the peer's must be signed by the CA and name node. It
// holds the material current when it is made: make one per dial.
func (c *Config) Outgoing(node string) *tls.Config {
	m := c.cur.Load()
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{m.cert},
		RootCAs:      m.pool,
		ServerName:   ServerName(node),
	}
}

// API is the tls.Config of the API port: this node's certificate, ALPN h2,
// and with verifyClient a client certificate signed by the CA is required.
// Each handshake takes the material current then (see Reload).
func (c *Config) API(verifyClient bool) *tls.Config {
	return c.serving(verifyClient, "h2")
}

// HTTP is the tls.Config of the HTTP port (health and metrics): this
// node's certificate, as on the API port, for HTTP/1.1.
func (c *Config) HTTP() *tls.Config {
	return c.serving(false, "http/1.1")
}

func (c *Config) serving(verifyClient bool, protos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: protos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := c.cur.Load()
			t := &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{m.cert},
				NextProtos:   protos,
			}
			if verifyClient {
				t.ClientAuth = tls.RequireAndVerifyClientCert
				t.ClientCAs = m.pool
			}
			return t, nil
		},
	}
}

// Client is the tls.Config of a CLI dialing an agent's API: the agent's
// certificate must be signed by the CA at caFile and name the host dialed;
// cert and key, when given, are presented.
func Client(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := LoadCA(caFile)
	if err != nil {
		return nil, err
	}
	t := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, NextProtos: []string{"h2"}}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("tlsutil: a client certificate needs both its certificate and its key file")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("tlsutil: client certificate %s with key %s: %w", certFile, keyFile, err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}
