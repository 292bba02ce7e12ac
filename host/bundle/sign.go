package bundle

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Publisher signatures.
//
// A bundle is signed by adding plugin.sig beside plugin.json: inside the
// archive, or in the directory. It is a JSON object:
//
//	{"algorithm": "ed25519", "public_key": "<base64 PKIX DER>", "signature": "<base64>"}
//
// The signature is ed25519 over signedMessage: a fixed first line, the
// SHA-256 of plugin.json exactly as it is in the bundle, and the
// executable's SHA-256 (which plugin.json also holds). Whatever else changes
// in the archive (its compression, other files) leaves the signature valid;
// a change to the manifest or the executable does not.
//
// Keys are files: a private key is PEM "PRIVATE KEY" (PKCS#8), a public key
// PEM "PUBLIC KEY" (PKIX), the formats of crypto/x509 and of
// `openssl genpkey -algorithm ed25519`. A key is named by its KeyID.

// SignatureFile is the name of the signature beside plugin.json.
const SignatureFile = "plugin.sig"

// maxSignatureSize bounds plugin.sig; a real one is about 200 bytes.
const maxSignatureSize = 16 << 10

// signatureAlgorithm is the only algorithm plugin.sig may name.
const signatureAlgorithm = "ed25519"

// signatureDoc is the content of plugin.sig.
type signatureDoc struct {
	Algorithm string `json:"algorithm"`
	PublicKey string `json:"public_key"` // base64 of the PKIX DER public key
	Signature string `json:"signature"`  // base64 of the ed25519 signature
}

// signFix is the fix for a signature that is wrong in itself.
const signFix = "sign the bundle again with 'plughost bundle sign'"

// signedMessage is what a bundle's signature covers.
func signedMessage(manifestJSON []byte, executableSHA256 string) []byte {
	sum := sha256.Sum256(manifestJSON)
	return []byte("plughost bundle signature v1\nmanifest sha256 " + hex.EncodeToString(sum[:]) +
		"\nexecutable sha256 " + executableSHA256 + "\n")
}

// KeyID names a public key: "ed25519:" and the first 16 hex digits of the
// SHA-256 of its PKIX DER encoding.
func KeyID(pub ed25519.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "ed25519:invalid"
	}
	sum := sha256.Sum256(der)
	return "ed25519:" + hex.EncodeToString(sum[:8])
}

// GenerateKey makes an ed25519 key pair and writes the private key to
// prefix+".key" (mode 0600) and the public key to prefix+".pub" (mode
// 0644). It refuses to overwrite either file. It returns the key's KeyID.
func GenerateKey(prefix string) (string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	keyFile, pubFile := prefix+".key", prefix+".pub"
	for _, p := range []string{keyFile, pubFile} {
		if _, err := os.Lstat(p); err == nil {
			return "", fmt.Errorf("%s exists: choose another prefix, or remove it first", p)
		}
	}
	if err := writeNew(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		return "", err
	}
	if err := writeNew(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		os.Remove(keyFile)
		return "", err
	}
	return KeyID(pub), nil
}

// ReadPrivateKey reads an ed25519 private key from a PEM "PRIVATE KEY"
// (PKCS#8) file.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	der, err := readPEM(path, "PRIVATE KEY", "make one with 'plughost bundle keygen'")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: not a PKCS#8 private key (%v): make one with 'plughost bundle keygen'", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: a %T, not an ed25519 key: make one with 'plughost bundle keygen'", path, k)
	}
	return priv, nil
}

// ReadPublicKey reads an ed25519 public key from a PEM "PUBLIC KEY" (PKIX)
// file.
func ReadPublicKey(path string) (ed25519.PublicKey, error) {
	der, err := readPEM(path, "PUBLIC KEY", "give the .pub file 'plughost bundle keygen' wrote")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: not a PKIX public key (%v): give the .pub file 'plughost bundle keygen' wrote", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: a %T, not an ed25519 key: give the .pub file 'plughost bundle keygen' wrote", path, k)
	}
	return pub, nil
}

func readPEM(path, typ, fix string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block in it: %s", path, fix)
	}
	if block.Type != typ {
		return nil, fmt.Errorf("%s: a PEM %q, want %q: %s", path, block.Type, typ, fix)
	}
	return block.Bytes, nil
}

// Signer checks b's signature against b's manifest and executable digest
// and returns the public key that made it and its KeyID. It says nothing of
// whether that key is trusted: see TrustedKeys.Check. An unsigned bundle
// returns an error matching ErrUnsigned.
func (b *Bundle) Signer() (ed25519.PublicKey, string, error) {
	label := b.label()
	if b.Signature == nil {
		return nil, "", newError(label, ErrUnsigned, fmt.Sprintf("bundle is not signed: it has no %s; sign it with 'plughost bundle sign -key KEY'", SignatureFile))
	}
	var doc signatureDoc
	dec := json.NewDecoder(bytes.NewReader(b.Signature))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil || dec.More() {
		return nil, "", newError(label, ErrBadSignature, fmt.Sprintf("%s is not a plughost signature (%v): %s", SignatureFile, err, signFix))
	}
	if doc.Algorithm != signatureAlgorithm {
		return nil, "", newError(label, ErrBadSignature, fmt.Sprintf("%s names algorithm %q, want %q: %s", SignatureFile, doc.Algorithm, signatureAlgorithm, signFix))
	}
	der, err := base64.StdEncoding.DecodeString(doc.PublicKey)
	if err != nil {
		return nil, "", newError(label, ErrBadSignature, fmt.Sprintf("%s: public_key is not base64: %s", SignatureFile, signFix))
	}
	k, err := x509.ParsePKIXPublicKey(der)
	pub, ok := k.(ed25519.PublicKey)
	if err != nil || !ok {
		return nil, "", newError(label, ErrBadSignature, fmt.Sprintf("%s: public_key is not an ed25519 PKIX key: %s", SignatureFile, signFix))
	}
	sig, err := base64.StdEncoding.DecodeString(doc.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, "", newError(label, ErrBadSignature, fmt.Sprintf("%s: signature is not a base64 ed25519 signature: %s", SignatureFile, signFix))
	}
	id := KeyID(pub)
	if !ed25519.Verify(pub, signedMessage(b.ManifestJSON, b.Manifest.SHA256), sig) {
		return nil, id, newError(label, ErrBadSignature, fmt.Sprintf("the signature by key %s does not match this bundle: %s or the executable changed after it was signed (or %s was copied from another bundle); get the bundle from its publisher again, or %s",
			id, ManifestFile, SignatureFile, signFix))
	}
	return pub, id, nil
}

