package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plughost/plughost/host/acl"
	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/install"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/launch"
	"github.com/plughost/plughost/host/supervisor"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	"github.com/plughost/plughost/store"
)

// maxBundleBytes bounds an uploaded bundle.
const maxBundleBytes = 1 << 30

// operator implements operatorv1.OperatorService for one agent.
type operator struct {
	operatorv1.UnimplementedOperatorServiceServer
	a *Agent
}

var _ operatorv1.OperatorServiceServer = (*operator)(nil)

// toStatus maps errors to gRPC codes at the API boundary.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, catalog.ErrUnknownPlugin), errors.Is(err, catalog.ErrUnknownVersion):
		code = codes.NotFound
	case errors.Is(err, catalog.ErrImmutable):
		code = codes.AlreadyExists
	case errors.Is(err, store.ErrNotLeader):
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case isBundleError(err):
		code = codes.InvalidArgument
	}
	return status.Error(code, err.Error())
}

// isBundleError reports whether err refuses a bundle for what it is or
// holds: bundle.ErrInvalid covers every refusal of the bundle package.
func isBundleError(err error) bool {
	for _, e := range []error{
		bundle.ErrInvalid,
		launch.ErrNotPlugin, launch.ErrStartTimeout, launch.ErrExited, launch.ErrChecksum,
		launch.ErrIdentity, launch.ErrAPIVersion, install.ErrServices,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (o *operator) GetAgentInfo(context.Context, *operatorv1.GetAgentInfoRequest) (*operatorv1.GetAgentInfoResponse, error) {
	return &operatorv1.GetAgentInfoResponse{
		Node: o.a.cfg.Node, Version: Version, ApiAddress: o.a.APIAddr(), DataDir: o.a.cfg.DataDir,
	}, nil
}

func (o *operator) AddBundle(stream operatorv1.OperatorService_AddBundleServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	name := filepath.Base(first.GetFileName())
	if name == "" || name == "." || name == "/" {
		return status.Error(codes.InvalidArgument, "add bundle: the first message must carry the bundle's file name")
	}
	if err := os.MkdirAll(o.a.cfg.stagingDir(), 0o700); err != nil {
		return toStatus(err)
	}
	dir, err := os.MkdirTemp(o.a.cfg.stagingDir(), "upload-")
	if err != nil {
		return toStatus(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		return toStatus(err)
	}
	var n int64
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return err
		}
		n += int64(len(msg.GetChunk()))
		if n > maxBundleBytes {
			f.Close()
			return status.Errorf(codes.ResourceExhausted, "bundle %s is larger than %d bytes", name, maxBundleBytes)
		}
		if _, err := f.Write(msg.GetChunk()); err != nil {
			f.Close()
			return toStatus(err)
		}
	}
	if err := f.Close(); err != nil {
		return toStatus(err)
	}
	res, err := o.a.installer.Install(stream.Context(), path, actorFrom(stream.Context()))
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&operatorv1.AddBundleResponse{
		Name: res.Manifest.Name, Version: res.Manifest.Version, Sha256: res.Manifest.SHA256, AlreadyRegistered: res.Already,
		InstalledHere: res.InstalledHere,
	})
}

func (o *operator) summary(ctx context.Context, cat *catalog.Catalog, name string, versions []*catalog.Entry) (*operatorv1.PluginSummary, error) {
	ps := &operatorv1.PluginSummary{Name: name}
	desired, pin, err := cat.Desired(ctx, name)
	if err != nil && !errors.Is(err, catalog.ErrUnknownPlugin) {
		return nil, err
	}
	if desired != nil {
		ps.DesiredVersion, ps.Services = desired.Version, desired.Manifest.Services
	}
	if pin != nil {
		ps.PinnedVersion = pin.Version
	}
	if st, ok := o.a.super.Status(name); ok {
		ps.RunningVersion, ps.State, ps.LastError = st.Running, st.State, st.LastError
	} else {
		// Not assigned to this node: nothing of it runs here.
		ps.State = operatorv1.InstanceState_INSTANCE_STATE_STOPPED
	}
	return ps, nil
}

