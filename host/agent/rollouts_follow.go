package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/intent"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// A pin, unpin or rollback of a plugin that runs somewhere already starts
// a cluster rollout (the leader's rollout controller creates it from the
// changed intent); the operator's call follows that rollout instead of a
// swap on the answering node (area: surface).

// rolloutStartWait bounds how long a change waits for the rollout
// controller to start its rollout.
const rolloutStartWait = 30 * time.Second

// runsAnywhere reports whether plugin is assigned to any node: a change of
// its version is then a rollout. One assigned nowhere (its first install)
// swaps, or starts, where it is placed.
func (o *operator) runsAnywhere(ctx context.Context, db *intent.DB, plugin string) (bool, error) {
	as, _, err := db.Assignments(ctx)
	if err != nil {
		return false, err
	}
	for _, a := range as {
		if a.Value.Plugin == plugin {
			return true, nil
		}
	}
	return false, nil
}

// settled reports whether plugin is where target would take it, so that
// the change starts no rollout: its newest rollout, unfinished or not,
// goes to target, or (none ever) every assignment is target already.
// latest is the plugin's newest rollout, when found.
func settled(ctx context.Context, db *intent.DB, plugin, target string) (latest intent.Item[intent.Rollout], found, ok bool, err error) {
	latest, found, err = db.LatestRollout(ctx, plugin)
	if err != nil {
		return latest, false, false, err
	}
	if found {
		return latest, true, latest.Value.Target() == target, nil
	}
	as, _, err := db.Assignments(ctx)
	if err != nil {
		return latest, false, false, err
	}
	for _, a := range as {
		if a.Value.Plugin == plugin && a.Value.Version != target {
			return latest, false, false, nil
		}
	}
	return latest, false, true, nil
}

// changeFollower sends what a change's caller sees: a swap step (the
// recorded change, nothing to do) or the rollout's record.
type changeFollower struct {
	swap    func(*operatorv1.SwapProgress) error
	rollout func(*operatorv1.Rollout) error
}

// followChange records a change of plugin's desired version to target
// with set, then follows the rollout it starts until the rollout
// completes (nil), rolls back, pauses or is superseded (ABORTED, naming
// the node and reason). With detach it returns once the change is
// recorded. A change that leaves the plugin where it is starts nothing and
// returns at once, saying so; a change towards a version that failed
// cluster-wide, or that the controller does not roll out within
// rolloutStartWait, is an error saying why.
func (o *operator) followChange(ctx context.Context, plugin string, target *catalog.Entry, trigger string, detach bool, set func() error, f changeFollower) error {
	node := o.a.cfg.Node
	db := intent.New(o.a.store)
	prev, hadRollout, already, err := settled(ctx, db, plugin, target.Version)
	if err != nil {
		return toStatus(err)
	}
	from := o.a.store.Revision()
	var swaps *swapFeed
	if st, ok := o.a.super.Status(plugin); ok && st.Assigned && !detach {
		ch, unsubscribe := o.a.super.Subscribe(plugin)
		defer unsubscribe()
		swaps = &swapFeed{ch: ch, send: f.swap}
	}
	if err := set(); err != nil {
		return toStatus(err)
	}
	if detach {
		return f.swap(&operatorv1.SwapProgress{Phase: operatorv1.SwapPhase_SWAP_PHASE_RECORDED, Node: node, ToVersion: target.Version,
			Message: fmt.Sprintf("recorded; the rollout to %s runs in the background (see 'plughost rollout status -follow %s')", target.Version, plugin)})
	}
	if already && (!hadRollout || prev.Value.Done()) {
		return f.swap(&operatorv1.SwapProgress{Phase: operatorv1.SwapPhase_SWAP_PHASE_DONE, Node: node, ToVersion: target.Version,
			Message: fmt.Sprintf("%s is %s's version on every node already: nothing to roll out", target.Version, plugin)})
	}
	// A version that failed cluster-wide is rolled out again only by a pin
	// made after its failure: an unpin towards it starts nothing.
	if trigger == intent.TriggerUnpin {
		if vf, found, err := intent.Get[intent.VersionFailure](ctx, db, intent.VersionFailKey(plugin, target.Version)); err == nil && found {
			return rolloutError(codes.FailedPrecondition, operatorv1.ReasonRolloutNotStarted, plugin, vf.Value.Rollout,
				fmt.Sprintf("%s is unpinned, but %s failed cluster-wide in rollout %s (%s) and is not rolled out again by itself; 'plughost plugin pin %s %s' tries it again",
					plugin, target.Version, vf.Value.Rollout, failureWords(vf.Value), plugin, target.Version), nil)
		}
	}
	local := db.Local()
	it, err := o.waitRollout(ctx, local, plugin, target.Version, prev, hadRollout, from)
	if err != nil {
		return err
	}
	var last intent.Rollout
	err = o.followRollout(ctx, local, it, func(r *intent.Rollout) bool { return r.Done() || r.State == intent.RolloutPaused },
		func(r *operatorv1.Rollout) error { return f.rollout(r) }, &last, swaps)
	if err != nil {
		return err
	}
	if swaps != nil {
		o.finishSwap(ctx, plugin, target, swaps)
	}
	if last.State == intent.RolloutCompleted {
		return nil
	}
	return rolloutError(codes.Aborted, operatorv1.ReasonRolloutFailed, plugin, last.ID, outcomeWords(last),
		map[string]string{"state": last.State, "node": last.FailedNode})
}

