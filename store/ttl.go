package store

import (
	"context"
	"time"

	"github.com/plughost/plughost/store/fsm"
)

// maxExpirePerPass bounds the keys one expiry command removes; the rest wait
// for the next pass.
const maxExpirePerPass = 10_000

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
			s.expirePass(ctx)
		}
	}
}

// expirePass expires the keys due now.
func (s *Store) expirePass(ctx context.Context) {
	due, err := s.fsm.DueExpiries(s.cfg.clock().UnixMilli(), maxExpirePerPass)
	if err != nil || len(due) == 0 {
		return
	}
	if _, err := s.propose(ctx, &fsm.Command{Op: fsm.OpExpire, Expire: due}); err != nil && ctx.Err() == nil {
		s.logger.Warn("expiring keys failed", "keys", len(due), "error", err)
	}
}
