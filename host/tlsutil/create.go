package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// Default validity periods.
const (
	DefaultCADays   = 5 * 365
	DefaultCertDays = 365
)

// PEM is a certificate and its private key, PEM-encoded.
type PEM struct {
	Cert, Key []byte
}

// CreateCA makes a cluster CA valid for days.
func CreateCA(days int) (PEM, error) {
	if days <= 0 {
		return PEM{}, fmt.Errorf("tlsutil: -days %d must be positive", days)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PEM{}, err
	}
	serial, err := serialNumber()
	if err != nil {
		return PEM{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "plughost agent CA " + serial.Text(16)[:8]},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.AddDate(0, 0, days),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	return sign(tmpl, tmpl, key, key)
}

// CertRequest is a certificate to make under a CA.
type CertRequest struct {
	// Node makes a server certificate for that node; empty makes a
	// client certificate.
	Node string
	Days int
	DNS  []string // more DNS names (a server's)
	IPs  []net.IP // more IP addresses (a server's)
	CA   PEM      // the signing CA
	// Now is when the certificate starts to be valid (zero: now).
	Now time.Time
}

// CreateCert makes a server certificate (req.Node set) or a client
// certificate signed by req.CA. A server certificate names
// ServerName(node), localhost and 127.0.0.1 besides req's names, and
// serves as both TLS server and client (nodes dial each other).
func CreateCert(req CertRequest) (PEM, error) {
	if req.Days <= 0 {
		return PEM{}, fmt.Errorf("tlsutil: -days %d must be positive", req.Days)
	}
	caBlock, _ := pem.Decode(req.CA.Cert)
	keyBlock, _ := pem.Decode(req.CA.Key)
	if caBlock == nil || keyBlock == nil {
		return PEM{}, errors.New("tlsutil: the CA certificate or key file holds no PEM block")
	}
	ca, err := x509.ParseCertificate(caBlock.Bytes)
	if err != nil {
		return PEM{}, fmt.Errorf("tlsutil: CA certificate: %w", err)
	}
	caKey, err := x509.ParseECPrivateKey(keyBlock.Bytes)
	if err != nil {
		return PEM{}, fmt.Errorf("tlsutil: CA key: %w", err)
	}
	if !caKey.PublicKey.Equal(ca.PublicKey) {
		return PEM{}, errors.New("tlsutil: the CA key does not belong to the CA certificate")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PEM{}, err
	}
	serial, err := serialNumber()
	if err != nil {
		return PEM{}, err
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.AddDate(0, 0, req.Days),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if req.Node != "" {
		tmpl.Subject.CommonName = ServerName(req.Node)
		tmpl.DNSNames = append([]string{ServerName(req.Node), "localhost"}, req.DNS...)
		tmpl.IPAddresses = append([]net.IP{net.IPv4(127, 0, 0, 1)}, req.IPs...)
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.Subject.CommonName = ClientName
		tmpl.DNSNames = []string{ClientName}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	return sign(tmpl, ca, key, caKey)
}

func sign(tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) (PEM, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return PEM{}, fmt.Errorf("tlsutil: sign certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return PEM{}, err
	}
	return PEM{
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// WriteFiles writes p's certificate (0644) and key (0600) at certPath and
// keyPath; it refuses to overwrite either.
func WriteFiles(p PEM, certPath, keyPath string) error {
	for _, path := range []string{certPath, keyPath} {
		if _, err := os.Stat(path); err == nil {
			return fmt.Errorf("tlsutil: %s exists; remove it or write to another directory (-dir)", path)
		}
	}
	if err := writeNew(keyPath, p.Key, 0o600); err != nil {
		return err
	}
	if err := writeNew(certPath, p.Cert, 0o644); err != nil {
		os.Remove(keyPath)
		return err
	}
	return nil
}

func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("tlsutil: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("tlsutil: write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil { // exactly perm, whatever the umask
		f.Close()
		return fmt.Errorf("tlsutil: %w", err)
	}
	return f.Close()
}
