package store

import (
	"context"
	"time"
)

// expireLoop is the leader's TTL clock. Every pass it proposes one command
// expiring every key whose time has come, so they all expire at one
// revision. Each node's own clock never decides: only the leader's does, and
// through the log.
func (s *Store) expireLoop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.timing.ExpiryScan)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if n, err := s.eng.ExpirePass(ctx); err != nil && ctx.Err() == nil {
				s.logger.Warn("expiring keys failed", "keys", n, "error", err)
			}
		}
	}
}
