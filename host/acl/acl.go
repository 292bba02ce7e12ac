// Package acl is plughost's access control: tokens with policies, kept
// hashed in the replicated store's system namespace, resolved from an
// in-memory copy, and enforced on the agent's API (see Enforcer).
//
// Its model is Consul's: a token has a public accessor ID and a secret ID
// (the bearer credential); policies are named sets of rules on plugins,
// store namespaces, node operations and ACLs themselves; the built-in
// global-management policy allows everything.
package acl

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	hclog "github.com/hashicorp/go-hclog"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// Resolver resolves secrets to identities from an in-memory copy of the
// cluster's ACL records, kept current by a watch on this node's store: a
// change (a revoked token) takes effect as soon as this node applies it.
type Resolver struct {
	st  *store.Store
	log hclog.Logger
	// cache, if set, is a file that keeps the last records read, for a
	// node restarted without a leader: raft applies the log past its last
	// snapshot only once a leader says what is committed, so its store
	// may not hold the ACL records yet (see SetCacheFile).
	cache     string
	cachedRev int64
	// storeHeld is set once the store held ACL records: from then on the
	// store alone says what they are, and the cache never stands in.
	storeHeld bool

	reloadMu sync.Mutex // serializes reloads and the cache file
	state    atomic.Pointer[state]
	changed  chan struct{} // a reload was asked for

	warnedMu sync.Mutex
	warned   map[string]bool

	// missReload is when a secret the copy did not know last made it read
	// the records again (unix nanoseconds): see Resolve.
	missReload atomic.Int64

	// live are the open calls to end should their token be revoked.
	live liveCalls

	// initial is the configured initial management secret, or "" (see
	// SetInitialManagement).
	initial string
}

// missReloadEvery bounds how often secrets the copy does not know make it
// read the records again, so unknown tokens cost little.
const missReloadEvery = 250 * time.Millisecond

// NewResolver returns a resolver for st. It knows no token until Run has
// loaded the store's records.
func NewResolver(st *store.Store, log hclog.Logger) *Resolver {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	r := &Resolver{st: st, log: log, changed: make(chan struct{}, 1), warned: map[string]bool{}}
	r.state.Store(&state{byHash: map[[32]byte]*Identity{}, tokens: map[string]*Token{}, policies: map[string]*Policy{}})
	return r
}

// reloadEvery bounds how stale the copy may get should a change come
// without a watch event (a store restore).
const reloadEvery = 10 * time.Second

// Run keeps the copy current until ctx ends. While this node leads it
// also bootstraps the ACLs with the configured initial management token
// (SetInitialManagement) and deletes an earlier version's plain-text
// server token.
func (r *Resolver) Run(ctx context.Context) {
	go r.watch(ctx)
	tick := time.NewTicker(reloadEvery)
	defer tick.Stop()
	lead := time.NewTicker(time.Second)
	defer lead.Stop()
	r.reload(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.changed:
		case <-tick.C:
		case <-lead.C:
			if r.initial != "" && r.st.IsLeader() && !r.state.Load().bootstrapped {
				r.bootstrapInitial(ctx)
			}
			if r.st.IsLeader() && r.state.Load().legacyServerToken {
				if err := deleteLegacyServerToken(ctx, r.st); err != nil {
					r.log.Debug("deleting the plain-text server token of an earlier version", "error", err)
				}
			}
			continue
		}
		r.reload(ctx)
	}
}