// finishSwap forwards the answering node's swap of plugin until it is
// over: the rollout moves on once the new version is healthy, while the
// old one may still drain (the calls it cuts off are in the swap's last
// step).
func (o *operator) finishSwap(ctx context.Context, plugin string, target *catalog.Entry, swaps *swapFeed) {
	budget := time.NewTimer(target.Manifest.Upgrade.DrainTimeout.Duration + 5*time.Second)
	defer budget.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case p, ok := <-swaps.ch:
			if !ok || swaps.send(toProgress(o.a.cfg.Node, p)) != nil {
				return
			}
			if p.Phase == operatorv1.SwapPhase_SWAP_PHASE_DONE || p.Phase == operatorv1.SwapPhase_SWAP_PHASE_FELL_BACK {
				return
			}
		case <-tick.C:
			if st, ok := o.a.super.Status(plugin); !ok || (!st.Swapping && len(swaps.ch) == 0) {
				return
			}
		case <-budget.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// waitRollout waits, up to rolloutStartWait, for the rollout a change to
// target starts: a rollout newer than prev towards target or, when prev
// was unfinished, prev turned towards target (aborted back to it).
func (o *operator) waitRollout(ctx context.Context, db *intent.DB, plugin, target string, prev intent.Item[intent.Rollout], hadRollout bool, from int64) (intent.Item[intent.Rollout], error) {
	wctx, cancel := context.WithTimeout(ctx, rolloutStartWait)
	defer cancel()
	changed := make(chan struct{}, 1)
	go func() {
		_ = db.Watch(wctx, from, []string{intent.RolloutPrefix(plugin)}, o.a.log, func(intent.Change) {
			select {
			case changed <- struct{}{}:
			default:
			}
		})
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		it, found, err := db.LatestRollout(wctx, plugin)
		if err != nil && wctx.Err() == nil {
			return it, toStatus(err)
		}
		if found && err == nil {
			r := it.Value
			newer := !hadRollout || r.Seq > prev.Value.Seq
			if (newer && r.To == target) || (!newer && !prev.Value.Done() && r.Target() == target && prev.Value.Target() != target) {
				return it, nil
			}
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-wctx.Done():
			if ctx.Err() != nil {
				return it, ctx.Err()
			}
			return it, rolloutError(codes.DeadlineExceeded, operatorv1.ReasonRolloutNotStarted, plugin, "",
				fmt.Sprintf("the change is recorded, but no rollout of %s towards %s started within %s: %s", plugin, target, rolloutStartWait,
					o.whyNoRollout(ctx, db, plugin, target)), nil)
		}
	}
}

// whyNoRollout says what may keep the rollout controller from starting a
// rollout towards target, and where to look.
func (o *operator) whyNoRollout(ctx context.Context, db *intent.DB, plugin, target string) string {
	var why []string
	if vf, found, err := intent.Get[intent.VersionFailure](ctx, db, intent.VersionFailKey(plugin, target)); err == nil && found {
		why = append(why, fmt.Sprintf("%s failed cluster-wide in rollout %s (%s)", target, vf.Value.Rollout, failureWords(vf.Value)))
	}
	if e, err := o.a.catalog.Local().Get(ctx, plugin, target); err == nil && e.Manifest.Upgrade.Policy == bundle.UpgradeManual {
		why = append(why, "its upgrade policy is manual")
	}
	if leader, _ := o.a.store.Leader(); leader == "" {
		why = append(why, "the cluster has no raft leader to run the rollout controller")
	}
	if len(why) == 0 {
		why = append(why, "the rollout controller runs on the raft leader; its log says why")
	}
	return strings.Join(why, "; ") + fmt.Sprintf("; see 'plughost rollout list -plugin %s' and 'plughost plugin events %s'", plugin, plugin)
}

func failureWords(vf intent.VersionFailure) string {
	if vf.Node != "" {
		return "node " + vf.Node + ": " + vf.Reason
	}
	return vf.Reason
}

// outcomeWords says how a rollout a change followed ended, when not
// completed: which node, and why.
func outcomeWords(r intent.Rollout) string {
	why := ""
	if r.Failure != "" {
		why = ": " + r.Failure
		if r.FailedNode != "" {
			why = ": node " + r.FailedNode + ": " + r.Failure
		}
	}
	switch r.State {
	case intent.RolloutRolledBack:
		return fmt.Sprintf("rollout %s rolled back to %s%s (see 'plughost rollout status %s')", r.ID, r.From, why, r.ID)
	case intent.RolloutSuperseded:
		return fmt.Sprintf("rollout %s was superseded by %s (see 'plughost rollout status -follow %s')", r.ID, r.SupersededBy, r.SupersededBy)
	case intent.RolloutPaused:
		return fmt.Sprintf("rollout %s paused%s; 'plughost rollout resume %s' goes on, 'plughost rollout abort %s' rolls it back", r.ID, why, r.ID, r.ID)
	}
	return fmt.Sprintf("rollout %s is %s%s", r.ID, r.State, why)
}

// rollbackTarget is where 'plugin rollback' goes from cur: the From of the
// plugin's newest completed rollout, else the version that served before
// cur on a node (catalog.LastHealthyBefore).
func (o *operator) rollbackTarget(ctx context.Context, plugin, cur string) (string, error) {
	rs, _, err := intent.New(o.a.store).Rollouts(ctx, plugin)
	if err != nil {
		return "", err
	}
	for i := len(rs) - 1; i >= 0; i-- {
		if r := rs[i].Value; r.State == intent.RolloutCompleted && r.From != "" && r.From != r.To {
			return r.From, nil
		}
	}
	return o.a.catalog.LastHealthyBefore(ctx, plugin, cur)
}

// errNoRolloutToRestore refuses -restore-data where no rollout will run.
func errNoRolloutToRestore(plugin string) error {
	return status.Errorf(codes.FailedPrecondition, "plugin %s runs on no node, so a rollback starts no rollout and there is no snapshot to restore; roll back without -restore-data", plugin)
}
