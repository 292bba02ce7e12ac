package acl

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
)

// liveCall is a call authorized with a token that stays open (a store
// watch, a plugin's stream): the resolver ends it, with revoke, when the
// token is deleted or no longer grants what the call needed.
type liveCall struct {
	hash   [32]byte
	p      Permission
	target string
	method string
	revoke func(error)
}

// liveCalls are the open calls of a resolver.
type liveCalls struct {
	mu    sync.Mutex
	calls map[*liveCall]struct{}
}

// standing is nil while c's token, as s knows it, still grants what c
// needed, else the status that ends c.
func (c *liveCall) standing(s *state) error {
	id := s.byHash[c.hash]
	if id == nil {
		return withInfo(codes.Unauthenticated, ReasonTokenNotFound,
			fmt.Sprintf("ACL token not found: it was deleted while %s was open, which ends it; %s", c.method, howToGetToken),
			map[string]string{"method": c.method})
	}
	if check(id, c.p, c.target, c.method) != nil {
		return denied(id, c.p.what(c.target), c.method, "no longer may call "+c.method+", which ends the call it had open")
	}
	return nil
}

// hold keeps c until release is called, ending it with c.revoke should
// the token it was authorized with be deleted or lose the permission.
func (r *Resolver) hold(c *liveCall) (release func()) {
	r.live.mu.Lock()
	if r.live.calls == nil {
		r.live.calls = map[*liveCall]struct{}{}
	}
	r.live.calls[c] = struct{}{}
	r.live.mu.Unlock()
	release = func() {
		r.live.mu.Lock()
		delete(r.live.calls, c)
		r.live.mu.Unlock()
	}
	// The records may have changed between the call's check and now, with
	// their recheck done before c was listed.
	if err := c.standing(r.state.Load()); err != nil {
		release()
		c.revoke(err)
	}
	return release
}

// recheck ends the open calls that s no longer allows. It runs after
// every reload of the records.
func (r *Resolver) recheck(s *state) {
	type ended struct {
		c   *liveCall
		err error
	}
	var out []ended
	r.live.mu.Lock()
	for c := range r.live.calls {
		if err := c.standing(s); err != nil {
			delete(r.live.calls, c)
			out = append(out, ended{c, err})
		}
	}
	r.live.mu.Unlock()
	if len(out) > 0 {
		r.log.Info("ending calls whose ACL token was deleted or lost the permission they need", "calls", len(out))
	}
	for _, e := range out {
		e.c.revoke(e.err)
	}
}

// liveCount is how many open calls the resolver watches over.
func (r *Resolver) liveCount() int {
	r.live.mu.Lock()
	defer r.live.mu.Unlock()
	return len(r.live.calls)
}
