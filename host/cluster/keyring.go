package cluster

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// KeyringFile is the file, in Config.DataDir, that holds the gossip
// keyring: a JSON list of base64 keys, the primary first. Serf rewrites it
// when a key is installed, used or removed, so the keyring survives a
// restart.
const KeyringFile = "keyring"

// GossipKeySize is the size in bytes of the keys GenerateKey makes
// (AES-256). Keys of 16 and 24 bytes are accepted too, as memberlist does.
const GossipKeySize = 32

// Keyring errors.
var (
	// ErrNoGossipKey: a node that must encrypt its gossip has neither
	// -encrypt nor a keyring file.
	ErrNoGossipKey = errors.New("gossip encryption is required: give every agent the same -encrypt KEY (make one with 'plughost keygen'); only -dev runs without")
	// ErrBadGossipKey: a key that is not base64 of 16, 24 or 32 bytes.
	ErrBadGossipKey = errors.New("a gossip key is base64 of 32 bytes (or 16 or 24): make one with 'plughost keygen'")
	// ErrNoEncryption: a keyring operation on a node whose gossip is
	// plaintext.
	ErrNoEncryption = errors.New("gossip encryption is off on this agent: start it with -encrypt KEY to use a keyring")
)

// GenerateKey makes a new random gossip key, base64-encoded.
func GenerateKey() (string, error) {
	b := make([]byte, GossipKeySize)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// DecodeKey decodes a base64 gossip key and checks its size.
func DecodeKey(key string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrBadGossipKey, err)
	}
	switch len(b) {
	case 16, 24, 32:
		return b, nil
	}
	return nil, fmt.Errorf("%w (this one is %d bytes)", ErrBadGossipKey, len(b))
}

// HasKeyring reports whether dir holds a keyring file.
func HasKeyring(dir string) bool {
	if dir == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(dir, KeyringFile))
	return err == nil
}

// setupKeyring gives ml the node's gossip keyring and sc the file serf
// keeps it in, as Consul does: the first start with -encrypt writes the
// keyring file with that key; later starts load the file, which wins over
// -encrypt (keys installed and used with 'plughost keyring' since are
// kept). It reports whether gossip is encrypted.
func setupKeyring(cfg Config, sc *serf.Config, ml *memberlist.Config, log hclog.Logger) (bool, error) {
	var primary []byte
	if cfg.EncryptKey != "" {
		k, err := DecodeKey(cfg.EncryptKey)
		if err != nil {
			return false, fmt.Errorf("-encrypt: %w", err)
		}
		primary = k
	}
	path := ""
	if cfg.DataDir != "" {
		path = filepath.Join(cfg.DataDir, KeyringFile)
	}
	existing := path != "" && HasKeyring(cfg.DataDir)
	if !existing && path != "" && primary != nil {
		if err := writeKeyring(path, [][]byte{primary}); err != nil {
			return false, err
		}
	}
	var keys [][]byte
	switch {
	case path != "" && (existing || primary != nil):
		var err error
		if keys, err = readKeyring(path); err != nil {
			return false, err
		}
		sc.KeyringFile = path
	case primary != nil:
		keys = [][]byte{primary}
	}
	if keys == nil {
		if cfg.RequireEncryption {
			return false, ErrNoGossipKey
		}
		return false, nil
	}
	if existing && primary != nil && string(keys[0]) != string(primary) {
		log.Warn("-encrypt is not the primary key of this node's keyring: the keyring file wins (it keeps the keys 'plughost keyring' installed and used); update -encrypt to the primary key, or leave it out",
			"keyring", path)
	}
	kr, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return false, fmt.Errorf("keyring %s: %w", path, err)
	}
	ml.Keyring = kr
	ml.GossipVerifyIncoming = true
	ml.GossipVerifyOutgoing = true
	return true, nil
}

