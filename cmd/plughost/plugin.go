package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plughost/plughost/host/intent"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

func runPlugin(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) > 0 && args[0] == "init" {
		return runPluginInit(env, args[1:])
	}
	sub, rest, err := subcommand("plugin", args)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("plugin "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	limit := 0
	if sub == "events" {
		fs.IntVar(&limit, "n", 50, "newest events to show")
	}
	detach, restoreData := false, false
	if sub == "pin" || sub == "unpin" || sub == "rollback" {
		fs.BoolVar(&detach, "detach", false, "return once the change is recorded, without following the rollout (or, for a plugin that runs nowhere yet, the swap)")
	}
	if sub == "rollback" {
		fs.BoolVar(&restoreData, "restore-data", false, "once the old version serves again, restore the plugin's namespace to the snapshot taken before the rollout it undoes")
	}
	if err := parse(fs, rest); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	want := map[string]int{"list": 0, "status": 1, "versions": 1, "pin": 2, "unpin": 1, "rollback": 1, "restart": 1, "history": 1, "events": 1}
	if n := want[sub]; fs.NArg() != n {
		names := map[int]string{0: "no arguments", 1: "NAME", 2: "NAME VERSION"}
		return usagef("plugin %s takes %s", sub, names[n])
	}
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	c := operatorv1.NewOperatorServiceClient(conn)
	p := &pluginCmd{env: env, cf: cf, c: c, detach: detach, restoreData: restoreData}
	switch sub {
	case "list":
		return p.list(ctx)
	case "status":
		return p.status(ctx, fs.Arg(0))
	case "versions":
		return p.versions(ctx, fs.Arg(0))
	case "pin":
		return p.pin(ctx, fs.Arg(0), fs.Arg(1))
	case "unpin":
		return p.unpin(ctx, fs.Arg(0))
	case "rollback":
		return p.rollback(ctx, fs.Arg(0))
	case "restart":
		return p.restart(ctx, fs.Arg(0))
	case "history":
		return p.history(ctx, fs.Arg(0))
	case "events":
		return p.events(ctx, fs.Arg(0), limit)
	}
	return nil
}

type pluginCmd struct {
	env         *cliEnv
	cf          clientFlags
	c           operatorv1.OperatorServiceClient
	detach      bool
	restoreData bool
}

func state(s operatorv1.InstanceState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "INSTANCE_STATE_"))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ts(t *timestamppb.Timestamp) string {
	if t == nil || t.AsTime().IsZero() {
		return "-"
	}
	return t.AsTime().Local().Format(time.RFC3339)
}

// staleNote tells, on stderr, that a listing is a node's own copy of the
// catalog because the cluster has no leader.
func (p *pluginCmd) staleNote(stale string) {
	if stale != "" {
		fmt.Fprintf(p.env.stderr, "plughost: note: %s\n", stale)
	}
}

func (p *pluginCmd) list(ctx context.Context) error {
	resp, err := p.c.ListPlugins(ctx, &operatorv1.ListPluginsRequest{})
	if err != nil {
		return err
	}
	p.staleNote(resp.GetStale())
	if p.cf.format == "json" {
		out := []map[string]any{}
		for _, ps := range resp.GetPlugins() {
			out = append(out, summaryJSON(ps))
		}
		return printJSON(p.env.stdout, out)
	}
	// One row per instance in the cluster; a plugin no node reports has a
	// row of its own.
	var rows [][]string
	for _, ps := range resp.GetPlugins() {
		head := []string{ps.GetName(), orDash(ps.GetDesiredVersion()), orDash(ps.GetPinnedVersion())}
		if len(ps.GetCluster()) == 0 {
			rows = append(rows, append(head, "-", "-", "-", "-", "-", "-"))
		}
		for _, in := range ps.GetCluster() {
			rows = append(rows, append(slices.Clone(head), instanceCols(in)...))
		}
	}
	return table(p.env.stdout, []string{"NAME", "DESIRED", "PINNED", "NODE", "VERSION", "ROLE", "STATE", "HEALTH", "SINCE"}, rows)
}

