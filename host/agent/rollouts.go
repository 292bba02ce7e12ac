package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/supervisor"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// Rollouts (issue #16; area: surface): the operator's view of the rollout
// records the leader's rollout controller writes, and the requests
// (rolloutctl/<plugin>) it applies.

// rolloutError is a gRPC status with an ErrorInfo in RolloutsErrorDomain.
func rolloutError(code codes.Code, reason, plugin, id, msg string, md map[string]string) error {
	st := status.New(code, msg)
	meta := map[string]string{"plugin": plugin}
	if id != "" {
		meta["rollout"] = id
	}
	for k, v := range md {
		meta[k] = v
	}
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: operatorv1.RolloutsErrorDomain, Reason: reason, Metadata: meta}); err == nil {
		st = d
	}
	return st.Err()
}

// findRollout reads the rollout id names or, without one, plugin's newest.
func findRollout(ctx context.Context, db *intent.DB, id, plugin string) (intent.Item[intent.Rollout], error) {
	var (
		it    intent.Item[intent.Rollout]
		found bool
		err   error
	)
	switch {
	case id != "":
		p, _, ok := intent.ParseRolloutID(id)
		if !ok {
			return it, status.Errorf(codes.InvalidArgument, "%q is not a rollout ID (PLUGIN-N, as 'plughost rollout list' shows)", id)
		}
		if plugin != "" && p != plugin {
			return it, status.Errorf(codes.InvalidArgument, "rollout %s is not a rollout of plugin %s", id, plugin)
		}
		plugin = p
		it, found, err = db.Rollout(ctx, id)
	case plugin != "":
		if !bundle.ValidName(plugin) {
			return it, status.Errorf(codes.InvalidArgument, "%q is not a plugin name", plugin)
		}
		it, found, err = db.LatestRollout(ctx, plugin)
	default:
		return it, status.Error(codes.InvalidArgument, "name a rollout (PLUGIN-N) or a plugin")
	}
	if err != nil {
		return it, err
	}
	if !found {
		what := "plugin " + plugin + " has had no rollout"
		if id != "" {
			what = "there is no rollout " + id
		}
		return it, rolloutError(codes.NotFound, operatorv1.ReasonRolloutNotFound, plugin, id,
			what+" (see 'plughost rollout list')", nil)
	}
	return it, nil
}

// readRollouts runs read on the cluster's records or, without a leader,
// on this node's copy, saying so in stale.
func (o *operator) readRollouts(ctx context.Context, read func(*intent.DB) error) (stale string, err error) {
	return o.readCatalog(ctx, func(_ *catalog.Catalog, db *intent.DB) error { return read(db) })
}

func (o *operator) ListRollouts(ctx context.Context, req *operatorv1.ListRolloutsRequest) (*operatorv1.ListRolloutsResponse, error) {
	name := req.GetName()
	if name != "" && !bundle.ValidName(name) {
		return nil, status.Errorf(codes.InvalidArgument, "%q is not a plugin name", name)
	}
	resp := &operatorv1.ListRolloutsResponse{}
	stale, err := o.readRollouts(ctx, func(db *intent.DB) error {
		var (
			items   []intent.Item[intent.Rollout]
			refused []error
			err     error
		)
		if name != "" {
			items, refused, err = db.Rollouts(ctx, name)
		} else {
			items, refused, err = db.AllRollouts(ctx)
		}
		if err != nil {
			return err
		}
		ctls := map[string]*intent.Item[intent.RolloutControl]{}
		if ctlItems, _, err := intent.List[intent.RolloutControl](ctx, db, intent.PrefixRolloutCtl); err == nil {
			for _, c := range ctlItems {
				ctls[c.Value.ID] = &c
			}
		}
		sort.SliceStable(items, func(i, j int) bool { return newer(items[i].Value, items[j].Value) })
		if n := int(req.GetLimit()); n > 0 && len(items) > n {
			items = items[:n]
		}
		now := time.Now()
		resp.Rollouts, resp.Refused = nil, nil
		for _, it := range items {
			resp.Rollouts = append(resp.Rollouts, toRollout(it, now, ctls[it.Value.ID]))
		}
		for _, e := range refused {
			resp.Refused = append(resp.Refused, e.Error())
		}
		return nil
	})
	if err != nil {
		return nil, toStatus(err)
	}
	resp.Stale = stale
	return resp, nil
}

