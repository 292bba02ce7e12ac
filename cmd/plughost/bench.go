package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/governance"
	"github.com/plughost/plughost/host/launch"
	"github.com/plughost/plughost/host/loadgen"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

func runBench(ctx context.Context, env *cliEnv, args []string) error {
	sub, rest, err := subcommand("bench", args)
	if err != nil {
		return err
	}
	switch sub {
	case "call":
		return benchCall(ctx, env, rest)
	case "upgrade":
		return benchUpgrade(ctx, env, rest)
	case "failover":
		return benchFailover(ctx, env, rest)
	case "rollout":
		return benchRollout(ctx, env, rest)
	}
	return benchStore(ctx, env, rest)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// callComparison is one concurrency level of bench call.
type callComparison struct {
	Clients         int            `json:"clients"`
	Direct          loadgen.Result `json:"direct"`
	Routed          loadgen.Result `json:"routed"`
	P50Ratio        float64        `json:"p50_ratio"`
	P99Ratio        float64        `json:"p99_ratio"`
	ThroughputRatio float64        `json:"throughput_ratio"`
}

// benchCgroupParent holds the cgroup of bench call's direct echo, apart
// from the agent's own.
const benchCgroupParent = "plughost-bench"

// benchCall measures echo calls routed through an agent against the same
// calls made directly to an echo process over go-plugin's own transport.
// The direct echo runs under the resource limits the agent gives its echo,
// and the two paths take turns within each level, so that the comparison
// measures the routing alone.
func benchCall(ctx context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("bench call", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	clientsFlag := fs.String("clients", "1,64", "concurrent callers, comma-separated levels")
	duration := fs.Duration("duration", 5*time.Second, "measured time per level and path")
	rounds := fs.Int("rounds", 10, "turns each path takes, alternating with the other, within -duration")
	warmup := fs.Duration("warmup", time.Second, "unmeasured time per level and path before measuring")
	size := fs.Int("size", 16, "bytes in each echo message")
	exe := fs.String("executable", "", "echo plugin executable for the direct path (default: the version the agent runs, from its data dir)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	levels, err := parseInts(*clientsFlag)
	if err != nil {
		return usagef("bench call: -clients: %v", err)
	}
	if *rounds < 1 || *duration/time.Duration(*rounds) < 10*time.Millisecond {
		return usagef("bench call: -rounds must be at least 1 and leave each turn 10ms of -duration")
	}
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()

	target, err := echoTarget(ctx, operatorv1.NewOperatorServiceClient(conn), *exe)
	if err != nil {
		return err
	}
	group, err := governance.Standalone(benchCgroupParent, target.limits)
	if err != nil {
		return fmt.Errorf("bench call: limits for the direct echo: %w", err)
	}
	defer func() { _ = group.Delete() }()
	inst, stop, err := launch.StartStandalone(ctx, launch.Spec{Executable: target.path, SHA256: target.digest, Dir: filepath.Dir(target.path), Place: group.Start})
	if err != nil {
		return fmt.Errorf("bench call: starting echo for the direct path: %w", err)
	}
	defer stop()

	// The routed calls get a connection of their own, as an application's
	// client of a plugin service has: the agent relays such a connection
	// frame by frame, while one that starts with the operator API (as conn
	// did) is served by the agent's gRPC server, which proxies plugin calls
	// at a higher cost.
	echoConn, err := cf.dialLoad()
	if err != nil {
		return err
	}
	defer echoConn.Close()
	req := &echov1.EchoRequest{Message: strings.Repeat("x", *size)}
	direct := echov1.NewEchoServiceClient(inst.Conn)
	routed := echov1.NewEchoServiceClient(echoConn)
	var results []callComparison
	for _, n := range levels {
		lc := loadgen.Config{Clients: n, Duration: *duration, Warmup: *warmup}
		res, err := loadgen.Interleave(ctx, lc, *rounds,
			func(ctx context.Context, _ int) error { _, err := direct.Echo(ctx, req); return err },
			func(ctx context.Context, _ int) error { _, err := routed.Echo(ctx, req); return err })
		if err != nil {
			return err
		}
		d, r := res[0], res[1]
		for path, res := range map[string]loadgen.Result{"direct": d, "routed": r} {
			if res.Errors > 0 {
				return fmt.Errorf("bench call: %d of the %s calls at %d clients failed, first: %s", res.Errors, path, n, res.FirstError)
			}
		}
		results = append(results, callComparison{
			Clients: n, Direct: d, Routed: r,
			P50Ratio:        float64(r.P50) / float64(d.P50),
			P99Ratio:        float64(r.P99) / float64(d.P99),
			ThroughputRatio: r.OpsPerSec / d.OpsPerSec,
		})
	}
	limits := directLimits(target, group.Enforcement())
	if cf.format == "json" {
		return printJSON(env.stdout, map[string]any{"plugin": "echo", "version": target.version, "message_bytes": *size,
			"rounds": *rounds, "direct_limits": limits, "results": results})
	}
	fmt.Fprintf(env.stdout, "echo %s, %d-byte messages, %s per run in %d turns\n", target.version, *size, *duration, *rounds)
	fmt.Fprintf(env.stdout, "direct echo limits: %s\n", limits)
	var rows [][]string
	for _, c := range results {
		for _, x := range []struct {
			path string
			r    loadgen.Result
		}{{"direct", c.Direct}, {"routed", c.Routed}} {
			rows = append(rows, []string{strconv.Itoa(c.Clients), x.path, fmt.Sprintf("%.0f", x.r.OpsPerSec),
				us(x.r.P50), us(x.r.P99), strconv.Itoa(x.r.Errors)})
		}
		rows = append(rows, []string{"", "routed/direct", fmt.Sprintf("%.2fx", c.ThroughputRatio), fmt.Sprintf("%.2fx", c.P50Ratio), fmt.Sprintf("%.2fx", c.P99Ratio), ""})
	}
	return table(env.stdout, []string{"CLIENTS", "PATH", "OPS/S", "P50", "P99", "ERRORS"}, rows)
}

// directLimits says in words under which limits the direct echo ran, next
// to those of the agent's echo.
func directLimits(t benchTarget, got []governance.LimitStatus) string {
	var applied, missed []string
	for _, u := range t.unknown {
		missed = append(missed, u+" (the agent reports no value for it)")
	}
	for _, st := range got {
		switch {
		case st.Enforced:
			applied = append(applied, st.Resource+" "+st.Limit)
		case st.Value > 0:
			missed = append(missed, fmt.Sprintf("%s %s (%s)", st.Resource, st.Limit, st.Reason))
		}
	}
	if len(applied)+len(missed) == 0 {
		return "none, as the agent's echo has none"
	}
	var out []string
	if len(applied) > 0 {
		out = append(out, "the agent's echo's: "+strings.Join(applied, ", "))
	}
	if len(missed) > 0 {
		out = append(out, "the agent's echo's NOT applied: "+strings.Join(missed, ", ")+", so the paths differ in more than routing")
	}
	return strings.Join(out, "; ")
}

func us(d time.Duration) string { return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond)) }

// benchTarget is the echo the direct path runs: its executable, and the
// limits the agent enforces on its own echo.
type benchTarget struct {
	path, digest, version string
	limits                governance.Limits
	// unknown names limits the agent enforces but reports no value for
	// (agents built before LimitStatus.value existed).
	unknown []string
}

// echoTarget finds the echo binary the agent runs, in its data dir, and
// the limits it runs it under.
func echoTarget(ctx context.Context, c operatorv1.OperatorServiceClient, override string) (benchTarget, error) {
	st, err := c.GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: "echo"})
	if err != nil {
		return benchTarget{}, fmt.Errorf("bench call needs the echo plugin running on the agent: %w", err)
	}
	t := benchTarget{version: st.GetPlugin().GetRunningVersion()}
	if t.version == "" {
		return t, fmt.Errorf("bench call: echo is not running on the agent (state %s)", state(st.GetPlugin().GetState()))
	}
	for _, in := range st.GetInstances() {
		if in.GetVersion() != t.version || in.GetState() != operatorv1.InstanceState_INSTANCE_STATE_RUNNING {
			continue
		}
		for _, l := range in.GetLimits() {
			if l.GetEnforced() && l.GetValue() == 0 {
				t.unknown = append(t.unknown, l.GetResource()+" "+l.GetLimit())
			}
			if l.GetEnforced() {
				if err := t.limits.Set(l.GetResource(), l.GetValue()); err != nil {
					return t, fmt.Errorf("bench call: the agent's echo limits: %w", err)
				}
			}
		}
		break
	}
	if override != "" {
		t.digest, err = bundle.Digest(override)
		t.path, _ = filepath.Abs(override)
		t.version = "(given)"
		return t, err
	}
	info, err := c.GetAgentInfo(ctx, &operatorv1.GetAgentInfoRequest{})
	if err != nil {
		return t, err
	}
	dir := filepath.Join(info.GetDataDir(), "plugins", "echo", t.version)
	data, err := os.ReadFile(filepath.Join(dir, bundle.ManifestFile))
	if err != nil {
		return t, fmt.Errorf("bench call: the agent's data dir is not readable here (run on the agent's machine or pass -executable): %w", err)
	}
	m, err := bundle.ParseManifest(data)
	if err != nil {
		return t, err
	}
	t.path, t.digest = filepath.Join(dir, m.Executable), m.SHA256
	return t, nil
}
