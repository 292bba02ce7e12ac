package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/intent"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// Ways -bad makes the target version bad, and where -kill-node kills an
// agent.
const (
	badNeverHealthy = "never-healthy"
	badCrashAfter2s = "crash-after-2s"
	killBefore      = "before"
	killDuring      = "during"
)

// What the bench builds when run from the source tree: the echo plugin,
// and for a bad target the fixture that is bad by its bundle's config.
const (
	rolloutGood = "./plugins/echo"
	rolloutBad  = "./test/fixtures/badtarget"
)

// rolloutRun is one run of `plughost bench rollout`, as -format json
// prints it. Times are seconds from the pin of the target version.
type rolloutRun struct {
	Nodes           int     `json:"nodes"`
	Plugin          string  `json:"plugin"`
	From            string  `json:"from"`
	To              string  `json:"to"`
	Bad             string  `json:"bad,omitempty"`
	MinHealthyTime  float64 `json:"min_healthy_time_seconds"`
	HealthyDeadline float64 `json:"healthy_deadline_seconds"`
	Rate            int     `json:"rate"`
	Preload         bool    `json:"preload,omitempty"`

	Rollout string `json:"rollout"`
	// Outcome is the rollout's state at its end: completed, rolled_back
	// or paused.
	Outcome    string   `json:"outcome"`
	Failure    string   `json:"failure,omitempty"`
	FailedNode string   `json:"failed_node,omitempty"`
	Pending    []string `json:"pending,omitempty"`
	// Started is when the rollout record appeared; Total when it ended.
	Started float64 `json:"started_seconds"`
	Total   float64 `json:"total_seconds"`
	// Detected is when the record turned back (or paused) on a failure;
	// RolledBack when it was rolled back everywhere.
	Detected   float64             `json:"detected_seconds,omitempty"`
	RolledBack float64             `json:"rolled_back_seconds,omitempty"`
	Domains    []rolloutDomainTime `json:"domains"`

	// KillNode is -kill-node; Killed the node whose agent was killed and
	// KilledAt when. Restarted is when it was started again, Rejoined
	// when gossip saw it alive again, Serving when it reported the
	// rollout's final version healthy, Converged when the record said so.
	KillNode  string  `json:"kill_node,omitempty"`
	Killed    string  `json:"killed_node,omitempty"`
	KilledAt  float64 `json:"killed_seconds,omitempty"`
	Restarted float64 `json:"restarted_seconds,omitempty"`
	Rejoined  float64 `json:"rejoined_seconds,omitempty"`
	Serving   float64 `json:"serving_seconds,omitempty"`
	Converged float64 `json:"converged_seconds,omitempty"`

	Calls  int `json:"calls"`
	Failed int `json:"failed"`
	// LostWithKilled are the calls through the killed agent that were in
	// flight when it died (not in Failed: nothing could answer them).
	LostWithKilled int               `json:"lost_with_killed_agent,omitempty"`
	Held           int               `json:"held"`
	MaxHeldMs      int64             `json:"max_held_ms"`
	FirstError     string            `json:"first_error,omitempty"`
	Failures       []failureGroup    `json:"failures,omitempty"`
	Versions       map[string]int    `json:"answered_by_version"`
	AfterEnd       map[string]int    `json:"answered_after_end_by_version"`
	Final          map[string]string `json:"final_versions"`
}

// rolloutDomainTime is one upgrade domain's part in the run: when it began
// moving to the target and how long until its gate passed, and the same
// for its way back.
type rolloutDomainTime struct {
	Name    string   `json:"name"`
	Nodes   []string `json:"nodes"`
	Phase   string   `json:"phase"` // at the end
	Start   float64  `json:"start_seconds,omitempty"`
	Forward float64  `json:"forward_seconds,omitempty"`
	Back    float64  `json:"back_seconds,omitempty"`
	// Swapped is the time from the domain's start to the moment its last
	// node reported the target healthy (the nodes' own swap; the gate's
	// min_healthy_time follows); SwappedBack the same on the way back.
	Swapped     float64 `json:"swapped_seconds,omitempty"`
	SwappedBack float64 `json:"swapped_back_seconds,omitempty"`
}

// nodeReport is a node's observation of the plugin as the bench received
// it.
type nodeReport struct {
	at      time.Time
	version string
	healthy bool
}