// newer orders rollouts newest first: by creation, then a plugin's by seq.
func newer(a, b intent.Rollout) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.After(b.Created)
	}
	if a.Plugin != b.Plugin {
		return a.Plugin < b.Plugin
	}
	return a.Seq > b.Seq
}

func (o *operator) GetRollout(ctx context.Context, req *operatorv1.GetRolloutRequest) (*operatorv1.GetRolloutResponse, error) {
	resp := &operatorv1.GetRolloutResponse{}
	stale, err := o.readRollouts(ctx, func(db *intent.DB) error {
		it, err := findRollout(ctx, db, req.GetId(), req.GetName())
		if err != nil {
			return err
		}
		resp.Rollout = toRollout(it, time.Now(), o.controlFor(ctx, db, it.Value), drainsOf(ctx, db, it.Value.Plugin))
		return nil
	})
	if err != nil {
		return nil, toStatus(err)
	}
	resp.Stale = stale
	return resp, nil
}

// controlFor is the plugin's latest operator request when it is for r.
func (o *operator) controlFor(ctx context.Context, db *intent.DB, r intent.Rollout) *intent.Item[intent.RolloutControl] {
	c, found, err := db.RolloutControl(ctx, r.Plugin)
	if err != nil || !found || c.Value.ID != r.ID {
		return nil
	}
	return &c
}

func (o *operator) WatchRollout(req *operatorv1.WatchRolloutRequest, stream operatorv1.OperatorService_WatchRolloutServer) error {
	return o.watchRollout(stream.Context(), req.GetId(), req.GetName(), func(r *operatorv1.Rollout) error {
		return stream.Send(&operatorv1.WatchRolloutResponse{Rollout: r})
	})
}

// watchRollout sends the rollout (id, else plugin's newest) as this node's
// copy of the store has it, then again at each change of its record or of
// the plugin's operator request, until it is finished (nil) or ctx ends.
func (o *operator) watchRollout(ctx context.Context, id, plugin string, send func(*operatorv1.Rollout) error) error {
	db := intent.New(o.a.store).Local()
	it, err := findRollout(ctx, db, id, plugin)
	if err != nil {
		return toStatus(err)
	}
	return o.followRollout(ctx, db, it, (*intent.Rollout).Done, send, nil, nil)
}

// swapFeed is the swaps of a plugin on the answering node, forwarded
// while a rollout is followed: the node's phases in detail (health gate,
// calls in flight while draining).
type swapFeed struct {
	ch   <-chan supervisor.Progress
	send func(*operatorv1.SwapProgress) error
}

// followRollout sends it, then each newer version of its record, until
// until holds for the rollout or ctx ends; last, when not nil, gets the
// last version sent.
func (o *operator) followRollout(ctx context.Context, db *intent.DB, it intent.Item[intent.Rollout], until func(*intent.Rollout) bool,
	send func(*operatorv1.Rollout) error, last *intent.Rollout, swaps *swapFeed) error {
	var swapCh <-chan supervisor.Progress
	if swaps != nil {
		swapCh = swaps.ch
	}
	r := it.Value
	key, ctlKey := r.Key(), intent.RolloutCtlKey(r.Plugin)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changed := make(chan struct{}, 1)
	from := it.ModRevision + 1
	go func() {
		_ = db.Watch(wctx, from, []string{key, ctlKey, intent.PrefixObserve}, o.a.log, func(c intent.Change) {
			// A node's report of the plugin says what it drains.
			_, ofPlugin := strings.CutSuffix(c.Key, "/"+r.Plugin)
			if c.Resync || c.Key == key || c.Key == ctlKey || (strings.HasPrefix(c.Key, intent.PrefixObserve) && ofPlugin) {
				select {
				case changed <- struct{}{}:
				default:
				}
			}
		})
	}()
	sent, sentDrains := int64(-1), ""
	for {
		drains := drainsOf(ctx, db, r.Plugin)
		if d := drainKey(drains); it.ModRevision != sent || d != sentDrains {
			if err := send(toRollout(it, time.Now(), o.controlFor(ctx, db, it.Value), drains)); err != nil {
				return err
			}
			sent, sentDrains = it.ModRevision, d
			if last != nil {
				*last = it.Value
			}
		}
		if until(&it.Value) {
			return nil
		}
		select {
		case <-changed:
		case p, ok := <-swapCh:
			if !ok {
				swapCh = nil
			} else if err := swaps.send(toProgress(o.a.cfg.Node, p)); err != nil {
				return err
			}
			continue
		case <-ctx.Done():
			return ctx.Err()
		}
		next, found, err := intent.Get[intent.Rollout](ctx, db, key)
		if err != nil {
			return toStatus(err)
		}
		if !found {
			return rolloutError(codes.NotFound, operatorv1.ReasonRolloutNotFound, r.Plugin, r.ID,
				"rollout "+r.ID+" was deleted while it was followed", nil)
		}
		it = next
	}
}

