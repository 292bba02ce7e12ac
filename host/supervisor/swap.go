package supervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/plughost/plughost/host/catalog"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// Strategies of a version swap (the manifest's upgrade.strategy).
const (
	StrategyOverlap = "overlap"
	StrategyRestart = "restart"
)

// swap replaces cur by e with e's upgrade strategy. If e does not become
// healthy in time, the previous version keeps serving (overlap) or is
// brought back (restart), and e is marked failed on this node.
func (m *managed) swap(ctx context.Context, cur *instance, e *catalog.Entry, actor string) error {
	strategy := e.Manifest.Upgrade.Strategy
	minHealthy := e.Manifest.Health.MinHealthyTime.Duration
	rec := catalog.Record{Actor: actor, Action: "swap", From: cur.entry.Version, To: e.Version, Strategy: strategy, Node: m.s.cfg.Node.GetName()}
	began := time.Now()
	m.s.events.Record(m.name, e.Version, "", "swap-started", fmt.Sprintf("%s → %s (%s)", cur.entry.Version, e.Version, strategy))

	var err error
	if strategy == StrategyRestart {
		err = m.swapRestart(ctx, cur, e, minHealthy)
	} else {
		err = m.swapOverlap(ctx, cur, e, minHealthy)
	}
	if err != nil {
		rec.Outcome, rec.Reason = "fell back", err.Error()
		m.markFailed(e.Version, err)
		m.s.events.Record(m.name, e.Version, "", "fell-back", fmt.Sprintf("kept %s: %v", cur.entry.Version, err))
	} else {
		rec.Outcome = "done"
		m.s.events.Record(m.name, e.Version, m.current().Spec.InstanceID, "swapped",
			fmt.Sprintf("%s → %s in %s", cur.entry.Version, e.Version, time.Since(began).Round(time.Millisecond)))
	}
	if herr := m.s.cfg.Catalog.AddHistory(context.WithoutCancel(ctx), m.name, rec); herr != nil {
		m.log.Warn("recording history failed", "error", herr)
	}
	return nil
}

// swapOverlap starts e beside cur, switches routing once e passed its health
// gate, then drains and stops cur.
func (m *managed) swapOverlap(ctx context.Context, cur *instance, e *catalog.Entry, minHealthy time.Duration) error {
	in, err := m.s.startInstance(ctx, e, minHealthy, nil)
	if err != nil {
		return err
	}
	m.serve(in)
	m.retire(cur, "replaced by "+e.Version)
	return nil
}

// swapRestart stops cur first (for plugins that must never run twice),
// holding new calls meanwhile, then starts e; if e fails, cur's version is
// started again.
func (m *managed) swapRestart(ctx context.Context, cur *instance, e *catalog.Entry, minHealthy time.Duration) error {
	r := m.s.cfg.Router
	r.SetHolding(m.name, true)
	defer r.SetHolding(m.name, false)
	m.retire(cur, "replaced by "+e.Version)
	m.setState(operatorv1.InstanceState_INSTANCE_STATE_STARTING, "")
	in, err := m.s.startInstance(ctx, e, minHealthy, nil)
	if err == nil {
		m.serve(in)
		return nil
	}
	prev, perr := m.s.startInstance(ctx, cur.entry, 0, nil)
	if perr != nil {
		m.setState(operatorv1.InstanceState_INSTANCE_STATE_BACKOFF, perr.Error())
		return fmt.Errorf("%w; bringing %s back failed too: %v", err, cur.entry.Version, perr)
	}
	m.serve(prev)
	return err
}

// markFailed keeps version from being started again on this node until the
// operator pins it again or another version becomes desired.
func (m *managed) markFailed(version string, err error) {
	m.mu.Lock()
	m.failed, m.failedPinAt = version, m.pinAt
	m.lastErr = fmt.Sprintf("version %s failed: %v", version, err)
	m.mu.Unlock()
}

// WaitVersion blocks until the plugin serves version on this node, or the
// version failed here, or ctx ends.
func (s *Supervisor) WaitVersion(ctx context.Context, name, version string) error {
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for {
		if st, ok := s.Status(name); ok {
			if st.Running == version && st.State == operatorv1.InstanceState_INSTANCE_STATE_RUNNING {
				return nil
			}
			if st.FailedVersion == version {
				return fmt.Errorf("plugin %s %s did not take over: %s", name, version, st.LastError)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("plugin %s: still waiting for %s to serve: %w", name, version, ctx.Err())
		case <-t.C:
		}
	}
}
