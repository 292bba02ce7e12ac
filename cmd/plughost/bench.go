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
	"github.com/plughost/plughost/host/launch"
	"github.com/plughost/plughost/host/loadgen"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

func runBench(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usagef("bench: use call or upgrade")
	}
	switch args[0] {
	case "call":
		return benchCall(ctx, env, args[1:])
	case "upgrade":
		return benchUpgrade(ctx, env, args[1:])
	case "store":
		return benchStore(ctx, env, args[1:])
	}
	return usagef("bench %s: use call or upgrade", args[0])
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

// benchCall measures echo calls routed through an agent against the same
// calls made directly to an echo process over go-plugin's own transport.
func benchCall(ctx context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("bench call", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	clientsFlag := fs.String("clients", "1,64", "concurrent callers, comma-separated levels")
	duration := fs.Duration("duration", 5*time.Second, "measured time per level and path")
	warmup := fs.Duration("warmup", time.Second, "unmeasured time before each run")
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
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()

	path, digest, version, err := echoExecutable(ctx, operatorv1.NewOperatorServiceClient(conn), *exe)
	if err != nil {
		return err
	}
	inst, stop, err := launch.StartStandalone(ctx, launch.Spec{Executable: path, SHA256: digest, Dir: filepath.Dir(path)})
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
		d, err := loadgen.Run(ctx, lc, func(ctx context.Context, _ int) error { _, err := direct.Echo(ctx, req); return err })
		if err != nil {
			return err
		}
		r, err := loadgen.Run(ctx, lc, func(ctx context.Context, _ int) error { _, err := routed.Echo(ctx, req); return err })
		if err != nil {
			return err
		}
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
	if cf.format == "json" {
		return printJSON(env.stdout, map[string]any{"plugin": "echo", "version": version, "message_bytes": *size, "results": results})
	}
	fmt.Fprintf(env.stdout, "echo %s, %d-byte messages, %s per run\n", version, *size, *duration)
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

func us(d time.Duration) string { return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond)) }

// echoExecutable finds the echo binary the agent runs, in its data dir.
func echoExecutable(ctx context.Context, c operatorv1.OperatorServiceClient, override string) (path, digest, version string, err error) {
	if override != "" {
		digest, err = bundle.Digest(override)
		path, _ = filepath.Abs(override)
		return path, digest, "(given)", err
	}
	info, err := c.GetAgentInfo(ctx, &operatorv1.GetAgentInfoRequest{})
	if err != nil {
		return "", "", "", err
	}
	st, err := c.GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: "echo"})
	if err != nil {
		return "", "", "", fmt.Errorf("bench call needs the echo plugin running on the agent: %w", err)
	}
	version = st.GetPlugin().GetRunningVersion()
	if version == "" {
		return "", "", "", fmt.Errorf("bench call: echo is not running on the agent (state %s)", state(st.GetPlugin().GetState()))
	}
	dir := filepath.Join(info.GetDataDir(), "plugins", "echo", version)
	data, err := os.ReadFile(filepath.Join(dir, bundle.ManifestFile))
	if err != nil {
		return "", "", "", fmt.Errorf("bench call: the agent's data dir is not readable here (run on the agent's machine or pass -executable): %w", err)
	}
	m, err := bundle.ParseManifest(data)
	if err != nil {
		return "", "", "", err
	}
	return filepath.Join(dir, m.Executable), m.SHA256, version, nil
}
