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
// address, and which failed lately.
type verifyCache struct {
	mu     sync.Mutex
	ok     map[string]string // node -> the address it proved itself at
	failed map[string]verifyFailure
}

type verifyFailure struct {
	addr string
	at   time.Time
}

// verifiedAt reports whether node proved itself at addr (VerifyServer),
// checking it now unless it did before at that address or failed there
// less than verifyRetry ago. Without VerifyServer every server passes.
func (c *Cluster) verifiedAt(ctx context.Context, node, addr string) bool {
	verify := c.cfg.VerifyServer
	if verify == nil {
		return true
	}
	v := &c.verified
	v.mu.Lock()
	if v.ok[node] == addr {
		v.mu.Unlock()
		return true
	}
	if f, ok := v.failed[node]; ok && f.addr == addr && time.Since(f.at) < verifyRetry {
		v.mu.Unlock()
		return false
	}
	v.mu.Unlock()

	vctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	err := verify(vctx, node, addr)
	cancel()

	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ok == nil {
		v.ok, v.failed = map[string]string{}, map[string]verifyFailure{}
	}
	if err != nil {
		if f, ok := v.failed[node]; !ok || f.addr != addr {
			c.log.Warn("not adding a server to raft: it did not prove its identity at its advertised RPC address",
				"server", node, "address", addr, "error", err)
		}
		v.failed[node] = verifyFailure{addr: addr, at: time.Now()}
		return false
	}
	delete(v.failed, node)
	v.ok[node] = addr
	c.log.Info("server proved its identity at its RPC address", "server", node, "address", addr)
	return true
}