// swapTime is the time from start until every one of nodes reported
// version healthy after it, 0 if one did not (or start is zero).
func swapTime(reports map[string][]nodeReport, nodes []string, start time.Time, version string) float64 {
	if start.IsZero() || len(nodes) == 0 {
		return 0
	}
	var last time.Time
	for _, n := range nodes {
		i := slices.IndexFunc(reports[n], func(r nodeReport) bool {
			return !r.at.Before(start) && r.version == version && r.healthy
		})
		if i < 0 {
			return 0
		}
		last = later(last, reports[n][i].at)
	}
	return last.Sub(start).Seconds()
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// rolloutSetup is what one run needs.
type rolloutSetup struct {
	dir, exe, targetExe, bad, kill                 string
	nodes, rate                                    int
	minHealthy, deadline, swapMinHealthy, interval time.Duration
	before, after, timeout, within                 time.Duration
	restart, preload                               bool
}

// benchRollout starts a cluster of its own on loopback, one agent per
// upgrade domain, installs an every-node plugin, drives steady calls
// through every node, pins a newer version and follows the cluster
// rollout to its end, and reports how long each step took and what the
// callers saw.
func benchRollout(ctx context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("bench rollout", flag.ContinueOnError)
	exe := fs.String("exe", "", "executable of the echo plugin at the version installed first (default: built from "+rolloutGood+" of the source tree in the working directory, as 1.0.0)")
	targetExe := fs.String("target-exe", "", "executable of the echo plugin at the version to roll out (default: built as 2.0.0 from "+rolloutGood+", or with -bad from "+rolloutBad+")")
	bad := fs.String("bad", "", "make the target version bad: never-healthy or crash-after-2s (healthy, then exits 2 s after it starts), through its config: the target must be "+rolloutBad)
	kill := fs.String("kill-node", "", "kill -9 one agent (not the raft leader's) before the rollout or during it: before or during")
	preload := fs.Bool("preload", false, "add the target's bundle through every agent before the pin (otherwise each node fetches it from a peer once it is pinned)")
	restart := fs.Bool("restart-killed", true, "start the killed agent again once the rollout ended, and time its convergence")
	nodes := fs.Int("nodes", 5, "agents to start on loopback, each in an upgrade domain of its own (ud1, ud2, ...)")
	rate := fs.Int("rate", 200, "calls per second, spread over every node that runs")
	minHealthy := fs.Duration("min-healthy-time", 2*time.Second, "manifest upgrade.min_healthy_time: how long a domain's nodes must be healthy on the new version")
	deadline := fs.Duration("healthy-deadline", 5*time.Second, "manifest upgrade.healthy_deadline: how long a domain may take to get there")
	swapMinHealthy := fs.Duration("swap-min-healthy-time", 500*time.Millisecond, "manifest health.min_healthy_time: each node's own swap gate")
	interval := fs.Duration("health-interval", 500*time.Millisecond, "manifest health.interval")
	before := fs.Duration("before", 2*time.Second, "steady load before the pin")
	after := fs.Duration("after", time.Second, "load after the rollout (and the killed node's convergence) ended")
	timeout := fs.Duration("timeout", 30*time.Second, "deadline of each call")
	within := fs.Duration("within", 2*time.Minute, "give up when the rollout has not ended by then")
	runs := fs.Int("runs", 1, "runs to make, each on a new cluster; the text output adds medians and ranges")
	format := fs.String("format", "text", "output: text or json")
	keep := fs.Bool("keep", false, "keep the agents' data directories and logs after the run")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *nodes < 3:
		return usagef("bench rollout: -nodes must be at least 3 (a quorum must survive a killed agent)")
	case *rate <= 0 || *timeout <= 0 || *within <= 0 || *runs < 1:
		return usagef("bench rollout: -rate, -timeout, -within and -runs must be positive")
	case *before < 0 || *after < 0:
		return usagef("bench rollout: -before and -after must not be negative")
	case *minHealthy <= 0 || *deadline <= *minHealthy || *swapMinHealthy <= 0 || *swapMinHealthy >= *deadline || *interval <= 0:
		return usagef("bench rollout: -min-healthy-time and -swap-min-healthy-time must be positive and shorter than -healthy-deadline, -health-interval positive")
	case *bad != "" && *bad != badNeverHealthy && *bad != badCrashAfter2s:
		return usagef("bench rollout: -bad is never-healthy or crash-after-2s")
	case *kill != "" && *kill != killBefore && *kill != killDuring:
		return usagef("bench rollout: -kill-node is before or during")
	case *format != "text" && *format != "json":
		return usagef("bench rollout: -format is text or json")
	case (*exe == "") != (*targetExe == ""):
		return usagef("bench rollout: give both -exe and -target-exe, or neither to build them")
	}
	work, err := os.MkdirTemp("", "plughost-bench-rollout-")
	if err != nil {
		return err
	}
	defer func() {
		if !*keep {
			_ = os.RemoveAll(work)
		}
	}()
	if *exe == "" {
		if *exe, *targetExe, err = buildRolloutPlugins(ctx, work, *bad != ""); err != nil {
			return fmt.Errorf("bench rollout: %w", err)
		}
	}
	for _, p := range []string{*exe, *targetExe} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("bench rollout: plugin executable: %w", err)
		}
	}
	var results []rolloutRun
	for i := range *runs {
		dir := filepath.Join(work, "run"+strconv.Itoa(i+1))
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		if *format == "text" {
			fmt.Fprintf(env.stderr, "bench rollout: run %d: starting %d agents in %s\n", i+1, *nodes, dir)
		}
		res, err := rolloutOnce(ctx, rolloutSetup{dir: dir, exe: *exe, targetExe: *targetExe, bad: *bad, kill: *kill,
			nodes: *nodes, rate: *rate, minHealthy: *minHealthy, deadline: *deadline, swapMinHealthy: *swapMinHealthy,
			interval: *interval, before: *before, after: *after, timeout: *timeout, within: *within, restart: *restart, preload: *preload})
		if err != nil {
			*keep = true
			return fmt.Errorf("bench rollout: run %d: %w (the agents' logs are in %s)", i+1, err, dir)
		}
		if !*keep {
			_ = os.RemoveAll(dir)
		}
		results = append(results, res)
	}
	if *format == "json" {
		return printJSON(env.stdout, results)
	}
	return printRolloutRuns(env, results)
}