// drainsOf is, by node, the reports of the nodes draining an instance of
// plugin (calls in flight while a swap drains the old version).
func drainsOf(ctx context.Context, db *intent.DB, plugin string) map[string]intent.Observation {
	obs, _, err := db.Observations(ctx)
	if err != nil {
		return nil
	}
	out := map[string]intent.Observation{}
	for _, it := range obs {
		if o := it.Value; o.Plugin == plugin && o.Draining != "" {
			out[o.Node] = o
		}
	}
	return out
}

// drainKey says what drains holds, to send a rollout again when it changes.
func drainKey(drains map[string]intent.Observation) string {
	var b strings.Builder
	for _, n := range slices.Sorted(maps.Keys(drains)) {
		fmt.Fprintf(&b, "%s=%s:%d;", n, drains[n].Draining, drains[n].InFlight)
	}
	return b.String()
}

func (o *operator) PauseRollout(ctx context.Context, req *operatorv1.PauseRolloutRequest) (*operatorv1.PauseRolloutResponse, error) {
	r, c, err := o.controlRollout(ctx, req.GetName(), req.GetId(), intent.ControlPause, false)
	if err != nil {
		return nil, err
	}
	return &operatorv1.PauseRolloutResponse{Rollout: r, Control: c}, nil
}

func (o *operator) ResumeRollout(ctx context.Context, req *operatorv1.ResumeRolloutRequest) (*operatorv1.ResumeRolloutResponse, error) {
	r, c, err := o.controlRollout(ctx, req.GetName(), req.GetId(), intent.ControlResume, false)
	if err != nil {
		return nil, err
	}
	return &operatorv1.ResumeRolloutResponse{Rollout: r, Control: c}, nil
}

func (o *operator) AbortRollout(ctx context.Context, req *operatorv1.AbortRolloutRequest) (*operatorv1.AbortRolloutResponse, error) {
	r, c, err := o.controlRollout(ctx, req.GetName(), req.GetId(), intent.ControlAbort, req.GetRestoreData())
	if err != nil {
		return nil, err
	}
	return &operatorv1.AbortRolloutResponse{Rollout: r, Control: c}, nil
}