// instanceCols are the NODE VERSION ROLE STATE HEALTH SINCE columns of an
// instance.
func instanceCols(in *operatorv1.NodeInstance) []string {
	return []string{in.GetNode(), orDash(in.GetVersion()), orDash(in.GetRole()), state(in.GetState()), health(in), ts(in.GetSince())}
}

// health is healthy or unhealthy as the node reports it, unless gossip says
// the node is not alive: then its report may be old, and that is said.
func health(in *operatorv1.NodeInstance) string {
	switch {
	case in.GetNodeStatus() != "alive":
		return "node " + orDash(in.GetNodeStatus())
	case in.GetHealthy():
		return "healthy"
	}
	return "unhealthy"
}

// summaryJSON is a plugin's summary for -format json: running_version,
// state and last_error are the answering node's, cluster has every node's
// instance.
func summaryJSON(ps *operatorv1.PluginSummary) map[string]any {
	cluster := []map[string]any{}
	for _, in := range ps.GetCluster() {
		cluster = append(cluster, map[string]any{
			"node": in.GetNode(), "version": in.GetVersion(), "role": in.GetRole(), "epoch": in.GetEpoch(), "state": state(in.GetState()),
			"healthy": in.GetHealthy(), "since": ts(in.GetSince()), "restarts": in.GetRestarts(), "last_error": in.GetLastError(),
			"node_status": in.GetNodeStatus(),
		})
	}
	out := map[string]any{
		"name": ps.GetName(), "running_version": ps.GetRunningVersion(), "desired_version": ps.GetDesiredVersion(),
		"pinned_version": ps.GetPinnedVersion(), "state": state(ps.GetState()), "services": ps.GetServices(), "last_error": ps.GetLastError(),
		"cluster": cluster,
	}
	if d := ps.GetPlacement(); d != nil {
		out["placement"] = map[string]any{"severity": d.GetSeverity(), "wanted": d.GetWanted(), "placed": d.GetPlaced(), "message": d.GetMessage(), "since": ts(d.GetSince())}
	}
	return out
}