// readCatalog runs read on the cluster's catalog or, when there is no
// leader to answer for it, on this node's copy, saying so in stale: what
// runs here and what it last knew still help an operator. A node that
// restarted without a leader has applied only its last snapshot: raft
// applies the rest of its log once a leader says what is committed.
//
// read gets the cluster-wide records (intent.DB) with the catalog's
// consistency.
func (o *operator) readCatalog(ctx context.Context, read func(*catalog.Catalog, *intent.DB) error) (stale string, err error) {
	db := intent.New(o.a.store)
	if leader, _ := o.a.store.Leader(); leader != "" {
		err := read(o.a.catalog, db)
		if !errors.Is(err, store.ErrNotLeader) {
			return "", err
		}
	}
	stale = fmt.Sprintf("the cluster has no raft leader, so this is this node's copy of the catalog as of revision %d, which may lag; see 'plughost operator raft list-peers'",
		o.a.store.Revision())
	return stale, read(o.a.catalog.Local(), db.Local())
}

func (o *operator) ListPlugins(ctx context.Context, _ *operatorv1.ListPluginsRequest) (*operatorv1.ListPluginsResponse, error) {
	resp := &operatorv1.ListPluginsResponse{}
	stale, err := o.readCatalog(ctx, func(cat *catalog.Catalog, db *intent.DB) error {
		resp.Plugins = nil
		all, err := cat.All(ctx)
		if err != nil {
			return err
		}
		view, err := o.readClusterView(ctx, db)
		if err != nil {
			return err
		}
		names := make([]string, 0, len(all))
		for n := range all {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			ps, err := o.summary(ctx, cat, n, all[n])
			if err != nil {
				return err
			}
			ps.Cluster, ps.Placement = view.instances[n], view.placement[n]
			resp.Plugins = append(resp.Plugins, ps)
		}
		return nil
	})
	if err != nil {
		return nil, toStatus(err)
	}
	resp.Stale = stale
	return resp, nil
}

func (o *operator) known(ctx context.Context, name string) ([]*catalog.Entry, error) {
	vs, err := o.knownIn(ctx, o.a.catalog, name)
	if err != nil {
		return nil, toStatus(err)
	}
	return vs, nil
}

func (o *operator) knownIn(ctx context.Context, cat *catalog.Catalog, name string) ([]*catalog.Entry, error) {
	vs, err := cat.Versions(ctx, name)
	if err != nil {
		return nil, err
	}
	if len(vs) == 0 {
		if refused, _ := cat.Refused(ctx, name); len(refused) > 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "plugin %q has no valid version, and nothing of it runs: %v (see 'plughost plugin events %s')", name, errors.Join(refused...), name)
		}
		return nil, status.Errorf(codes.NotFound, "plugin %q is not registered (see 'plughost plugin list')", name)
	}
	return vs, nil
}

func (o *operator) GetPluginStatus(ctx context.Context, req *operatorv1.GetPluginStatusRequest) (*operatorv1.GetPluginStatusResponse, error) {
	resp := &operatorv1.GetPluginStatusResponse{}
	stale, err := o.readCatalog(ctx, func(cat *catalog.Catalog, db *intent.DB) error {
		vs, err := o.knownIn(ctx, cat, req.GetName())
		if err != nil {
			return err
		}
		view, err := o.readClusterView(ctx, db)
		if err != nil {
			return err
		}
		resp.Plugin, err = o.summary(ctx, cat, req.GetName(), vs)
		if err != nil {
			return err
		}
		resp.Plugin.Cluster, resp.Plugin.Placement = view.instances[req.GetName()], view.placement[req.GetName()]
		return nil
	})
	if err != nil {
		return nil, toStatus(err)
	}
	resp.Stale = stale
	if st, ok := o.a.super.Status(req.GetName()); ok {
		for _, is := range st.Instances {
			resp.Instances = append(resp.Instances, instanceStatus(o.a.cfg.Node, is))
		}
	}
	return resp, nil
}

