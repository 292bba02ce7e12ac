package cluster

import (
	"context"
	"sync"
	"time"
)

// Bounds of a server's identity check (Config.VerifyServer).
const (
	verifyTimeout = 2 * time.Second
	// verifyRetry is how long a failed check stands before the server at
	// that address is checked again.
	verifyRetry = 2 * time.Second
)

// verifyCache remembers which servers proved their identity at which
// address, which failed lately, and which are being checked.
type verifyCache struct {
	mu       sync.Mutex
	ok       map[string]string // node -> the address it proved itself at
	failed   map[string]verifyFailure
	checking map[string]string // node -> the address being checked
	wg       sync.WaitGroup
}

type verifyFailure struct {
	addr string
	at   time.Time
}

// verifiedAt reports whether node proved itself at addr (VerifyServer).
// When that is not known yet, and node did not fail there less than
// verifyRetry ago, it starts a check in the background and reports false;
// the check's end starts another round. So a server that does not answer
// (a blackholed address) never holds up a round for the others. Without
// VerifyServer every server passes.
func (c *Cluster) verifiedAt(ctx context.Context, node, addr string) bool {
	verify := c.cfg.VerifyServer
	if verify == nil {
		return true
	}
	v := &c.verified
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ok[node] == addr {
		return true
	}
	if f, ok := v.failed[node]; ok && f.addr == addr && time.Since(f.at) < verifyRetry {
		return false
	}
	if v.checking[node] == addr {
		return false
	}
	if v.ok == nil {
		v.ok, v.failed, v.checking = map[string]string{}, map[string]verifyFailure{}, map[string]string{}
	}
	v.checking[node] = addr
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		vctx, cancel := context.WithTimeout(ctx, verifyTimeout)
		err := verify(vctx, node, addr)
		cancel()
		v.mu.Lock()
		delete(v.checking, node)
		switch {
		case ctx.Err() != nil: // stopping: nothing learnt
		case err != nil:
			if f, ok := v.failed[node]; !ok || f.addr != addr {
				c.log.Warn("not adding a server to raft: it did not prove its identity at its advertised RPC address",
					"server", node, "address", addr, "error", err)
			}
			v.failed[node] = verifyFailure{addr: addr, at: time.Now()}
		default:
			delete(v.failed, node)
			v.ok[node] = addr
			c.log.Info("server proved its identity at its RPC address", "server", node, "address", addr)
		}
		v.mu.Unlock()
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}()
	return false
}