func (p *pluginCmd) status(ctx context.Context, name string) error {
	resp, err := p.c.GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: name})
	if err != nil {
		return err
	}
	p.staleNote(resp.GetStale())
	ps := resp.GetPlugin()
	if p.cf.format == "json" {
		out := summaryJSON(ps)
		var insts []map[string]any
		for _, in := range resp.GetInstances() {
			var limits []map[string]any
			for _, l := range in.GetLimits() {
				limits = append(limits, map[string]any{"resource": l.GetResource(), "limit": l.GetLimit(), "enforced": l.GetEnforced(), "reason": l.GetReason()})
			}
			var parts []map[string]any
			for _, sp := range in.GetSandbox() {
				parts = append(parts, map[string]any{"part": sp.GetPart(), "setting": sp.GetSetting(), "enforced": sp.GetEnforced(), "reason": sp.GetReason()})
			}
			u := in.GetUsage()
			insts = append(insts, map[string]any{
				"node": in.GetNode(), "instance_id": in.GetInstanceId(), "version": in.GetVersion(), "state": state(in.GetState()),
				"since": ts(in.GetSince()), "restarts": in.GetRestarts(), "pid": in.GetPid(), "limits": limits, "sandbox": parts,
				"usage": map[string]any{"memory_bytes": u.GetMemoryBytes(), "memory_peak_bytes": u.GetMemoryPeakBytes(), "cpu_usage_ns": u.GetCpuUsageNs(), "cpu_throttled_ns": u.GetCpuThrottledNs(), "pids": u.GetPids()},
			})
		}
		out["instances"] = insts
		return printJSON(p.env.stdout, out)
	}
	w := p.env.stdout
	fmt.Fprintf(w, "Plugin:    %s\nState:     %s\nRunning:   %s\nDesired:   %s\nPinned:    %s\nServices:  %s\n",
		ps.GetName(), state(ps.GetState()), orDash(ps.GetRunningVersion()), orDash(ps.GetDesiredVersion()), orDash(ps.GetPinnedVersion()), strings.Join(ps.GetServices(), ", "))
	if ps.GetLastError() != "" {
		fmt.Fprintf(w, "Error:     %s\n", shown(ps.GetLastError()))
	}
	if d := ps.GetPlacement(); d != nil {
		fmt.Fprintf(w, "Placement: %s: %s\n", shown(d.GetSeverity()), shown(d.GetMessage()))
	}
	fmt.Fprintf(w, "\nInstances in the cluster:\n")
	if len(ps.GetCluster()) == 0 {
		fmt.Fprintf(w, "  none reported by any node\n")
	} else {
		var rows [][]string
		for _, in := range ps.GetCluster() {
			rows = append(rows, append(instanceCols(in), strconv.Itoa(int(in.GetRestarts())), orDash(in.GetLastError())))
		}
		if err := table(w, []string{"NODE", "VERSION", "ROLE", "STATE", "HEALTH", "SINCE", "RESTARTS", "ERROR"}, rows); err != nil {
			return err
		}
	}
	for _, in := range resp.GetInstances() {
		fmt.Fprintf(w, "\nInstance %s on %s\n  version %s, %s since %s, pid %d, restarts %d\n",
			in.GetInstanceId(), in.GetNode(), in.GetVersion(), state(in.GetState()), ts(in.GetSince()), in.GetPid(), in.GetRestarts())
		for _, l := range in.GetLimits() {
			if l.GetEnforced() {
				fmt.Fprintf(w, "  limit %-6s %-12s enforced\n", l.GetResource(), l.GetLimit())
			} else {
				fmt.Fprintf(w, "  limit %-6s %-12s NOT enforced: %s\n", l.GetResource(), l.GetLimit(), l.GetReason())
			}
		}
		for _, sp := range in.GetSandbox() {
			if sp.GetEnforced() {
				fmt.Fprintf(w, "  sandbox %-12s %s\n", sp.GetPart(), sp.GetSetting())
			} else {
				fmt.Fprintf(w, "  sandbox %-12s NOT enforced: %s\n", sp.GetPart(), sp.GetReason())
			}
		}
		if u := in.GetUsage(); u != nil {
			fmt.Fprintf(w, "  usage  memory %.1f MiB (peak %.1f MiB), cpu %.2fs (throttled %.2fs), pids %d\n",
				float64(u.GetMemoryBytes())/(1<<20), float64(u.GetMemoryPeakBytes())/(1<<20),
				float64(u.GetCpuUsageNs())/1e9, float64(u.GetCpuThrottledNs())/1e9, u.GetPids())
		}
	}
	return nil
}

func (p *pluginCmd) versions(ctx context.Context, name string) error {
	resp, err := p.c.ListVersions(ctx, &operatorv1.ListVersionsRequest{Name: name})
	if err != nil {
		return err
	}
	p.staleNote(resp.GetStale())
	if p.cf.format == "json" {
		var out []map[string]any
		for _, v := range resp.GetVersions() {
			out = append(out, map[string]any{"version": v.GetVersion(), "sha256": v.GetSha256(), "registered_at": ts(v.GetRegisteredAt()),
				"api_versions": v.GetApiVersions(), "desired": v.GetDesired(), "pinned": v.GetPinned(), "running": v.GetRunning()})
		}
		return printJSON(p.env.stdout, out)
	}
	var rows [][]string
	for _, v := range resp.GetVersions() {
		var marks []string
		if v.GetRunning() {
			marks = append(marks, "running")
		}
		if v.GetDesired() {
			marks = append(marks, "desired")
		}
		if v.GetPinned() {
			marks = append(marks, "pinned")
		}
		rows = append(rows, []string{v.GetVersion(), v.GetSha256()[:12], ts(v.GetRegisteredAt()), orDash(strings.Join(marks, ","))})
	}
	return table(p.env.stdout, []string{"VERSION", "SHA256", "REGISTERED", "MARKS"}, rows)
}