// buildRolloutPlugins builds echo 1.0.0 and 2.0.0 (or, bad, the bad
// target fixture as echo 2.0.0) from the source tree the working directory
// is in.
func buildRolloutPlugins(ctx context.Context, dir string, bad bool) (v1, v2 string, err error) {
	root, err := sourceRoot()
	if err != nil {
		return "", "", err
	}
	target := rolloutGood
	if bad {
		target = rolloutBad
	}
	var out []string
	for _, b := range []struct{ pkg, version string }{{rolloutGood, "1.0.0"}, {target, "2.0.0"}} {
		exe := filepath.Join(dir, "exe-"+b.version, "echo")
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", exe,
			"-ldflags", "-X main.name=echo -X main.version="+b.version, b.pkg)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s in %s: %v: %s", b.pkg, root, err, strings.TrimSpace(string(msg)))
		}
		out = append(out, exe)
	}
	return out[0], out[1], nil
}

// sourceRoot is the plughost source tree holding the working directory.
func sourceRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(mod), "module github.com/plughost/plughost\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("the working directory is not in the plughost source tree: run it there to build the plugins, or give -exe and -target-exe")
		}
		dir = parent
	}
}

// rolloutManifest is the manifest base of the bench's bundles; config
// makes the target bad.
func rolloutManifest(s rolloutSetup, config map[string]any) map[string]any {
	if config == nil {
		config = map[string]any{}
	}
	return map[string]any{
		"placement": map[string]any{"mode": "every-node"},
		"health": map[string]any{"interval": s.interval.String(), "timeout": min(s.interval, time.Second).String(),
			"min_healthy_time": s.swapMinHealthy.String(), "healthy_deadline": s.deadline.String()},
		"upgrade": map[string]any{"min_healthy_time": s.minHealthy.String(), "healthy_deadline": s.deadline.String()},
		"config":  config,
	}
}

// badConfig is the config that makes the badtarget fixture bad on every
// node as -bad says.
func badConfig(bad string) map[string]any {
	switch bad {
	case badNeverHealthy:
		return map[string]any{"nodes": []string{"*"}}
	case badCrashAfter2s:
		return map[string]any{"nodes": []string{"*"}, "crash_after_ms": 2000, "healthy_until_crash": true}
	}
	return nil
}

