package acl

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// SystemNamespace is the store namespace ACL records live in.
const SystemNamespace = store.SystemNamespace

// Keys inside SystemNamespace. A token is kept under its accessor ID with a
// SHA-256 of its secret, never the secret; the secret index maps that hash
// back to the accessor, so that two tokens never share a secret.
const (
	prefixACL      = store.SystemACLPrefix
	prefixToken    = "acl/tokens/"
	prefixSecret   = "acl/secrets/"
	prefixPolicy   = "acl/policies/"
	keyBootstrap   = store.SystemACLBootstrapKey
	keyServerToken = "acl/server-token"
)

// Token is a token as the cluster keeps it.
type Token struct {
	AccessorID   string    `json:"accessor_id"`
	SecretSHA256 string    `json:"secret_sha256"`
	Description  string    `json:"description"`
	Policies     []string  `json:"policies"`
	CreateTime   time.Time `json:"create_time"`
}

// Policy is a named policy as the cluster keeps it.
type Policy struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Rules       string `json:"rules"`
}

type bootstrapRecord struct {
	AccessorID string    `json:"accessor_id"`
	At         time.Time `json:"at"`
}

var (
	uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	hashRe = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// newID returns a random UUID (version 4): 122 random bits.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// hashSecret is the key a secret is known by.
func hashSecret(secret string) [32]byte {
	// A UUID fits the buffer, which stays on the stack: a call costs no
	// allocation for it.
	var buf [64]byte
	return sha256.Sum256(append(buf[:0], secret...))
}

func hashHex(secret string) string {
	h := hashSecret(secret)
	return hex.EncodeToString(h[:])
}

// validate checks a token record read from the store: a record that fails
// is ignored, so hostile data in the system namespace cannot crash the
// agent or stand for a token.
func (t *Token) validate(key string) error {
	switch {
	case !uuidRe.MatchString(t.AccessorID):
		return fmt.Errorf("accessor_id %q is not a UUID", t.AccessorID)
	case key != prefixToken+t.AccessorID:
		return fmt.Errorf("kept under %q, not its accessor", key)
	case !hashRe.MatchString(t.SecretSHA256):
		return errors.New("secret_sha256 is not a SHA-256 in hex")
	case len(t.Description) > 256:
		return errors.New("description longer than 256 bytes")
	case len(t.Policies) > 64:
		return errors.New("more than 64 policies")
	}
	for _, p := range t.Policies {
		if err := ValidPolicyName(p); err != nil {
			return err
		}
	}
	return nil
}

func (p *Policy) validate(key string) (*Rules, error) {
	if err := ValidPolicyName(p.Name); err != nil {
		return nil, err
	}
	if key != prefixPolicy+p.Name {
		return nil, fmt.Errorf("kept under %q, not its name", key)
	}
	if _, builtin := builtinRules[p.Name]; builtin {
		return nil, fmt.Errorf("%s is a built-in policy", p.Name)
	}
	if len(p.Rules) > 64<<10 {
		return nil, errors.New("rules longer than 64 KiB")
	}
	return ParseRules(p.Rules)
}

// Identity is who a resolved token is and what it may do.
type Identity struct {
	AccessorID  string
	Description string
	Authz       *Authorizer
}

// Actor is the name history and events record for the token's holder: its
// description and the start of its accessor ID.
func (id *Identity) Actor() string {
	short := id.AccessorID
	if len(short) > 8 {
		short = short[:8]
	}
	if id.Description == "" {
		return "token " + short
	}
	return id.Description + " (" + short + ")"
}

// agentIdentity is the identity of another agent of the cluster, known by
// the server certificate it presents on the cluster RPC port.
var agentIdentity = &Identity{AccessorID: "agent", Description: "agent", Authz: newAuthorizer(true, nil)}

// state is one consistent view of the ACL records, resolved.
type state struct {
	byHash       map[[32]byte]*Identity
	tokens       map[string]*Token
	policies     map[string]*Policy
	bootstrapped bool
	// legacyServerToken: the store still holds an earlier version's
	// plain-text server token (keyServerToken), for the leader to delete.
	legacyServerToken bool
	revision          int64
}

// listSys reads every key under prefix from this node's copy of the store.
func listSys(ctx context.Context, st *store.Store, prefix string) ([]*storev1.KeyValue, int64, error) {
	var (
		out  []*storev1.KeyValue
		page []byte
		rev  int64
	)
	for {
		resp, err := st.List(ctx, &storev1.ListRequest{Namespace: SystemNamespace, Prefix: []byte(prefix),
			Consistency: storev1.Consistency_CONSISTENCY_STALE, PageToken: page})
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.GetRevision()
		}
		out = append(out, resp.GetKvs()...)
		if page = resp.GetNextPageToken(); len(page) == 0 {
			return out, rev, nil
		}
	}
}