func (p *pluginCmd) pin(ctx context.Context, name, version string) error {
	stream, err := p.c.PinVersion(ctx, &operatorv1.PinVersionRequest{Name: name, Version: version, Detach: p.detach})
	if err != nil {
		return err
	}
	return p.follow(name, func() (*operatorv1.SwapProgress, *operatorv1.Rollout, error) {
		m, err := stream.Recv()
		return m.GetProgress(), m.GetRollout(), err
	})
}

func (p *pluginCmd) unpin(ctx context.Context, name string) error {
	stream, err := p.c.UnpinVersion(ctx, &operatorv1.UnpinVersionRequest{Name: name, Detach: p.detach})
	if err != nil {
		return err
	}
	return p.follow(name, func() (*operatorv1.SwapProgress, *operatorv1.Rollout, error) {
		m, err := stream.Recv()
		return m.GetProgress(), m.GetRollout(), err
	})
}

func (p *pluginCmd) rollback(ctx context.Context, name string) error {
	stream, err := p.c.RollbackPlugin(ctx, &operatorv1.RollbackPluginRequest{Name: name, Detach: p.detach, RestoreData: p.restoreData})
	if err != nil {
		return err
	}
	return p.follow(name, func() (*operatorv1.SwapProgress, *operatorv1.Rollout, error) {
		m, err := stream.Recv()
		return m.GetProgress(), m.GetRollout(), err
	})
}

func phase(ph operatorv1.SwapPhase) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(ph.String(), "SWAP_PHASE_")), "_", "-")
}

// follow prints a change's progress as it comes: the cluster rollout it
// started, a line a change of the rollout's record (see rolloutChanges),
// or, for a plugin that ran nowhere yet, the swap on the answering node.
// The agent ends the stream with an error when the swap fell back or the
// rollout rolled back, paused or was superseded, which makes the exit code
// 1; the last line printed says why, so it is not said again.
func (p *pluginCmd) follow(name string, recv func() (*operatorv1.SwapProgress, *operatorv1.Rollout, error)) error {
	var steps []any
	last := ""
	failed := false
	var prev *operatorv1.Rollout
	for {
		pr, ro, err := recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if p.cf.format == "json" {
				_ = printJSON(p.env.stdout, steps)
			}
			if failed && status.Code(err) == codes.Aborted {
				return errSilent // the last line said why
			}
			return err
		}
		if ro != nil {
			switch ro.GetState() {
			case intent.RolloutPaused, intent.RolloutRolledBack, intent.RolloutSuperseded:
				failed = true
			default:
				failed = false
			}
			if p.cf.format == "json" {
				steps = append(steps, map[string]any{"rollout": toRolloutJSON(ro)})
			} else {
				for _, l := range rolloutChanges(prev, ro) {
					fmt.Fprintf(p.env.stdout, "[%s] %s\n", ro.GetId(), shown(l))
				}
			}
			prev = ro
			continue
		}
		if prev == nil {
			failed = pr.GetPhase() == operatorv1.SwapPhase_SWAP_PHASE_FELL_BACK
		}
		if p.cf.format == "json" {
			steps = append(steps, map[string]any{"phase": phase(pr.GetPhase()), "node": pr.GetNode(), "from": pr.GetFromVersion(), "to": pr.GetToVersion(),
				"message": pr.GetMessage(), "time_left_ms": pr.GetTimeLeftMs(), "in_flight": pr.GetInFlight(), "cut_off": pr.GetCutOff(), "elapsed_ms": pr.GetElapsedMs()})
			continue
		}
		line := fmt.Sprintf("%-13s %s", phase(pr.GetPhase()), pr.GetMessage())
		if pr.GetTimeLeftMs() > 0 {
			line += fmt.Sprintf(" (%.1fs left)", float64(pr.GetTimeLeftMs())/1000)
		}
		if line != last {
			if prev != nil {
				// The answering node's own swap, within the rollout.
				fmt.Fprintf(p.env.stdout, "[%s]   node %s swap: %s\n", prev.GetId(), pr.GetNode(), shown(line))
			} else {
				fmt.Fprintf(p.env.stdout, "[%s] %s\n", name, shown(line))
			}
			last = line
		}
	}
	if p.cf.format == "json" {
		return printJSON(p.env.stdout, steps)
	}
	return nil
}