func rolloutOnce(ctx context.Context, s rolloutSetup) (rolloutRun, error) {
	res := rolloutRun{Nodes: s.nodes, Bad: s.bad, KillNode: s.kill, Rate: s.rate, Preload: s.preload,
		MinHealthyTime: s.minHealthy.Seconds(), HealthyDeadline: s.deadline.Seconds()}
	c, err := startBenchCluster(ctx, s.dir, s.nodes, func(i int) []string {
		return []string{"-upgrade-domain", "ud" + strconv.Itoa(i+1)}
	})
	if err != nil {
		return res, err
	}
	defer c.stop()
	// Every operator request goes through the first agent, which the
	// bench never kills.
	ctl := c.agents[0]
	op := operatorv1.NewOperatorServiceClient(ctl.conn)
	name, from, err := addBenchBundle(ctx, c, ctl, s.exe, rolloutManifest(s, nil))
	if err != nil {
		return res, err
	}
	res.Plugin, res.From = name, from
	// Pinned, the plugin stays on from when the target's bundle comes.
	if err := pinVersion(ctx, op, name, from); err != nil {
		return res, err
	}
	var nodes []string
	for _, a := range c.agents {
		nodes = append(nodes, a.node)
	}
	if err := waitVersionEverywhere(ctx, op, name, from, nodes, 2*time.Minute); err != nil {
		return res, err
	}
	targetBundle, err := buildBenchBundle(ctx, c, s.targetExe, rolloutManifest(s, badConfig(s.bad)))
	if err != nil {
		return res, err
	}
	tname, to, err := addBundleFile(ctx, ctl, targetBundle)
	if err != nil {
		return res, err
	}
	if tname != name || to == from {
		return res, fmt.Errorf("-target-exe is %s %s: want another version of %s %s", tname, to, name, from)
	}
	res.To = to
	if s.preload {
		// Every node holds the target before the pin: none fetches it
		// from a peer while the rollout runs.
		for _, a := range c.agents[1:] {
			if _, _, err := addBundleFile(ctx, a, targetBundle); err != nil {
				return res, err
			}
		}
	}

	// The load: one connection a node, as an application's, whose calls
	// the agent relays; none through a killed agent until it rejoined.
	loadConns := map[string]*grpc.ClientConn{}
	for _, a := range c.agents {
		conn, err := grpc.NewClient(a.api, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(bearer{"authorization": "Bearer " + c.token}))
		if err != nil {
			return res, err
		}
		defer conn.Close()
		loadConns[a.node] = conn
	}
	var down downSet
	load := startLoad(ctx, s.rate, s.timeout, func(i int) *benchAgent {
		for range c.agents {
			a := c.agents[i%len(c.agents)]
			if !down.has(a.node) {
				return a
			}
			i++
		}
		return nil
	}, func(ctx context.Context, a *benchAgent, opts ...grpc.CallOption) (string, error) {
		resp, err := echov1.NewEchoServiceClient(loadConns[a.node]).Echo(ctx, &echov1.EchoRequest{Message: "bench"}, opts...)
		return resp.GetVersion(), err
	})
	defer load.stop()

	select {
	case <-time.After(s.before):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	var (
		victim   *benchAgent
		killedAt time.Time
	)
	killVictim := func(domainOrder []string) error {
		var err error
		if victim, err = pickVictim(ctx, c, ctl, domainOrder); err != nil {
			return err
		}
		down.add(victim.node)
		killedAt = time.Now()
		return victim.kill()
	}
	if s.kill == killBefore {
		if err := killVictim(nil); err != nil {
			return res, err
		}
		if err := waitMember(ctx, op, victim.node, "failed", 30*time.Second); err != nil {
			return res, err
		}
	}

	f, err := watchSys(ctx, ctl.conn, intent.RolloutPrefix(name))
	if err != nil {
		return res, err
	}
	defer f.stop()
	obs, err := watchSys(ctx, ctl.conn, intent.PrefixObserve)
	if err != nil {
		return res, err
	}
	defer obs.stop()
	reports := map[string][]nodeReport{}
	pinAt := time.Now()
	since := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return t.Sub(pinAt).Seconds()
	}
	if err := pinVersion(ctx, op, name, to); err != nil {
		return res, err
	}
	deadlineAt := time.After(s.within)
	var (
		last      *intent.Rollout
		startedAt time.Time
		endAt     time.Time
		detectAt  time.Time
		backAt    time.Time
		domains   = map[string]*domainTimes{}
	)
	for {
		var seen rolloutSeen
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case err := <-f.errs:
			return res, err
		case err := <-obs.errs:
			return res, err
		case <-deadlineAt:
			if last == nil {
				return res, fmt.Errorf("no rollout of %s started within %v of pinning %s (do the agents run the rollout controller?)", name, s.within, to)
			}
			return res, fmt.Errorf("rollout %s did not end within %v of the pin: %s", last.ID, s.within, describeRollout(last))
		case p := <-obs.puts:
			if it, err := intent.Decode[intent.Observation](p.kv); err == nil && it.Value.Plugin == name {
				o := it.Value
				reports[o.Node] = append(reports[o.Node], nodeReport{at: p.at, version: o.Version, healthy: o.Healthy})
			}
			continue
		case p := <-f.puts:
			it, err := intent.Decode[intent.Rollout](p.kv)
			if err != nil {
				return res, fmt.Errorf("the cluster wrote a rollout record the bench cannot read: %w", err)
			}
			seen = rolloutSeen{r: &it.Value, at: p.at}
		}
		r := seen.r
		if r.To != to || (last != nil && r.Seq != last.Seq) {
			continue // an older rollout's record, or a later one's
		}
		if last == nil {
			startedAt = seen.at
		}
		last = r
		for _, d := range r.Domains {
			dt := domains[d.Name]
			if dt == nil {
				dt = &domainTimes{}
				domains[d.Name] = dt
			}
			dt.see(d.Phase, seen.at)
		}
		if detectAt.IsZero() && (r.Back() || r.State == intent.RolloutPaused) {
			detectAt = seen.at
		}
		if backAt.IsZero() && r.State == intent.RolloutRolledBack {
			backAt = seen.at
		}
		if s.kill == killDuring && victim == nil && (r.Back() || (len(r.Domains) > 0 && r.Domains[0].Phase == intent.DomainDone)) {
			order := make([]string, 0, len(r.Domains))
			for _, d := range r.Domains {
				order = append(order, d.Name)
			}
			if err := killVictim(order); err != nil {
				return res, err
			}
		}
		if r.Done() || r.State == intent.RolloutPaused {
			endAt = seen.at
			break
		}
	}
	res.Rollout, res.Outcome, res.Failure, res.FailedNode, res.Pending = last.ID, last.State, last.Failure, last.FailedNode, last.Pending
	res.Started, res.Total, res.Detected, res.RolledBack = since(startedAt), since(endAt), since(detectAt), since(backAt)
	for _, d := range last.Domains {
		dt := domains[d.Name]
		var nodes []string
		for _, n := range d.Nodes {
			nodes = append(nodes, n.Name)
		}
		res.Domains = append(res.Domains, rolloutDomainTime{Name: d.Name, Nodes: nodes, Phase: d.Phase,
			Start: since(dt.first[intent.DomainUpdating]), Forward: dt.took(intent.DomainUpdating, intent.DomainDone),
			Back:        dt.took(intent.DomainRollingBack, intent.DomainRolledBack),
			Swapped:     swapTime(reports, nodes, dt.first[intent.DomainUpdating], to),
			SwappedBack: swapTime(reports, nodes, dt.first[intent.DomainRollingBack], from)})
	}

	if victim != nil {
		res.Killed, res.KilledAt = victim.node, since(killedAt)
		if s.restart && last.State != intent.RolloutPaused {
			if err := rejoin(ctx, c, op, f, victim, last, &res, since); err != nil {
				return res, err
			}
			down.remove(victim.node)
		}
	}
	select {
	case <-time.After(s.after):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	load.stop()

	res.Versions, res.AfterEnd = map[string]int{}, map[string]int{}
	calls := load.ended()
	var counted []loadCall
	for _, lc := range calls {
		if victim != nil && lc.node == victim.node && lc.err != nil && lc.start.Before(killedAt) {
			res.LostWithKilled++
			continue
		}
		counted = append(counted, lc)
	}
	res.Calls = len(calls)
	for _, lc := range counted {
		if lc.err != nil {
			res.Failed++
			if res.FirstError == "" {
				res.FirstError = fmt.Sprintf("through %s, %.2fs after the pin: %s", lc.node, since(lc.end), status.Convert(lc.err).Message())
			}
			continue
		}
		res.Versions[lc.version]++
		if lc.start.After(endAt) {
			res.AfterEnd[lc.version]++
		}
		if lc.held > 0 {
			res.Held++
			res.MaxHeldMs = max(res.MaxHeldMs, lc.held.Milliseconds())
		}
	}
	res.Failures = groupFailures(counted)
	res.Final, err = finalVersions(ctx, op, name)
	return res, err
}