// watch asks for a reload at every change to the ACL records.
func (r *Resolver) watch(ctx context.Context) {
	for ctx.Err() == nil {
		err := r.st.Watch(ctx, &storev1.WatchRequest{Namespace: SystemNamespace, Prefix: []byte(prefixACL)}, func(*storev1.WatchResponse) error {
			r.poke()
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		r.log.Debug("ACL watch ended; watching again", "error", err)
		r.poke() // what the watch missed
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (r *Resolver) poke() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *Resolver) reload(ctx context.Context) {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	s, kvs, err := load(ctx, r.st, r.warn)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("reading the ACL records; keeping the last copy", "error", err)
		}
		return
	}
	switch {
	case r.cache == "":
	case s.empty() && !r.storeHeld:
		// Not caught up yet, it seems: stand in with the last records read.
		if c := r.readCache(); c != nil {
			s = c
		}
	case s.revision != r.cachedRev:
		// Records the store no longer holds (deleted tokens; all of them
		// deleted) are gone from the cache as they are from the store.
		r.storeHeld = true
		r.writeCache(kvs, s.revision)
	}
	r.state.Store(s)
	r.recheck(s)
}

// SetCacheFile makes the resolver keep the ACL records it reads in path
// (mode 0600), and fall back on them while the store holds none. Call it
// before Run.
func (r *Resolver) SetCacheFile(path string) { r.cache = path }

type cacheFile struct {
	Revision int64         `json:"revision"`
	Records  []cacheRecord `json:"records"`
}

type cacheRecord struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value"`
}

func (r *Resolver) readCache() *state {
	b, err := os.ReadFile(r.cache)
	if err != nil {
		return nil
	}
	var c cacheFile
	if err := json.Unmarshal(b, &c); err != nil {
		r.log.Warn("ignoring the ACL cache file", "path", r.cache, "error", err)
		return nil
	}
	kvs := make([]*storev1.KeyValue, len(c.Records))
	for i, rec := range c.Records {
		kvs[i] = &storev1.KeyValue{Key: rec.Key, Value: rec.Value}
	}
	return build(kvs, c.Revision, r.warn)
}

func (r *Resolver) writeCache(kvs []*storev1.KeyValue, rev int64) {
	c := cacheFile{Revision: rev, Records: make([]cacheRecord, len(kvs))}
	for i, kv := range kvs {
		c.Records[i] = cacheRecord{Key: kv.GetKey(), Value: kv.GetValue()}
	}
	b, err := json.Marshal(c)
	if err == nil {
		err = writeFile0600(r.cache, b)
	}
	if err != nil {
		r.log.Warn("writing the ACL cache file", "path", r.cache, "error", err)
		return
	}
	r.cachedRev = rev
}

// Reload reads the ACL records now, for a caller that just changed them.
func (r *Resolver) Reload(ctx context.Context) { r.reload(ctx) }

func (r *Resolver) warn(key string, err error) {
	r.warnedMu.Lock()
	defer r.warnedMu.Unlock()
	if r.warned[key] {
		return
	}
	r.warned[key] = true
	r.log.Warn("ignoring an invalid ACL record in the _sys namespace", "key", key, "error", err)
}

// Errors of Resolve.
var (
	// ErrNoToken means the call carries no token.
	ErrNoToken = errors.New("no ACL token")
	// ErrTokenNotFound means no token has the secret: it never existed or
	// was deleted.
	ErrTokenNotFound = errors.New("ACL token not found")
)

// Resolve returns the identity of secret.
func (r *Resolver) Resolve(secret string) (*Identity, error) {
	if secret == "" {
		return nil, ErrNoToken
	}
	h := hashSecret(secret)
	if id := r.state.Load().byHash[h]; id != nil {
		return id, nil
	}
	// A token made a moment ago (`acl bootstrap` and then a command, on a
	// node the write was forwarded from) may be in the store before the
	// watch has brought it into the copy: read the records once more, at
	// most every missReloadEvery.
	now := time.Now().UnixNano()
	last := r.missReload.Load()
	if now-last >= int64(missReloadEvery) && r.missReload.CompareAndSwap(last, now) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		r.reload(ctx)
		cancel()
		if id := r.state.Load().byHash[h]; id != nil {
			return id, nil
		}
	}
	return nil, ErrTokenNotFound
}

// Bootstrapped says whether the copy holds the cluster's ACL bootstrap
// record: until it does, anyone may run `acl bootstrap`.
func (r *Resolver) Bootstrapped() bool { return r.state.Load().bootstrapped }