// load builds a state from the store's ACL records; warn is told about
// every record it ignores.
func load(ctx context.Context, st *store.Store, warn func(key string, err error)) (*state, []*storev1.KeyValue, error) {
	kvs, rev, err := listSys(ctx, st, prefixACL)
	if err != nil {
		return nil, nil, err
	}
	return build(kvs, rev, warn), kvs, nil
}

// build resolves ACL records.
func build(kvs []*storev1.KeyValue, rev int64, warn func(key string, err error)) *state {
	s := &state{byHash: map[[32]byte]*Identity{}, tokens: map[string]*Token{}, policies: map[string]*Policy{}, revision: rev}
	rules := map[string]*Rules{}
	for _, kv := range kvs {
		key := string(kv.GetKey())
		switch {
		case strings.HasPrefix(key, prefixToken):
			var t Token
			if err := json.Unmarshal(kv.GetValue(), &t); err != nil {
				warn(key, err)
				continue
			}
			if err := t.validate(key); err != nil {
				warn(key, err)
				continue
			}
			s.tokens[t.AccessorID] = &t
		case strings.HasPrefix(key, prefixPolicy):
			var p Policy
			if err := json.Unmarshal(kv.GetValue(), &p); err != nil {
				warn(key, err)
				continue
			}
			r, err := p.validate(key)
			if err != nil {
				warn(key, err)
				continue
			}
			s.policies[p.Name], rules[p.Name] = &p, r
		case key == keyServerToken:
			// A server token kept in plain text by an earlier version: no
			// credential now (agents are known by their certificates); the
			// leader deletes it.
			s.legacyServerToken = true
		case key == keyBootstrap:
			s.bootstrapped = true
		}
	}
	readOnly, _ := ParseRules(builtinRules[ReadOnly])
	for _, t := range s.tokens {
		var (
			rs         []*Rules
			management bool
		)
		for _, name := range t.Policies {
			switch name {
			case GlobalManagement:
				management = true
			case ReadOnly:
				rs = append(rs, readOnly)
			default:
				if r := rules[name]; r != nil {
					rs = append(rs, r)
				}
			}
		}
		h, _ := hex.DecodeString(t.SecretSHA256)
		s.byHash[[32]byte(h)] = &Identity{AccessorID: t.AccessorID, Description: t.Description, Authz: newAuthorizer(management, rs)}
	}
	return s
}

// empty reports whether s holds no token at all: a store that has not
// (yet) applied any ACL record.
func (s *state) empty() bool { return len(s.tokens) == 0 && !s.bootstrapped }

// policyNames lists the known policies, built-in ones first.
func (s *state) policyNames() []string {
	names := make([]string, 0, len(s.policies))
	for n := range s.policies {
		names = append(names, n)
	}
	sort.Strings(names)
	return append([]string{GlobalManagement, ReadOnly}, names...)
}

// Write operations. Each is one transaction on the leader (the store
// forwards it), guarded by compares so that concurrent callers cannot
// make two bootstrap tokens or a token with a missing policy.

func put(key string, v any) *storev1.TxnOp {
	b, _ := json.Marshal(v)
	return &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: []byte(key), Value: b}}}
}

func del(key string) *storev1.TxnOp {
	return &storev1.TxnOp{Op: &storev1.TxnOp_Delete{Delete: &storev1.TxnDelete{Key: []byte(key)}}}
}

func exists(key string, want bool) *storev1.Compare {
	return &storev1.Compare{Key: []byte(key), Target: &storev1.Compare_Exists{Exists: want}}
}

func txn(ctx context.Context, st *store.Store, compares []*storev1.Compare, ops ...*storev1.TxnOp) (bool, error) {
	resp, err := st.Txn(ctx, &storev1.TxnRequest{Namespace: SystemNamespace, Compares: compares, Success: ops})
	if err != nil {
		return false, err
	}
	return resp.GetSucceeded(), nil
}

// Errors of the write operations.
var (
	// ErrBootstrapped means the cluster's ACLs were bootstrapped already.
	ErrBootstrapped = errors.New("ACL bootstrap already done")
	// ErrNotFound means no token or policy has that ID or name.
	ErrNotFound = errors.New("not found")
	// ErrExists means a policy of that name exists already.
	ErrExists = errors.New("already exists")
	// ErrInUse means a policy is still attached to a token.
	ErrInUse = errors.New("in use")
	// ErrInvalid means a request is malformed.
	ErrInvalid = errors.New("invalid")
)

// newToken returns a token record and its secret.
func newToken(description string, policies []string) (*Token, string) {
	secret := newID()
	return &Token{AccessorID: newID(), SecretSHA256: hashHex(secret), Description: description,
		Policies: policies, CreateTime: time.Now().UTC().Truncate(time.Second)}, secret
}