// controlRollout writes an operator request (rolloutctl/<plugin>) for
// plugin's newest rollout, which id, when given, must name; the rollout
// controller applies it. A request that does not apply to the rollout's
// state is refused here, with a reason, rather than left for the
// controller to ignore.
func (o *operator) controlRollout(ctx context.Context, plugin, id, action string, restore bool) (*operatorv1.Rollout, *operatorv1.RolloutControl, error) {
	if plugin == "" {
		return nil, nil, status.Error(codes.InvalidArgument, "name the plugin whose rollout to "+action)
	}
	db := intent.New(o.a.store)
	latest, err := findRollout(ctx, db, "", plugin)
	if err != nil {
		return nil, nil, toStatus(err)
	}
	r := latest.Value
	if id != "" && id != r.ID {
		it, err := findRollout(ctx, db, id, plugin)
		if err != nil {
			return nil, nil, toStatus(err)
		}
		return nil, nil, rolloutError(codes.FailedPrecondition, operatorv1.ReasonRolloutFinished, plugin, id,
			fmt.Sprintf("rollout %s is %s; %s's newest rollout is %s (see 'plughost rollout status %s')", id, it.Value.State, plugin, r.ID, plugin),
			map[string]string{"state": it.Value.State})
	}
	if r.Done() {
		return nil, nil, rolloutError(codes.FailedPrecondition, operatorv1.ReasonRolloutFinished, plugin, r.ID,
			fmt.Sprintf("rollout %s is %s: nothing moves any more, so there is nothing to %s; 'plughost plugin pin %s VERSION' or 'plughost plugin rollback %s' starts a new one",
				r.ID, finishedWords(r), action, plugin, plugin), map[string]string{"state": r.State})
	}
	if msg := refusal(r, action, restore); msg != "" {
		return nil, nil, rolloutError(codes.FailedPrecondition, operatorv1.ReasonRolloutState, plugin, r.ID, msg, map[string]string{"state": r.State})
	}
	if action == intent.ControlResume && strings.Contains(r.Failure, intent.NoRetry) {
		// Paused because a node fell back: it tries the version again only
		// once it is pinned again (since the pause), else the controller
		// would refuse the resume (area fixa).
		pin, err := o.a.catalog.GetPin(ctx, plugin)
		if err != nil {
			return nil, nil, toStatus(err)
		}
		if pin == nil || pin.ModRevision <= latest.ModRevision {
			return nil, nil, rolloutError(codes.FailedPrecondition, operatorv1.ReasonRolloutState, plugin, r.ID,
				fmt.Sprintf("rollout %s cannot resume yet: %s", r.ID, r.Failure), map[string]string{"state": r.State})
		}
	}
	c := intent.RolloutControl{Plugin: plugin, ID: r.ID, Action: action, RestoreData: restore, Actor: actorFrom(ctx), At: time.Now().UTC()}
	// Only if the rollout is still as read: a request checked against a
	// state that has moved on could ask for what no longer applies.
	t := (&intent.Txn{}).IfModRevision(r.Key(), latest.ModRevision).Put(&c)
	_, ok, err := db.Commit(ctx, t)
	if err != nil {
		return nil, nil, toStatus(err)
	}
	if !ok {
		return nil, nil, status.Errorf(codes.Aborted, "rollout %s changed while the request was made; look at 'plughost rollout status %s' and ask again", r.ID, r.ID)
	}
	o.a.log.Info("rollout request recorded", "rollout", r.ID, "action", action, "restore_data", restore, "actor", c.Actor)
	return toRollout(latest, time.Now(), &intent.Item[intent.RolloutControl]{Value: c}), toControl(&c, false), nil
}

// refusal says why action does not apply to r's state; "" when it does.
func refusal(r intent.Rollout, action string, restore bool) string {
	switch action {
	case intent.ControlPause:
		if r.State == intent.RolloutPaused {
			return fmt.Sprintf("rollout %s is paused already (%s); 'plughost rollout resume %s' goes on, 'plughost rollout abort %s' rolls it back", r.ID, orWhy(r.Failure), r.ID, r.ID)
		}
	case intent.ControlResume:
		if r.State != intent.RolloutPaused {
			return fmt.Sprintf("rollout %s is %s, not paused: there is nothing to resume", r.ID, r.State)
		}
	case intent.ControlAbort:
		if r.State == intent.RolloutRollingBack && (!restore || r.RestoreData) {
			return fmt.Sprintf("rollout %s is rolling back already; 'plughost rollout status -follow %s' follows it", r.ID, r.ID)
		}
		if restore && r.Snapshot == nil {
			return fmt.Sprintf("rollout %s took no snapshot of %s's data, so -restore-data has nothing to restore; abort without it", r.ID, r.Plugin)
		}
		if restore && r.Snapshot.SHA256 == "" {
			return fmt.Sprintf("rollout %s took no snapshot of %s's data (%s), so -restore-data has nothing to restore; abort without it", r.ID, r.Plugin, orWhy(r.Snapshot.Skipped))
		}
	}
	return ""
}

func orWhy(s string) string {
	if s == "" {
		return "no reason recorded"
	}
	return s
}

// finishedWords says how a finished rollout ended.
func finishedWords(r intent.Rollout) string {
	switch r.State {
	case intent.RolloutSuperseded:
		return "superseded by " + r.SupersededBy
	case intent.RolloutRolledBack:
		return "rolled back"
	}
	return r.State
}

func tsOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// toControl is a request for the API; applied says whether the rollout
// controller has applied it (the rollout's ControlRev).
func toControl(c *intent.RolloutControl, applied bool) *operatorv1.RolloutControl {
	if c == nil {
		return nil
	}
	return &operatorv1.RolloutControl{Id: c.ID, Action: c.Action, RestoreData: c.RestoreData, Actor: c.Actor, At: tsOrNil(c.At), Applied: applied}
}

// toRollout is a rollout record for the API, its time-left fields counted
// at now.
func toRollout(it intent.Item[intent.Rollout], now time.Time, ctlItem *intent.Item[intent.RolloutControl], drains ...map[string]intent.Observation) *operatorv1.Rollout {
	r := it.Value
	p := r.Policy
	var ctl *intent.RolloutControl
	applied := false
	if ctlItem != nil {
		// Applied once the rollout records its store revision (or, in a
		// record from before revisions were recorded, its At).
		ctl = &ctlItem.Value
		applied = (ctlItem.ModRevision > 0 && ctlItem.ModRevision <= r.ControlRev) ||
			(r.ControlRev == 0 && !r.ControlAt.IsZero() && !ctl.At.After(r.ControlAt))
	}
	out := &operatorv1.Rollout{
		Id: r.ID, Plugin: r.Plugin, Seq: r.Seq, FromVersion: r.From, ToVersion: r.To, TargetVersion: r.Target(),
		Trigger: r.Trigger, Actor: r.Actor, Reason: r.Reason,
		Policy: &operatorv1.RolloutPolicy{
			Mode: p.Mode, Strategy: p.Strategy, MaxParallel: int32(p.MaxParallel),
			MinHealthyTimeMs: p.MinHealthyTime.Milliseconds(), HealthyDeadlineMs: p.HealthyDeadline.Milliseconds(),
			ProgressDeadlineMs: p.ProgressDeadline.Milliseconds(), FailureAction: p.FailureAction,
		},
		State: r.State, Paused: r.Paused,
		Created: tsOrNil(r.Created), Updated: tsOrNil(r.Updated), Finished: tsOrNil(r.Finished),
		Failure: r.Failure, FailedNode: r.FailedNode, Pending: r.Pending, Converged: tsOrNil(r.Converged),
		SupersededBy: r.SupersededBy, RestoreData: r.RestoreData, Restored: tsOrNil(r.Restored),
		Revision: it.ModRevision, AsOf: timestamppb.New(now), Control: toControl(ctl, applied),
	}
	if s := r.Snapshot; s != nil {
		out.Snapshot = &operatorv1.RolloutSnapshot{Namespace: s.Namespace, Keys: int64(s.Keys), Bytes: s.Bytes, Sha256: s.SHA256,
			Revision: s.Revision, Taken: tsOrNil(s.Taken), Skipped: s.Skipped}
	}
	moving := !r.Done() && r.State != intent.RolloutPaused
	for _, d := range r.Domains {
		pd := &operatorv1.RolloutDomain{Name: d.Name, FromVersion: d.From, Version: d.Version, Phase: d.Phase,
			Started: tsOrNil(d.Started), Finished: tsOrNil(d.Finished)}
		gating := moving && (d.Phase == intent.DomainUpdating || d.Phase == intent.DomainRollingBack)
		if gating && !d.Started.IsZero() {
			pd.DeadlineLeftMs = max(0, d.Started.Add(p.HealthyDeadline.Duration).Sub(now).Milliseconds())
		}
		for _, n := range d.Nodes {
			pn := &operatorv1.RolloutNode{Name: n.Name, Phase: n.Phase, Version: n.Version, HealthySince: tsOrNil(n.HealthySince),
				DownSince: tsOrNil(n.DownSince), Since: tsOrNil(n.Since), Reason: n.Reason, Restarts: int32(n.Restarts)}
			for _, m := range drains {
				if o, ok := m[n.Name]; ok && o.Draining != "" {
					pn.Draining, pn.InFlight = o.Draining, o.InFlight
				}
			}
			if gating && n.Phase == intent.NodeUpdating && !n.HealthySince.IsZero() {
				pn.GateLeftMs = max(0, n.HealthySince.Add(p.MinHealthyTime.Duration).Sub(now).Milliseconds())
			}
			pd.Nodes = append(pd.Nodes, pn)
		}
		out.Domains = append(out.Domains, pd)
	}
	return out
}
