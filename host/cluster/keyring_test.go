package cluster

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

func TestGenerateKey(t *testing.T) {
	a, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateKey()
	raw, err := DecodeKey(a)
	if err != nil || len(raw) != GossipKeySize || a == b {
		t.Fatalf("GenerateKey() = %q, %q: decoded %d bytes, %v", a, b, len(raw), err)
	}
}

func TestDecodeKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want string // "" ok
	}{
		{base64.StdEncoding.EncodeToString(make([]byte, 32)), ""},
		{base64.StdEncoding.EncodeToString(make([]byte, 16)), ""},
		{base64.StdEncoding.EncodeToString(make([]byte, 31)), "this one is 31 bytes"},
		{"%%%", "illegal base64"},
		{"", "this one is 0 bytes"},
	} {
		_, err := DecodeKey(tc.key)
		if (tc.want == "") != (err == nil) || err != nil && (!strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrBadGossipKey)) {
			t.Errorf("DecodeKey(%q) = %v, want %q", tc.key, err, tc.want)
		}
	}
}

// keyringSetup runs setupKeyring as Start does and returns the log.
func keyringSetup(t *testing.T, cfg Config) (*serf.Config, *memberlist.Config, string, bool, error) {
	t.Helper()
	var log bytes.Buffer
	sc, ml := serf.DefaultConfig(), memberlist.DefaultLANConfig()
	ok, err := setupKeyring(cfg, sc, ml, hclog.New(&hclog.LoggerOptions{Output: &log}))
	return sc, ml, log.String(), ok, err
}

// TestSetupKeyring: the first start with -encrypt writes the keyring file,
// 0600; the file wins on later starts, with a warning when -encrypt is
// not its primary key; without either, a node that must encrypt refuses.
func TestSetupKeyring(t *testing.T) {
	k1, _ := GenerateKey()
	k2, _ := GenerateKey()
	dir := filepath.Join(t.TempDir(), "serf")
	path := filepath.Join(dir, KeyringFile)

	if _, _, _, _, err := keyringSetup(t, Config{DataDir: dir, RequireEncryption: true}); !errors.Is(err, ErrNoGossipKey) {
		t.Fatalf("no key, encryption required: %v, want ErrNoGossipKey", err)
	}
	if _, ml, _, ok, err := keyringSetup(t, Config{DataDir: dir}); err != nil || ok || ml.Keyring != nil {
		t.Fatalf("no key, not required: encrypted %v, %v", ok, err)
	}

	sc, ml, log, ok, err := keyringSetup(t, Config{DataDir: dir, EncryptKey: k1, RequireEncryption: true})
	if err != nil || !ok || sc.KeyringFile != path || !ml.GossipVerifyIncoming || !ml.GossipVerifyOutgoing || strings.Contains(log, "[WARN]") {
		t.Fatalf("first start: encrypted %v, %v, keyring file %q, log %s", ok, err, sc.KeyringFile, log)
	}
	if got := base64.StdEncoding.EncodeToString(ml.Keyring.GetPrimaryKey()); got != k1 {
		t.Fatalf("primary key %s, want -encrypt's %s", got, k1)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keyring file: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}

	// As serf leaves it after 'keyring -install k2 -use k2 -remove k1'.
	raw2, _ := DecodeKey(k2)
	if err := writeKeyring(path, [][]byte{raw2}); err != nil {
		t.Fatal(err)
	}
	_, ml, log, _, err = keyringSetup(t, Config{DataDir: dir, EncryptKey: k1, RequireEncryption: true})
	if err != nil || base64.StdEncoding.EncodeToString(ml.Keyring.GetPrimaryKey()) != k2 {
		t.Fatalf("restart with the old -encrypt: %v, primary %x", err, ml.Keyring.GetPrimaryKey())
	}
	if !strings.Contains(log, "[WARN]") || !strings.Contains(log, "the keyring file wins") || !strings.Contains(log, path) {
		t.Fatalf("restart with a -encrypt the keyring no longer uses: no warning naming what wins:\n%s", log)
	}
	if _, _, _, ok, err := keyringSetup(t, Config{DataDir: dir, RequireEncryption: true}); err != nil || !ok {
		t.Fatalf("restart without -encrypt, keyring present: encrypted %v, %v", ok, err)
	}

	for body, want := range map[string]string{`{}`: "not a JSON list", `[]`: "holds no key", `["c2hvcnQ="]`: "key 1"} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, _, _, err := keyringSetup(t, Config{DataDir: dir}); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
			t.Errorf("keyring file %s: %v, want an error naming the file and %q", body, err, want)
		}
	}
}