func instanceStatus(node string, is supervisor.InstanceStatus) *operatorv1.InstanceStatus {
	out := &operatorv1.InstanceStatus{
		Node: node, InstanceId: is.ID, Version: is.Version, State: is.State, Since: timestamppb.New(is.Since),
		Restarts: int32(is.Restarts), Pid: int32(is.Pid),
	}
	for _, l := range is.Limits {
		out.Limits = append(out.Limits, &operatorv1.LimitStatus{Resource: l.Resource, Limit: l.Limit, Value: l.Value, Enforced: l.Enforced, Reason: l.Reason})
	}
	for _, p := range is.Sandbox {
		out.Sandbox = append(out.Sandbox, &operatorv1.SandboxPart{Part: p.Part, Setting: p.Setting, Enforced: p.Enforced, Reason: p.Reason})
	}
	if u := is.Usage; u != nil {
		out.Usage = &operatorv1.ResourceUsage{
			MemoryBytes: u.MemoryBytes, MemoryPeakBytes: u.MemoryPeakBytes, CpuUsageNs: u.CPUUsageNanos,
			CpuThrottledNs: u.CPUThrottledNanos, Pids: u.Pids,
		}
	}
	return out
}

func (o *operator) ListVersions(ctx context.Context, req *operatorv1.ListVersionsRequest) (*operatorv1.ListVersionsResponse, error) {
	var (
		vs      []*catalog.Entry
		desired *catalog.Entry
		pin     *catalog.Pin
	)
	stale, err := o.readCatalog(ctx, func(cat *catalog.Catalog, _ *intent.DB) (err error) {
		if vs, err = o.knownIn(ctx, cat, req.GetName()); err != nil {
			return err
		}
		desired, pin, _ = cat.Desired(ctx, req.GetName())
		return nil
	})
	if err != nil {
		return nil, toStatus(err)
	}
	st, _ := o.a.super.Status(req.GetName())
	resp := &operatorv1.ListVersionsResponse{Stale: stale}
	for _, e := range vs {
		resp.Versions = append(resp.Versions, &operatorv1.VersionInfo{
			Version: e.Version, Sha256: e.SHA256, RegisteredAt: timestamppb.New(e.RegisteredAt),
			ApiVersions: toUint32(e.Manifest.APIVersions),
			Desired:     desired != nil && desired.Version == e.Version,
			Pinned:      pin != nil && pin.Version == e.Version,
			Running:     st.Running == e.Version,
		})
	}
	return resp, nil
}

func toUint32(xs []int) []uint32 {
	out := make([]uint32, len(xs))
	for i, x := range xs {
		out[i] = uint32(x)
	}
	return out
}

// swapWait bounds how long a pin waits for the new version to serve.
func swapWait(e *catalog.Entry) time.Duration {
	m := e.Manifest
	return m.Health.HealthyDeadline.Duration + m.Upgrade.DrainTimeout.Duration + 30*time.Second
}

func toProgress(node string, p supervisor.Progress) *operatorv1.SwapProgress {
	return &operatorv1.SwapProgress{
		Phase: p.Phase, Node: node, FromVersion: p.From, ToVersion: p.To, Message: p.Message,
		TimeLeftMs: p.TimeLeft.Milliseconds(), InFlight: p.InFlight, CutOff: p.CutOff, ElapsedMs: p.Elapsed.Milliseconds(),
	}
}