func (p *pluginCmd) restart(ctx context.Context, name string) error {
	if _, err := p.c.RestartPlugin(ctx, &operatorv1.RestartPluginRequest{Name: name}); err != nil {
		return err
	}
	fmt.Fprintf(p.env.stdout, "%s restarting\n", name)
	return nil
}

func (p *pluginCmd) history(ctx context.Context, name string) error {
	resp, err := p.c.GetHistory(ctx, &operatorv1.GetHistoryRequest{Name: name})
	if err != nil {
		return err
	}
	if p.cf.format == "json" {
		var out []map[string]any
		for _, r := range resp.GetRecords() {
			out = append(out, map[string]any{"time": ts(r.GetTime()), "actor": r.GetActor(), "action": r.GetAction(), "from": r.GetFromVersion(),
				"to": r.GetToVersion(), "strategy": r.GetStrategy(), "outcome": r.GetOutcome(), "reason": r.GetReason(), "node": r.GetNode(),
				"rollout_id": r.GetRolloutId()})
		}
		return printJSON(p.env.stdout, out)
	}
	return historyTable(p.env.stdout, resp.GetRecords())
}

// historyTable is `plugin history`'s table. A rollout's record names the
// rollout ('plughost rollout status ID' shows it whole) and, when it
// failed, the node in its reason.
func historyTable(w io.Writer, recs []*operatorv1.HistoryRecord) error {
	var rows [][]string
	for _, r := range recs {
		action, reason := r.GetAction(), r.GetReason()
		if r.GetRolloutId() != "" {
			action += " " + r.GetRolloutId()
		}
		if r.GetNode() != "" && r.GetAction() == "rollout" && reason != "" && !strings.Contains(reason, r.GetNode()) {
			reason = "node " + r.GetNode() + ": " + reason
		}
		rows = append(rows, []string{ts(r.GetTime()), r.GetActor(), action, orDash(r.GetFromVersion()), orDash(r.GetToVersion()),
			orDash(r.GetStrategy()), orDash(r.GetOutcome()), orDash(reason)})
	}
	return table(w, []string{"TIME", "ACTOR", "ACTION", "FROM", "TO", "STRATEGY", "OUTCOME", "REASON"}, rows)
}

func (p *pluginCmd) events(ctx context.Context, name string, limit int) error {
	resp, err := p.c.ListEvents(ctx, &operatorv1.ListEventsRequest{Name: name, Limit: int32(limit)})
	if err != nil {
		return err
	}
	if p.cf.format == "json" {
		var out []map[string]any
		for _, e := range resp.GetEvents() {
			out = append(out, map[string]any{"time": ts(e.GetTime()), "node": e.GetNode(), "version": e.GetVersion(), "instance_id": e.GetInstanceId(), "type": e.GetType(), "reason": e.GetReason()})
		}
		return printJSON(p.env.stdout, out)
	}
	var rows [][]string
	for _, e := range resp.GetEvents() {
		rows = append(rows, []string{ts(e.GetTime()), e.GetNode(), orDash(e.GetVersion()), e.GetType(), e.GetReason()})
	}
	return table(p.env.stdout, []string{"TIME", "NODE", "VERSION", "TYPE", "REASON"}, rows)
}