// rejoin starts the killed agent again and times its return: gossip sees
// it alive, it reports the rollout's final version healthy, and the
// record (when it listed the node pending) says it converged.
func rejoin(ctx context.Context, c *benchCluster, op operatorv1.OperatorServiceClient, f *sysWatch, victim *benchAgent,
	last *intent.Rollout, res *rolloutRun, since func(time.Time) float64) error {
	target := last.Target()
	obs, err := watchSys(ctx, c.agents[0].conn, intent.ObserveKey(victim.node, last.Plugin))
	if err != nil {
		return err
	}
	defer obs.stop()
	restartAt := time.Now()
	if err := c.restart(victim); err != nil {
		return err
	}
	res.Restarted = since(restartAt)
	if err := waitMember(ctx, op, victim.node, "alive", time.Minute); err != nil {
		return err
	}
	res.Rejoined = since(time.Now())
	pending := slices.Contains(last.Pending, victim.node)
	timeout := time.After(time.Minute)
	for res.Serving == 0 || (pending && res.Converged == 0) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-f.errs:
			return err
		case err := <-obs.errs:
			return err
		case <-timeout:
			return fmt.Errorf("%s did not report %s %s healthy (or the rollout did not record it converged) within a minute of rejoining", victim.node, last.Plugin, target)
		case p := <-f.puts:
			it, err := intent.Decode[intent.Rollout](p.kv)
			if err == nil && it.Value.Seq == last.Seq && !it.Value.Converged.IsZero() && res.Converged == 0 {
				res.Converged = since(p.at)
			}
		case p := <-obs.puts:
			it, err := intent.Decode[intent.Observation](p.kv)
			o := it.Value
			// Since: an instance started before the kill does not count.
			if err == nil && res.Serving == 0 && o.Version == target && o.Healthy && !o.Since.Before(restartAt) {
				res.Serving = since(p.at)
			}
		}
	}
	return nil
}

