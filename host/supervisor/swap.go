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

// swapRun is one version swap in progress.
type swapRun struct {
	m     *managed
	from  *instance
	to    *catalog.Entry
	began time.Time
	cut   int64
}

func (r *swapRun) emit(phase operatorv1.SwapPhase, msg string, left time.Duration) {
	r.m.emit(Progress{Phase: phase, From: r.from.entry.Version, To: r.to.Version, Message: msg, TimeLeft: left,
		CutOff: r.cut, Elapsed: time.Since(r.began)})
}

// swap replaces cur by e with e's upgrade strategy. If e does not become
// healthy in time, the previous version keeps serving (overlap) or is
// brought back (restart), and e is marked failed on this node.
func (m *managed) swap(ctx context.Context, cur *instance, e *catalog.Entry, actor string) error {
	m.mu.Lock()
	strategy := swapStrategy(m.role, e.Manifest.Upgrade.Strategy)
	m.mu.Unlock()
	node := m.s.cfg.Node.GetName()
	rec := catalog.Record{Actor: actor, Action: "swap", From: cur.entry.Version, To: e.Version, Strategy: strategy, Node: node}
	r := &swapRun{m: m, from: cur, to: e, began: time.Now()}
	m.s.events.Record(m.name, e.Version, "", "swap-started", fmt.Sprintf("%s → %s (%s)", cur.entry.Version, e.Version, strategy))
	r.emit(operatorv1.SwapPhase_SWAP_PHASE_STARTING, fmt.Sprintf("starting %s beside %s (%s)", e.Version, cur.entry.Version, strategy), 0)

	var err error
	if strategy == StrategyRestart {
		err = r.restart(ctx)
	} else {
		err = r.overlap(ctx)
	}
	took := time.Since(r.began).Round(time.Millisecond)
	if err != nil {
		rec.Outcome, rec.Reason = "fell back", err.Error()
		m.markFailed(ctx, e.Version, err)
		m.s.events.Record(m.name, e.Version, "", "fell-back", fmt.Sprintf("kept %s: %v", cur.entry.Version, err))
		r.emit(operatorv1.SwapPhase_SWAP_PHASE_FELL_BACK, fmt.Sprintf("%s still serves: %v; %s is marked failed on node %s ('plughost plugin pin %s %s' tries it again)",
			cur.entry.Version, err, e.Version, node, m.name, e.Version), 0)
	} else {
		rec.Outcome = "done"
		if r.cut > 0 {
			rec.Reason = fmt.Sprintf("%d calls cut off at the drain timeout %s", r.cut, cur.entry.Manifest.Upgrade.DrainTimeout.Duration)
		}
		m.s.events.Record(m.name, e.Version, m.current().Spec.InstanceID, "swapped", fmt.Sprintf("%s → %s in %s", cur.entry.Version, e.Version, took))
		r.emit(operatorv1.SwapPhase_SWAP_PHASE_DONE, fmt.Sprintf("%s serves (swap took %s)", e.Version, took), 0)
	}
	if herr := m.s.cfg.Catalog.AddHistory(context.WithoutCancel(ctx), m.name, rec); herr != nil {
		m.log.Warn("recording history failed", "error", herr)
	}
	return nil
}

// swapStrategy is how an instance of the given singleton role (or none)
// swaps versions: a singleton's always restarts, whatever its manifest
// says, since both versions would hold its role (and the active's epoch)
// while they overlap, and two instances that can both write the
// singleton's state must never run at once.
func swapStrategy(role, manifest string) string {
	if role != "" {
		return StrategyRestart
	}
	return manifest
}

// gate reports health-gating progress with the time left.
func (r *swapRun) gate() func(string) {
	deadline := time.Now().Add(r.to.Manifest.Health.HealthyDeadline.Duration)
	return func(msg string) {
		r.emit(operatorv1.SwapPhase_SWAP_PHASE_HEALTH_GATING, msg, time.Until(deadline))
	}
}

// overlap starts the new version beside the old, switches routing once it
// passed its health gate, then drains and stops the old one.
func (r *swapRun) overlap(ctx context.Context) error {
	m := r.m
	in, err := m.s.startInstance(ctx, r.to, r.to.Manifest.Health.MinHealthyTime.Duration, r.gate())
	if err != nil {
		return err
	}
	r.emit(operatorv1.SwapPhase_SWAP_PHASE_SWITCHING, "routing to "+r.to.Version, 0)
	m.serve(in)
	r.cut = m.retire(r.from, "replaced by "+r.to.Version)
	return nil
}

// restart stops the old version first (for plugins that must never run
// twice), holding new calls meanwhile, then starts the new one; if it fails,
// the old version is started again.
func (r *swapRun) restart(ctx context.Context) error {
	m := r.m
	rt := m.s.cfg.Router
	rt.SetHolding(m.name, true)
	defer rt.SetHolding(m.name, false)
	r.cut = m.retire(r.from, "replaced by "+r.to.Version)
	m.setState(operatorv1.InstanceState_INSTANCE_STATE_STARTING, "")
	in, err := m.s.startInstance(ctx, r.to, r.to.Manifest.Health.MinHealthyTime.Duration, r.gate())
	if err == nil {
		r.emit(operatorv1.SwapPhase_SWAP_PHASE_SWITCHING, "routing to "+r.to.Version, 0)
		m.serve(in)
		return nil
	}
	prev, perr := m.s.startInstance(ctx, r.from.entry, 0, nil)
	if perr != nil {
		m.setState(operatorv1.InstanceState_INSTANCE_STATE_BACKOFF, perr.Error())
		return fmt.Errorf("%w; bringing %s back failed too: %v", err, r.from.entry.Version, perr)
	}
	m.serve(prev)
	return err
}

// markFailed keeps version from being started again on this node, across
// agent restarts, until the operator pins it again or a newer version
// arrives.
func (m *managed) markFailed(ctx context.Context, version string, err error) {
	m.mu.Lock()
	m.lastErr = fmt.Sprintf("%v (%s is marked failed on this node)", err, version)
	m.publishLocked()
	m.mu.Unlock()
	if perr := m.s.cfg.Catalog.MarkFailed(context.WithoutCancel(ctx), m.s.cfg.Node.GetName(), m.name, version, err.Error()); perr != nil {
		m.log.Warn("recording the failed version failed", "version", version, "error", perr)
	}
}