// followSwap records a change of desired version with set, then streams the
// swap's progress on this node until target serves (nil), the swap fell
// back (Aborted), or the wait budget runs out. With detach it returns once
// the change is recorded.
func (o *operator) followSwap(ctx context.Context, name string, target *catalog.Entry, detach bool, set func() error, send func(*operatorv1.SwapProgress) error) error {
	node := o.a.cfg.Node
	if detach {
		if err := set(); err != nil {
			return toStatus(err)
		}
		return send(&operatorv1.SwapProgress{Phase: operatorv1.SwapPhase_SWAP_PHASE_RECORDED, Node: node, ToVersion: target.Version,
			Message: "recorded; the swap runs in the background (see 'plughost plugin status " + name + "')"})
	}
	ch, cancel := o.a.super.Subscribe(name)
	defer cancel()
	began := time.Now()
	if err := set(); err != nil {
		return toStatus(err)
	}
	budget := time.NewTimer(swapWait(target))
	defer budget.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case p, ok := <-ch:
			if !ok {
				return status.Error(codes.Unavailable, "the agent is stopping")
			}
			if p.To != target.Version && p.Phase != operatorv1.SwapPhase_SWAP_PHASE_DRAINING {
				continue
			}
			if err := send(toProgress(node, p)); err != nil {
				return err
			}
			switch p.Phase {
			case operatorv1.SwapPhase_SWAP_PHASE_DONE:
				return nil
			case operatorv1.SwapPhase_SWAP_PHASE_FELL_BACK:
				return status.Errorf(codes.Aborted, "plugin %s fell back: %s", name, p.Message)
			}
		case <-tick.C:
			st, ok := o.a.super.Status(name)
			if !ok || !st.Assigned {
				// Not run here: the swap happens on the nodes that run
				// it; done once one of them reports the target serving.
				if nodes := o.servingOn(ctx, name, target.Version); len(nodes) > 0 {
					return send(&operatorv1.SwapProgress{Phase: operatorv1.SwapPhase_SWAP_PHASE_DONE, Node: nodes[0], ToVersion: target.Version,
						Message:   fmt.Sprintf("%s serves on %s (%s is not assigned to node %s; see 'plughost plugin status %s')", target.Version, strings.Join(nodes, ", "), name, node, name),
						ElapsedMs: time.Since(began).Milliseconds()})
				}
				continue
			}
			if st.Running == target.Version && st.State == operatorv1.InstanceState_INSTANCE_STATE_RUNNING && !st.Swapping && len(ch) == 0 {
				return send(&operatorv1.SwapProgress{Phase: operatorv1.SwapPhase_SWAP_PHASE_DONE, Node: node, ToVersion: target.Version,
					Message: target.Version + " serves", ElapsedMs: time.Since(began).Milliseconds()})
			}
			if st.State == operatorv1.InstanceState_INSTANCE_STATE_FAILED && st.FailedVersion == target.Version {
				_ = send(&operatorv1.SwapProgress{Phase: operatorv1.SwapPhase_SWAP_PHASE_FELL_BACK, Node: node, ToVersion: target.Version, Message: st.LastError})
				return status.Errorf(codes.Aborted, "plugin %s %s failed: %s", name, target.Version, st.LastError)
			}
		case <-budget.C:
			return status.Errorf(codes.DeadlineExceeded, "plugin %s: %s is not serving yet after %s; see 'plughost plugin status %s'", name, target.Version, swapWait(target), name)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// servingOn lists the nodes whose observations say version of plugin
// runs there, healthy, read from this node's copy of the store.
func (o *operator) servingOn(ctx context.Context, plugin, version string) []string {
	obs, _, err := intent.List[intent.Observation](ctx, intent.New(o.a.store).Local(), intent.PrefixObserve)
	if err != nil {
		return nil
	}
	var nodes []string
	for _, it := range obs {
		if ob := it.Value; ob.Plugin == plugin && ob.Version == version && ob.Healthy && ob.Role != intent.RoleStandby {
			nodes = append(nodes, ob.Node)
		}
	}
	return nodes
}

// servingVersion is the highest version of plugin its nodes report
// serving (healthy, not a standby); "" when none does.
func (o *operator) servingVersion(ctx context.Context, plugin string) string {
	obs, _, err := intent.List[intent.Observation](ctx, intent.New(o.a.store).Local(), intent.PrefixObserve)
	if err != nil {
		return ""
	}
	best := ""
	for _, it := range obs {
		ob := it.Value
		if ob.Plugin == plugin && ob.Healthy && ob.Role != intent.RoleStandby && ob.Version != "" && (best == "" || catalog.Less(best, ob.Version)) {
			best = ob.Version
		}
	}
	return best
}

func (o *operator) running(name string) string {
	if st, ok := o.a.super.Status(name); ok {
		return st.Running
	}
	return ""
}

// actor is who history records for a call: the caller's token, never a
// name the caller gives (the request's actor field is ignored).
func (o *operator) actor(ctx context.Context, _ string) string {
	return actorFrom(ctx)
}

func (o *operator) PinVersion(req *operatorv1.PinVersionRequest, stream operatorv1.OperatorService_PinVersionServer) error {
	ctx := stream.Context()
	name := req.GetName()
	e, err := o.a.catalog.Get(ctx, name, req.GetVersion())
	if err != nil {
		return toStatus(err)
	}
	actor, prev := o.actor(ctx, req.GetActor()), o.current(ctx, name)
	set := func() error {
		if err := o.a.catalog.SetPinAs(ctx, name, catalog.Pin{Version: e.Version, Actor: actor, Action: intent.TriggerPin}); err != nil {
			return err
		}
		return o.a.catalog.AddHistory(ctx, name, catalog.Record{Actor: actor, Action: "pin", From: prev, To: e.Version, Node: o.a.cfg.Node})
	}
	swap := func(p *operatorv1.SwapProgress) error {
		return stream.Send(&operatorv1.PinVersionResponse{Progress: p})
	}
	if anywhere, err := o.runsAnywhere(ctx, intent.New(o.a.store), name); err != nil {
		return toStatus(err)
	} else if anywhere {
		return o.followChange(ctx, name, e, intent.TriggerPin, req.GetDetach(), set, changeFollower{swap: swap,
			rollout: func(r *operatorv1.Rollout) error { return stream.Send(&operatorv1.PinVersionResponse{Rollout: r}) }})
	}
	return o.followSwap(ctx, name, e, req.GetDetach(), set, swap)
}

// current is the version of plugin that serves: on this node, else the
// highest its nodes report serving.
func (o *operator) current(ctx context.Context, name string) string {
	if v := o.running(name); v != "" {
		return v
	}
	return o.servingVersion(ctx, name)
}

func (o *operator) UnpinVersion(req *operatorv1.UnpinVersionRequest, stream operatorv1.OperatorService_UnpinVersionServer) error {
	ctx := stream.Context()
	name := req.GetName()
	vs, err := o.known(ctx, name)
	if err != nil {
		return err
	}
	node := o.a.cfg.Node
	actor, prev := o.actor(ctx, req.GetActor()), o.running(name)
	send := func(p *operatorv1.SwapProgress) error {
		return stream.Send(&operatorv1.UnpinVersionResponse{Progress: p})
	}
	// Unpinned, the highest version is desired.
	desired := vs[len(vs)-1]
	if anywhere, err := o.runsAnywhere(ctx, intent.New(o.a.store), name); err != nil {
		return toStatus(err)
	} else if anywhere {
		from := o.current(ctx, name)
		set := func() error {
			if err := o.a.catalog.ClearPin(ctx, name); err != nil {
				return err
			}
			return o.a.catalog.AddHistory(ctx, name, catalog.Record{Actor: actor, Action: "unpin", From: from, To: desired.Version, Node: node})
		}
		return o.followChange(ctx, name, desired, intent.TriggerUnpin, req.GetDetach(), set, changeFollower{swap: send,
			rollout: func(r *operatorv1.Rollout) error { return stream.Send(&operatorv1.UnpinVersionResponse{Rollout: r}) }})
	}
	// Assigned nowhere yet. A node where the highest version failed does
	// not try it again by itself (catalog.Effective): it keeps the version
	// it runs, else it runs the highest version that has not failed there.
	failures, err := o.a.catalog.Failures(ctx, node, name)
	if err != nil {
		return toStatus(err)
	}
	failure, failed := failures[desired.Version]
	target := desired
	if failed {
		if prev != "" {
			target, err = o.a.catalog.Get(ctx, name, prev)
		} else {
			target, err = o.a.catalog.Unpinned(ctx, node, name)
		}
		if err != nil {
			return toStatus(err)
		}
	}
	set := func() error {
		if err := o.a.catalog.ClearPin(ctx, name); err != nil {
			return err
		}
		return o.a.catalog.AddHistory(ctx, name, catalog.Record{Actor: actor, Action: "unpin", From: prev, To: target.Version, Node: node})
	}
	if !failed {
		return o.followSwap(ctx, name, target, req.GetDetach(), set, send)
	}
	if target.Version == prev || req.GetDetach() {
		if err := set(); err != nil {
			return toStatus(err)
		}
	} else if err := o.followSwap(ctx, name, target, false, set, send); err != nil {
		return err
	}
	return status.Errorf(codes.FailedPrecondition,
		"plugin %s is unpinned, but node %s runs %s, not the desired %s: %s failed on this node (%s) and is not tried again by itself; 'plughost plugin pin %s %s' tries it again",
		name, node, target.Version, desired.Version, desired.Version, failure.Reason, name, desired.Version)
}

func (o *operator) RollbackPlugin(req *operatorv1.RollbackPluginRequest, stream operatorv1.OperatorService_RollbackPluginServer) error {
	ctx := stream.Context()
	name := req.GetName()
	if _, err := o.known(ctx, name); err != nil {
		return err
	}
	anywhere, err := o.runsAnywhere(ctx, intent.New(o.a.store), name)
	if err != nil {
		return toStatus(err)
	}
	if !anywhere && req.GetRestoreData() {
		return errNoRolloutToRestore(name)
	}
	cur := o.current(ctx, name)
	if anywhere {
		// Roll back from where the cluster goes: its newest rollout's target.
		if it, found, err := intent.New(o.a.store).LatestRollout(ctx, name); err == nil && found {
			cur = it.Value.Target()
		}
	}
	if cur == "" {
		return status.Errorf(codes.FailedPrecondition, "plugin %s serves no version on any node to roll back from (see 'plughost plugin status %s')", name, name)
	}
	prev, err := o.rollbackTarget(ctx, name, cur)
	if err == nil && prev == cur {
		err = fmt.Errorf("plugin %q: the version before %s is %s itself", name, cur, cur)
	}
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "%v (pin a version with 'plughost plugin pin %s VERSION')", err, name)
	}
	e, err := o.a.catalog.Get(ctx, name, prev)
	if err != nil {
		return toStatus(err)
	}
	actor := o.actor(ctx, req.GetActor())
	set := func() error {
		pin := catalog.Pin{Version: e.Version, Actor: actor, Action: intent.TriggerRollback, RestoreData: req.GetRestoreData()}
		if err := o.a.catalog.SetPinAs(ctx, name, pin); err != nil {
			return err
		}
		return o.a.catalog.AddHistory(ctx, name, catalog.Record{Actor: actor, Action: "rollback", From: cur, To: e.Version, Node: o.a.cfg.Node})
	}
	swap := func(p *operatorv1.SwapProgress) error {
		return stream.Send(&operatorv1.RollbackPluginResponse{Progress: p})
	}
	if anywhere {
		return o.followChange(ctx, name, e, intent.TriggerRollback, req.GetDetach(), set, changeFollower{swap: swap,
			rollout: func(r *operatorv1.Rollout) error { return stream.Send(&operatorv1.RollbackPluginResponse{Rollout: r}) }})
	}
	return o.followSwap(ctx, name, e, req.GetDetach(), set, swap)
}

