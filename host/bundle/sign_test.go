package bundle

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// newKey makes a key pair in a temp dir and returns its file prefix.
func newKey(t *testing.T, name string) (prefix, id string) {
	t.Helper()
	prefix = filepath.Join(t.TempDir(), name)
	id, err := GenerateKey(prefix)
	if err != nil {
		t.Fatal(err)
	}
	return prefix, id
}

func trust(t *testing.T, prefixes ...string) *TrustedKeys {
	t.Helper()
	var files []string
	for _, p := range prefixes {
		files = append(files, p+".pub")
	}
	tk, err := LoadTrustedKeys(files)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func sign(t *testing.T, path, prefix string) string {
	t.Helper()
	key, err := ReadPrivateKey(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	id, err := Sign(path, key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestGenerateKeyFiles(t *testing.T) {
	prefix, id := newKey(t, "publisher")
	if !strings.HasPrefix(id, "ed25519:") || len(id) != len("ed25519:")+16 {
		t.Errorf("key id %q", id)
	}
	for file, mode := range map[string]os.FileMode{prefix + ".key": 0o600, prefix + ".pub": 0o644} {
		fi, err := os.Stat(file)
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want mode %s", file, fi.Mode().Perm(), err, mode)
		}
	}
	priv, err := ReadPrivateKey(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ReadPublicKey(prefix + ".pub")
	if err != nil || KeyID(pub) != id || !pub.Equal(priv.Public()) {
		t.Fatalf("public key %v (id %s), %v; want the private key's, id %s", pub, KeyID(pub), err, id)
	}
	if _, err := GenerateKey(prefix); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("overwriting a key: %v", err)
	}
	if _, err := ReadPublicKey(prefix + ".key"); err == nil || !strings.Contains(err.Error(), `want "PUBLIC KEY"`) {
		t.Errorf("private key read as public: %v", err)
	}
	if _, err := ReadPrivateKey(prefix + ".pub"); err == nil || !strings.Contains(err.Error(), `want "PRIVATE KEY"`) {
		t.Errorf("public key read as private: %v", err)
	}
}

func TestSignAndCheck(t *testing.T) {
	publisher, pid := newKey(t, "publisher")
	other, oid := newKey(t, "other")
	trusted := trust(t, publisher)

	archive := func(t *testing.T) string {
		return writeFile(t, t.TempDir(), "echo-1.2.0.tar.gz", tarGz(t, goodEntries(t, nil)))
	}
	check := func(t *testing.T, path string) (string, error) {
		t.Helper()
		b, err := VerifyBundle(path)
		if err != nil {
			t.Fatalf("signed bundle no longer opens: %v", err)
		}
		return trusted.Check(b)
	}

	t.Run("archive signed by a trusted key", func(t *testing.T) {
		p := archive(t)
		if id := sign(t, p, publisher); id != pid {
			t.Errorf("Sign returned %s, want %s", id, pid)
		}
		if id, err := check(t, p); err != nil || id != pid {
			t.Fatalf("Check = %s, %v; want %s", id, err, pid)
		}
		// Signing again replaces the signature.
		sign(t, p, publisher)
		if _, err := check(t, p); err != nil {
			t.Fatalf("signed twice: %v", err)
		}
	})
	t.Run("directory signed by a trusted key", func(t *testing.T) {
		dir := makeDir(t, "echo", goodEntries(t, nil))
		sign(t, dir, publisher)
		b, err := Open(dir, filepath.Join(t.TempDir(), "private"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(b.Dir, SignatureFile)); err != nil {
			t.Errorf("signature not in the private copy: %v", err)
		}
		if id, err := trusted.Check(b); err != nil || id != pid {
			t.Fatalf("Check = %s, %v", id, err)
		}
	})
	t.Run("unsigned", func(t *testing.T) {
		_, err := check(t, archive(t))
		checkErr(t, err, ErrUnsigned, "echo-1.2.0.tar.gz", "not signed", pid, "plughost bundle sign -key")
	})
	t.Run("untrusted key", func(t *testing.T) {
		p := archive(t)
		sign(t, p, other)
		id, err := check(t, p)
		checkErr(t, err, ErrUntrustedKey, "signed by key "+oid, "does not trust", pid, "trusted_keys")
		if id != oid {
			t.Errorf("Check named key %s, want %s", id, oid)
		}
	})
	t.Run("manifest changed after signing", func(t *testing.T) {
		dir := makeDir(t, "echo", goodEntries(t, nil))
		sign(t, dir, publisher)
		edited := manifestJSON(t, func(m map[string]any) { m["resources"] = map[string]any{"memory_mb": 4096} })
		if err := os.WriteFile(filepath.Join(dir, ManifestFile), edited, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := check(t, dir)
		checkErr(t, err, ErrBadSignature, pid, "does not match this bundle", "changed after it was signed")
	})
	t.Run("executable changed after signing", func(t *testing.T) {
		dir := makeDir(t, "echo", goodEntries(t, nil))
		sign(t, dir, publisher)
		const evil = "#!/bin/sh\necho evil\n"
		edited := manifestJSON(t, func(m map[string]any) { m["sha256"] = sha(evil) })
		if err := os.WriteFile(filepath.Join(dir, ManifestFile), edited, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "echo"), []byte(evil), 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := check(t, dir)
		checkErr(t, err, ErrBadSignature, "does not match this bundle")
	})
	t.Run("garbage signature", func(t *testing.T) {
		dir := makeDir(t, "echo", append(goodEntries(t, nil), file(SignatureFile, `{"algorithm":"rsa"}`, 0o644)))
		_, err := check(t, dir)
		checkErr(t, err, ErrBadSignature, `algorithm "rsa"`)
	})
	t.Run("nil trusted keys accept anything", func(t *testing.T) {
		b, err := VerifyBundle(archive(t))
		if err != nil {
			t.Fatal(err)
		}
		var none *TrustedKeys
		if _, err := none.Check(b); err != nil {
			t.Fatal(err)
		}
	})
}

// TestSignKeepsTheArchiveValid: the signed archive holds exactly what it
// held, plus plugin.sig.
func TestSignKeepsTheArchiveValid(t *testing.T) {
	publisher, _ := newKey(t, "publisher")
	p := writeFile(t, t.TempDir(), "echo-1.2.0.tar.gz", tarGz(t, goodEntries(t, nil)))
	sign(t, p, publisher)
	b, err := Open(p, filepath.Join(t.TempDir(), "u"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(b.Dir, ManifestFile))
	if err != nil || !bytes.Equal(got, manifestJSON(t, nil)) {
		t.Errorf("manifest changed by signing: %s %v", got, err)
	}
	if b.Signature == nil {
		t.Error("no signature in the signed archive")
	}
	if _, _, err := b.Signer(); err != nil {
		t.Error(err)
	}
}

func TestLoadTrustedKeysRefusesBadFiles(t *testing.T) {
	bad := writeFile(t, t.TempDir(), "bad.pub", []byte("not a key"))
	if _, err := LoadTrustedKeys([]string{bad}); err == nil || !strings.Contains(err.Error(), "no PEM block") {
		t.Errorf("LoadTrustedKeys(garbage) = %v", err)
	}
	if tk, err := LoadTrustedKeys(nil); tk != nil || err != nil {
		t.Errorf("LoadTrustedKeys(nil) = %v, %v; want nil, nil", tk, err)
	}
}

// TestReadInstalledKeepsTheSignature: what InstallTo installed reads back
// with the signature that was checked at intake.
func TestReadInstalledKeepsTheSignature(t *testing.T) {
	publisher, pid := newKey(t, "publisher")
	p := writeFile(t, t.TempDir(), "echo-1.2.0.tar.gz", tarGz(t, goodEntries(t, nil)))
	sign(t, p, publisher)
	b, err := Open(p, filepath.Join(t.TempDir(), "u"))
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "echo", "1.2.0")
	if err := b.InstallTo(dest); err != nil {
		t.Fatal(err)
	}
	got, err := ReadInstalled(dest)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := trust(t, publisher).Check(got); err != nil || id != pid {
		t.Fatalf("installed bundle: Check = %s, %v", id, err)
	}
	if err := os.Remove(filepath.Join(dest, SignatureFile)); err != nil {
		t.Fatal(err)
	}
	got, err = ReadInstalled(dest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust(t, publisher).Check(got); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("installed bundle without its signature: %v, want ErrUnsigned", err)
	}
}
