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
	"errors"
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

	state   atomic.Pointer[state]
	changed chan struct{} // a reload was asked for

	warnedMu sync.Mutex
	warned   map[string]bool
}

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
// also makes the cluster's server token if there is none.
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
			if r.st.IsLeader() && r.state.Load().serverSecret == "" {
				if err := ensureServerToken(ctx, r.st); err != nil {
					r.log.Debug("making the server token", "error", err)
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
	s, err := load(ctx, r.st, r.warn)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("reading the ACL records; keeping the last copy", "error", err)
		}
		return
	}
	r.state.Store(s)
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
	if id := r.state.Load().byHash[hashSecret(secret)]; id != nil {
		return id, nil
	}
	return nil, ErrTokenNotFound
}

// ServerSecret is the cluster's server token, which agents present to
// each other, or "" while this node has not learnt it.
func (r *Resolver) ServerSecret() string { return r.state.Load().serverSecret }