func (o *operator) RestartPlugin(ctx context.Context, req *operatorv1.RestartPluginRequest) (*operatorv1.RestartPluginResponse, error) {
	if _, err := o.known(ctx, req.GetName()); err != nil {
		return nil, err
	}
	if err := o.a.super.Restart(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	return &operatorv1.RestartPluginResponse{}, nil
}

func (o *operator) ListEvents(ctx context.Context, req *operatorv1.ListEventsRequest) (*operatorv1.ListEventsResponse, error) {
	// A plugin whose catalog records were all refused has events that say
	// so (area: bundle).
	if refused, _ := o.a.catalog.Refused(ctx, req.GetName()); len(refused) == 0 {
		if _, err := o.known(ctx, req.GetName()); err != nil {
			return nil, err
		}
	}
	limit := int(req.GetLimit())
	if limit <= 0 {
		limit = 100
	}
	evs, err := o.a.super.Events().List(ctx, req.GetName(), limit)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &operatorv1.ListEventsResponse{}
	for _, e := range evs {
		resp.Events = append(resp.Events, &operatorv1.PluginEvent{
			Time: timestamppb.New(e.At), Node: e.Node, Version: e.Version, InstanceId: e.Instance, Type: e.Type, Reason: e.Reason,
		})
	}
	return resp, nil
}

func (o *operator) GetHistory(ctx context.Context, req *operatorv1.GetHistoryRequest) (*operatorv1.GetHistoryResponse, error) {
	if _, err := o.known(ctx, req.GetName()); err != nil {
		return nil, err
	}
	recs, err := o.a.catalog.History(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &operatorv1.GetHistoryResponse{}
	for _, r := range recs {
		resp.Records = append(resp.Records, &operatorv1.HistoryRecord{
			Time: timestamppb.New(r.At), Actor: r.Actor, Action: r.Action, FromVersion: r.From, ToVersion: r.To,
			Strategy: r.Strategy, Outcome: r.Outcome, Reason: r.Reason, Node: r.Node, RolloutId: r.Rollout,
		})
	}
	return resp, nil
}

// actorFrom names who called: the description and accessor of the ACL
// token the call was authorized with. What a client claims (the CLI's
// "plughost-actor" metadata) is not trusted.
func actorFrom(ctx context.Context) string {
	if id, ok := acl.IdentityFrom(ctx); ok {
		return id.Actor()
	}
	return "api"
}