// domainTimes is when the bench first saw a domain in each phase.
type domainTimes struct{ first map[string]time.Time }

func (d *domainTimes) see(phase string, at time.Time) {
	if d.first == nil {
		d.first = map[string]time.Time{}
	}
	if _, ok := d.first[phase]; !ok {
		d.first[phase] = at
	}
}

// took is the time from the domain's first from phase to its first to
// phase after it, 0 if it did not get there.
func (d *domainTimes) took(from, to string) float64 {
	a, b := d.first[from], d.first[to]
	if a.IsZero() || b.IsZero() || b.Before(a) {
		return 0
	}
	return b.Sub(a).Seconds()
}

// downSet is the nodes the load does not call through.
type downSet struct {
	mu    sync.Mutex
	nodes map[string]bool
}

func (d *downSet) add(node string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nodes == nil {
		d.nodes = map[string]bool{}
	}
	d.nodes[node] = true
}

func (d *downSet) remove(node string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.nodes, node)
}

func (d *downSet) has(node string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nodes[node]
}

// pinVersion pins name to version and returns once the pin is recorded.
func pinVersion(ctx context.Context, op operatorv1.OperatorServiceClient, name, version string) error {
	stream, err := op.PinVersion(ctx, &operatorv1.PinVersionRequest{Name: name, Version: version, Actor: "bench rollout", Detach: true})
	if err != nil {
		return fmt.Errorf("pin %s %s: %w", name, version, err)
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("pin %s %s: %w", name, version, err)
		}
	}
}