func tokenOps(t *Token) []*storev1.TxnOp {
	return []*storev1.TxnOp{put(prefixToken+t.AccessorID, t), put(prefixSecret+t.SecretSHA256, t.AccessorID)}
}

func tokenCompares(t *Token) []*storev1.Compare {
	return []*storev1.Compare{exists(prefixToken+t.AccessorID, false), exists(prefixSecret+t.SecretSHA256, false)}
}

// bootstrap makes the first management token, once per cluster.
func bootstrap(ctx context.Context, st *store.Store, description string) (*Token, string, error) {
	t, secret := newToken(description, []string{GlobalManagement})
	ok, err := txn(ctx, st, append(tokenCompares(t), exists(keyBootstrap, false)),
		append(tokenOps(t), put(keyBootstrap, bootstrapRecord{AccessorID: t.AccessorID, At: t.CreateTime}))...)
	if err != nil {
		return nil, "", err
	}
	if !ok {
		return nil, "", ErrBootstrapped
	}
	return t, secret, nil
}

// createToken makes a token with policies, each of which must exist.
func createToken(ctx context.Context, st *store.Store, description string, policies []string) (*Token, string, error) {
	if len(description) > 256 {
		return nil, "", fmt.Errorf("%w: a description is at most 256 bytes", ErrInvalid)
	}
	if len(policies) == 0 {
		return nil, "", fmt.Errorf("%w: a token needs at least one policy (-policy NAME; see 'plughost acl policy list')", ErrInvalid)
	}
	if len(policies) > 64 {
		return nil, "", fmt.Errorf("%w: a token has at most 64 policies", ErrInvalid)
	}
	var compares []*storev1.Compare
	seen := map[string]bool{}
	var ps []string
	for _, p := range policies {
		if err := ValidPolicyName(p); err != nil {
			return nil, "", fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		ps = append(ps, p)
		if _, builtin := builtinRules[p]; !builtin {
			compares = append(compares, exists(prefixPolicy+p, true))
		}
	}
	t, secret := newToken(description, ps)
	ok, err := txn(ctx, st, append(compares, tokenCompares(t)...), tokenOps(t)...)
	if err != nil {
		return nil, "", err
	}
	if !ok {
		return nil, "", fmt.Errorf("%w: a policy of %s does not exist (see 'plughost acl policy list')", ErrNotFound, strings.Join(ps, ", "))
	}
	return t, secret, nil
}

// deleteToken revokes a token.
func deleteToken(ctx context.Context, st *store.Store, t *Token) error {
	ok, err := txn(ctx, st, []*storev1.Compare{exists(prefixToken+t.AccessorID, true)},
		del(prefixToken+t.AccessorID), del(prefixSecret+t.SecretSHA256))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("token %s: %w", t.AccessorID, ErrNotFound)
	}
	return nil
}

// createPolicy stores a new policy.
func createPolicy(ctx context.Context, st *store.Store, p *Policy) error {
	if err := ValidPolicyName(p.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, builtin := builtinRules[p.Name]; builtin {
		return fmt.Errorf("policy %s: %w (it is built in)", p.Name, ErrExists)
	}
	if _, err := p.validate(prefixPolicy + p.Name); err != nil {
		return fmt.Errorf("%w: policy %s: %v", ErrInvalid, p.Name, err)
	}
	ok, err := txn(ctx, st, []*storev1.Compare{exists(prefixPolicy+p.Name, false)}, put(prefixPolicy+p.Name, p))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("policy %s: %w (delete it first to replace it)", p.Name, ErrExists)
	}
	return nil
}

// deletePolicy deletes a policy no token in s uses.
func deletePolicy(ctx context.Context, st *store.Store, s *state, name string) error {
	if _, builtin := builtinRules[name]; builtin {
		return fmt.Errorf("%w: policy %s is built in and cannot be deleted", ErrInvalid, name)
	}
	for _, t := range s.tokens {
		for _, p := range t.Policies {
			if p == name {
				return fmt.Errorf("policy %s: %w by token %s (%s); delete that token first", name, ErrInUse, t.AccessorID, t.Description)
			}
		}
	}
	ok, err := txn(ctx, st, []*storev1.Compare{exists(prefixPolicy+name, true)}, del(prefixPolicy+name))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("policy %s: %w", name, ErrNotFound)
	}
	return nil
}

// deleteLegacyServerToken deletes the plain-text server token an earlier
// version kept in the system namespace.
func deleteLegacyServerToken(ctx context.Context, st *store.Store) error {
	_, err := txn(ctx, st, nil, del(keyServerToken))
	return err
}