// label names b in errors: the base name of its source.
func (b *Bundle) label() string {
	if b.Source != "" {
		return filepath.Base(filepath.Clean(b.Source))
	}
	if b.Manifest != nil {
		return b.Manifest.Name + "-" + b.Manifest.Version
	}
	return ""
}

// TrustedKeys are the publisher keys an agent accepts bundles from.
type TrustedKeys struct {
	keys  map[string]ed25519.PublicKey // by KeyID
	files map[string]string            // KeyID → the file it came from
}

// LoadTrustedKeys reads the public key files at paths. No paths gives nil:
// trust nothing in particular, accept unsigned bundles.
func LoadTrustedKeys(paths []string) (*TrustedKeys, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	t := &TrustedKeys{keys: map[string]ed25519.PublicKey{}, files: map[string]string{}}
	for _, p := range paths {
		pub, err := ReadPublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("trusted key: %w", err)
		}
		id := KeyID(pub)
		t.keys[id], t.files[id] = pub, p
	}
	return t, nil
}

// IDs lists the trusted keys' KeyIDs, sorted.
func (t *TrustedKeys) IDs() []string {
	ids := make([]string, 0, len(t.keys))
	for id := range t.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Check returns the KeyID of the trusted key that signed b, or an error
// matching ErrUnsigned, ErrUntrustedKey or ErrBadSignature that names the
// key and the fix. A nil TrustedKeys accepts every bundle.
func (t *TrustedKeys) Check(b *Bundle) (string, error) {
	if t == nil {
		return "", nil
	}
	trusted := strings.Join(t.IDs(), ", ")
	if b.Signature == nil {
		return "", newError(b.label(), ErrUnsigned, fmt.Sprintf("bundle is not signed and this agent accepts only bundles signed by a trusted key (%s): sign it with 'plughost bundle sign -key KEY' using one of those keys", trusted))
	}
	pub, id, err := b.Signer()
	if err != nil {
		return id, err
	}
	if want, ok := t.keys[id]; !ok || !want.Equal(pub) {
		return id, newError(b.label(), ErrUntrustedKey, fmt.Sprintf("bundle is signed by key %s, which this agent does not trust (it trusts %s): sign it with a trusted key, or add the publisher's public key to the agent's trusted_keys (-trusted-key)", id, trusted))
	}
	return id, nil
}

// Sign signs the bundle at path with key and returns the key's KeyID. The
// bundle is verified first. A directory bundle gets plugin.sig written into
// it; an archive is rewritten with plugin.sig added (replacing an older
// one), under a temporary name renamed into place.
func Sign(path string, key ed25519.PrivateKey) (string, error) {
	b, err := VerifyBundle(path)
	if err != nil {
		return "", err
	}
	pub := key.Public().(ed25519.PublicKey)
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	doc, err := json.MarshalIndent(signatureDoc{
		Algorithm: signatureAlgorithm,
		PublicKey: base64.StdEncoding.EncodeToString(der),
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, signedMessage(b.ManifestJSON, b.Manifest.SHA256))),
	}, "", "  ")
	if err != nil {
		return "", err
	}
	doc = append(doc, '\n')
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.IsDir() {
		err = replaceFile(filepath.Join(path, SignatureFile), 0o644, func(w io.Writer) error {
			_, err := w.Write(doc)
			return err
		})
	} else {
		err = replaceFile(path, fi.Mode().Perm(), func(w io.Writer) error { return addToArchive(w, path, doc) })
	}
	if err != nil {
		return "", fmt.Errorf("sign %s: %w", path, err)
	}
	return KeyID(pub), nil
}

// replaceFile writes path anew through a hidden temporary file in its
// directory, renamed into place.
func replaceFile(path string, perm os.FileMode, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	err = write(tmp)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// addToArchive copies the archive at path to w with every entry but an old
// plugin.sig, and sig as plugin.sig at the end.
func addToArchive(w io.Writer, path string, sig []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	bw := bufio.NewWriter(w)
	zw := gzip.NewWriter(bw)
	tw := tar.NewWriter(zw)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return err
		}
		if strings.TrimPrefix(hdr.Name, "./") == SignatureFile {
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: SignatureFile, Mode: 0o644, Size: int64(len(sig)), ModTime: time.Unix(0, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := tw.Write(sig); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}