// waitVersionEverywhere waits until every one of nodes reports the
// plugin's version healthy.
func waitVersionEverywhere(ctx context.Context, op operatorv1.OperatorServiceClient, name, version string, nodes []string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last string
	for {
		st, err := op.GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: name})
		if err == nil {
			ok := map[string]bool{}
			var seen []string
			for _, in := range st.GetPlugin().GetCluster() {
				seen = append(seen, fmt.Sprintf("%s %s healthy=%v", in.GetNode(), in.GetVersion(), in.GetHealthy()))
				ok[in.GetNode()] = in.GetVersion() == version && in.GetHealthy()
			}
			all := true
			for _, n := range nodes {
				all = all && ok[n]
			}
			if all {
				return nil
			}
			last = "instances: " + orDash(strings.Join(seen, ", "))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %s is not healthy on every node within %v; last seen %s", name, version, within, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitMember waits until the answering agent's gossip sees node in state
// (alive, failed).
func waitMember(ctx context.Context, op operatorv1.OperatorServiceClient, node, state string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	last := "not a member"
	for {
		if resp, err := op.ListMembers(ctx, &operatorv1.ListMembersRequest{}); err == nil {
			for _, m := range resp.GetMembers() {
				if m.GetName() == node {
					last = m.GetStatus()
				}
			}
			if last == state {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gossip did not see %s %s within %v (last %s)", node, state, within, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pickVictim picks the agent -kill-node kills: the node of the latest
// upgrade domain in order (by node name without one) that is neither the
// raft leader's nor ctl, so that the rollout reaches its domain after the
// kill and no leader election is measured with it.
func pickVictim(ctx context.Context, c *benchCluster, ctl *benchAgent, order []string) (*benchAgent, error) {
	resp, err := operatorv1.NewOperatorServiceClient(ctl.conn).ListMembers(ctx, &operatorv1.ListMembersRequest{})
	if err != nil {
		return nil, err
	}
	candidates := slices.Clone(c.agents)
	if len(order) > 0 {
		// The bench starts the i'th agent in upgrade domain ud<i+1>.
		rank := map[string]int{}
		for i, ud := range order {
			rank[ud] = i
		}
		sort.SliceStable(candidates, func(i, j int) bool {
			return rank[udOf(c, candidates[i])] < rank[udOf(c, candidates[j])]
		})
	}
	for i := len(candidates) - 1; i >= 0; i-- {
		a := candidates[i]
		if a != ctl && a.node != resp.GetLeader() {
			return a, nil
		}
	}
	return nil, errors.New("no agent to kill but the leader's and the bench's own")
}

// udOf is the upgrade domain the bench started a in.
func udOf(c *benchCluster, a *benchAgent) string {
	return "ud" + strconv.Itoa(slices.Index(c.agents, a)+1)
}

// finalVersions is what every node reports of the plugin at the end:
// its version, and whether it is unhealthy or its node is down.
func finalVersions(ctx context.Context, op operatorv1.OperatorServiceClient, name string) (map[string]string, error) {
	st, err := op.GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: name})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, in := range st.GetPlugin().GetCluster() {
		v := in.GetVersion()
		switch st := in.GetNodeStatus(); {
		case st != "" && st != "alive":
			v += " (node " + st + ": an old report)"
		case !in.GetHealthy():
			v += " (unhealthy)"
		}
		out[in.GetNode()] = v
	}
	return out, nil
}

// describeRollout says where a rollout stands, for an error.
func describeRollout(r *intent.Rollout) string {
	var ds []string
	for _, d := range r.Domains {
		ds = append(ds, d.Name+" "+d.Phase)
	}
	s := r.State + "; " + strings.Join(ds, ", ")
	if r.Failure != "" {
		s += "; failure: " + r.Failure
	}
	return s
}

// printRolloutRuns prints each run, then, over several, the median and
// range of each figure.
func printRolloutRuns(env *cliEnv, runs []rolloutRun) error {
	w := env.stdout
	r0 := runs[0]
	target := r0.To
	if r0.Bad != "" {
		target += " (bad: " + r0.Bad + ")"
	}
	fmt.Fprintf(w, "%d agents on loopback, one upgrade domain each; every-node %s %s -> %s; upgrade min_healthy_time %gs, healthy_deadline %gs; %d calls/s through every node that runs\n",
		r0.Nodes, r0.Plugin, r0.From, target, r0.MinHealthyTime, r0.HealthyDeadline, r0.Rate)
	for i, r := range runs {
		fmt.Fprintf(w, "\nrun %d: rollout %s %s in %s (record %s after the pin)", i+1, r.Rollout, r.Outcome, secs(r.Total), secs(r.Started))
		if r.Detected != 0 {
			fmt.Fprintf(w, "; failure seen %s after the pin, rolled back %s after it", secs(r.Detected), secs(r.RolledBack))
		}
		fmt.Fprintln(w)
		if r.Failure != "" {
			fmt.Fprintf(w, "failure: %s\n", r.Failure)
		}
		rows := make([][]string, 0, len(r.Domains))
		for _, d := range r.Domains {
			rows = append(rows, []string{d.Name, orDash(strings.Join(d.Nodes, ",")), d.Phase, secs(d.Start),
				secs(d.Swapped), secs(d.Forward), secs(d.SwappedBack), secs(d.Back)})
		}
		// SWAP: until its nodes report the version healthy; FORWARD and
		// BACK: until the gate passed.
		if err := table(w, []string{"DOMAIN", "NODES", "PHASE", "STARTED", "SWAP", "FORWARD", "SWAP BACK", "BACK"}, rows); err != nil {
			return err
		}
		if r.Killed != "" {
			fmt.Fprintf(w, "killed %s at %s; pending at the end: %s", r.Killed, secs(r.KilledAt), orDash(strings.Join(r.Pending, ",")))
			if r.Restarted != 0 {
				target := r.To
				if r.Outcome == intent.RolloutRolledBack {
					target = r.From
				}
				fmt.Fprintf(w, "; restarted at %s, rejoined %s, serving %s %s (%s after rejoining), converged in the record %s",
					secs(r.Restarted), secs(r.Rejoined), target, secs(r.Serving), secs(r.Serving-r.Rejoined), secs(r.Converged))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "calls %d: failed %d, held %d (max %dms)", r.Calls, r.Failed, r.Held, r.MaxHeldMs)
		if r.Killed != "" {
			fmt.Fprintf(w, ", lost with the killed agent %d", r.LostWithKilled)
		}
		fmt.Fprintf(w, "; answered by %s; after the end by %s\n", versionCounts(r.Versions), versionCounts(r.AfterEnd))
		for _, g := range r.Failures {
			fmt.Fprintf(w, "%d failed %s %s, e.g. %s\n", g.Calls, g.Code, orDash(g.Reason), g.Example)
		}
		var final []string
		for n, v := range r.Final {
			final = append(final, n+" "+v)
		}
		slices.Sort(final)
		fmt.Fprintf(w, "final: %s\n", strings.Join(final, ", "))
	}
	if len(runs) < 2 {
		return nil
	}
	fmt.Fprintf(w, "\nover %d runs, median (least to greatest):\n", len(runs))
	figure := func(label string, get func(rolloutRun) float64, unit string) {
		var vs []float64
		for _, r := range runs {
			if v := get(r); v != 0 || unit == "" {
				vs = append(vs, v)
			}
		}
		if len(vs) == 0 {
			return
		}
		med, lo, hi := medianRange(vs)
		fmt.Fprintf(w, "  %-32s %.2f%s (%.2f to %.2f)\n", label, med, unit, lo, hi)
	}
	figure("total", func(r rolloutRun) float64 { return r.Total }, "s")
	for i := range r0.Domains {
		figure("domain "+r0.Domains[i].Name+" swap", func(r rolloutRun) float64 {
			if i < len(r.Domains) {
				return r.Domains[i].Swapped
			}
			return 0
		}, "s")
		figure("domain "+r0.Domains[i].Name+" forward", func(r rolloutRun) float64 {
			if i < len(r.Domains) {
				return r.Domains[i].Forward
			}
			return 0
		}, "s")
	}
	figure("failure seen", func(r rolloutRun) float64 { return r.Detected }, "s")
	figure("rolled back", func(r rolloutRun) float64 { return r.RolledBack }, "s")
	figure("serving after rejoining", func(r rolloutRun) float64 {
		if r.Serving == 0 {
			return 0
		}
		return r.Serving - r.Rejoined
	}, "s")
	figure("failed calls", func(r rolloutRun) float64 { return float64(r.Failed) }, "")
	figure("held calls", func(r rolloutRun) float64 { return float64(r.Held) }, "")
	return nil
}