// readKeyring reads a keyring file: a JSON list of base64 keys, the
// primary first.
func readKeyring(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	var encoded []string
	if err := json.Unmarshal(data, &encoded); err != nil {
		return nil, fmt.Errorf("gossip keyring %s is not a JSON list of keys: %w (remove it and start with -encrypt KEY)", path, err)
	}
	if len(encoded) == 0 {
		return nil, fmt.Errorf("gossip keyring %s holds no key (remove it and start with -encrypt KEY)", path)
	}
	keys := make([][]byte, 0, len(encoded))
	for i, e := range encoded {
		k, err := DecodeKey(e)
		if err != nil {
			return nil, fmt.Errorf("gossip keyring %s, key %d: %w", path, i+1, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// writeKeyring writes a keyring file, mode 0600, in the format serf writes.
func writeKeyring(path string, keys [][]byte) error {
	encoded := make([]string, len(keys))
	for i, k := range keys {
		encoded[i] = base64.StdEncoding.EncodeToString(k)
	}
	data, err := json.MarshalIndent(encoded, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("gossip keyring: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("gossip keyring: %w", err)
	}
	// The mode is set, not left to the umask, and again on a file an
	// interrupted earlier write left.
	_, err = f.Write(data)
	err = errors.Join(err, f.Chmod(0o600), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("gossip keyring: %w", err)
	}
	return nil
}

// KeyringResult is what the nodes answered to a keyring operation.
type KeyringResult struct {
	Nodes     int               // members asked
	Responses int               // members that answered
	Errors    map[string]string // node name → why it failed
	Messages  map[string]string // node name → a warning from a node that succeeded
	Keys      []KeyCount        // keys installed (list only), sorted
}

// KeyCount is one key and how many nodes hold it.
type KeyCount struct {
	Key       string // base64
	Nodes     int    // nodes that have it installed
	PrimaryOf int    // nodes that use it as their primary key
}

// Keyring operations, cluster-wide through serf's key manager.
const (
	KeyringList    = "list"
	KeyringInstall = "install"
	KeyringUse     = "use"
	KeyringRemove  = "remove"
)

// Keyring runs a keyring operation on every member and gathers their
// answers. A node that failed is in the result's Errors; the error
// returned is for the operation as a whole (a bad key, no encryption
// here, or some nodes failed or did not answer).
func (c *Cluster) Keyring(op, key string) (*KeyringResult, error) {
	if !c.encrypted {
		return nil, ErrNoEncryption
	}
	if op != KeyringList {
		if _, err := DecodeKey(key); err != nil {
			return nil, err
		}
	}
	km := c.serf.KeyManager()
	var (
		resp *serf.KeyResponse
		err  error
	)
	switch op {
	case KeyringList:
		resp, err = km.ListKeys()
	case KeyringInstall:
		resp, err = km.InstallKey(key)
	case KeyringUse:
		resp, err = km.UseKey(key)
	case KeyringRemove:
		resp, err = km.RemoveKey(key)
	default:
		return nil, fmt.Errorf("keyring: unknown operation %q", op)
	}
	if resp == nil || resp.NumNodes == 0 {
		return nil, err // the query did not go out
	}
	res := &KeyringResult{Nodes: resp.NumNodes, Responses: resp.NumResp, Errors: map[string]string{}, Messages: map[string]string{}}
	// serf puts failures and warnings in one map; its handlers answer
	// with a message only when they fail, bar a list too long to send.
	for node, msg := range resp.Messages {
		if resp.NumErr == 0 {
			res.Messages[node] = msg
			continue
		}
		if msg == "" {
			msg = "failed without saying why (see that agent's log)"
		}
		res.Errors[node] = msg
	}
	for k, n := range resp.Keys {
		res.Keys = append(res.Keys, KeyCount{Key: k, Nodes: n, PrimaryOf: resp.PrimaryKeys[k]})
	}
	sort.Slice(res.Keys, func(i, j int) bool { return res.Keys[i].Key < res.Keys[j].Key })
	return res, err
}
