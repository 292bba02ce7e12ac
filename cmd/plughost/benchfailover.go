package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// failoverRun is one run of `plughost bench failover`, as -format json
// prints it.
type failoverRun struct {
	Standby int    `json:"standby"`
	Nodes   int    `json:"nodes"`
	Plugin  string `json:"plugin"`
	Method  string `json:"method"`
	Killed  string `json:"killed_node"`
	// NewActive is the node whose instance was active once the calls
	// succeeded again; Actives counts the active healthy instances then
	// (exactly one is right).
	NewActive string `json:"new_active"`
	Actives   int    `json:"actives_after"`
	// RecoverySeconds runs from the kill to the end of the first call
	// started after it that succeeded.
	RecoverySeconds float64 `json:"kill_to_first_success_seconds"`
	Calls           int     `json:"calls"`
	Failed          int     `json:"failed"`
	FailedBefore    int     `json:"failed_before_kill"`
	Held            int     `json:"held"`
	MaxHeldMs       int64   `json:"max_held_ms"`
	FirstError      string  `json:"first_error,omitempty"`
	// Failures groups the failed calls by gRPC code and ErrorInfo reason,
	// most frequent first, each with one of its messages.
	Failures []failureGroup `json:"failures,omitempty"`
}

// failureGroup is the failed calls of one gRPC code and ErrorInfo reason.
type failureGroup struct {
	Code    string `json:"code"`
	Reason  string `json:"reason,omitempty"`
	Calls   int    `json:"calls"`
	Example string `json:"example"`
}

// groupFailures groups failed calls by code and reason.
func groupFailures(calls []loadCall) []failureGroup {
	byKey := map[[2]string]*failureGroup{}
	var groups []*failureGroup
	for _, fc := range calls {
		if fc.err == nil {
			continue
		}
		st := status.Convert(fc.err)
		reason := ""
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				reason = info.GetReason()
				break
			}
		}
		k := [2]string{st.Code().String(), reason}
		g := byKey[k]
		if g == nil {
			g = &failureGroup{Code: k[0], Reason: reason, Example: st.Message()}
			byKey[k] = g
			groups = append(groups, g)
		}
		g.Calls++
	}
	sort.SliceStable(groups, func(i, j int) bool { return groups[i].Calls > groups[j].Calls })
	out := make([]failureGroup, len(groups))
	for i, g := range groups {
		out[i] = *g
	}
	return out
}

// benchFailover starts a cluster of its own on loopback, runs a plugin as
// a singleton on it, drives steady calls through every node but the one
// running the active instance, kills that node with SIGKILL, and reports
// how long the calls failed or waited until an instance on another node
// served them: once without a standby and once with a warm one.
func benchFailover(ctx context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("bench failover", flag.ContinueOnError)
	exe := fs.String("exe", filepath.Join(".dev", "exe", "counter"), "plugin executable to run as the singleton (make run builds .dev/exe/counter)")
	nodes := fs.Int("nodes", 5, "agents to start on loopback")
	standbys := fs.String("standby", "0,1", "runs to make, by the singleton's standby count: 0, 1 or both")
	method := fs.String("method", "", "unary method to call, SERVICE/METHOD (default the plugin's first unary method)")
	data := fs.String("d", "{}", "request as JSON")
	rate := fs.Int("rate", 100, "calls per second, spread over the nodes that do not run the active instance")
	before := fs.Duration("before", 2*time.Second, "steady load before the kill")
	after := fs.Duration("after", 2*time.Second, "load after the first successful call on the new active instance")
	timeout := fs.Duration("timeout", 30*time.Second, "deadline of each call")
	format := fs.String("format", "text", "output: text or json")
	keep := fs.Bool("keep", false, "keep the agents' data directories and logs after the run")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *nodes < 3 {
		return usagef("bench failover: -nodes must be at least 3 (a quorum must survive the kill)")
	}
	if *rate <= 0 || *timeout <= 0 || *before < 0 || *after < 0 {
		return usagef("bench failover: -rate and -timeout must be positive, -before and -after not negative")
	}
	if *format != "text" && *format != "json" {
		return usagef("bench failover: -format is text or json")
	}
	var runs []int
	for _, s := range strings.Split(*standbys, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || (n != 0 && n != 1) {
			return usagef("bench failover: -standby takes 0, 1 or 0,1")
		}
		runs = append(runs, n)
	}
	if _, err := os.Stat(*exe); err != nil {
		return fmt.Errorf("bench failover: plugin executable %s: %w (build one, e.g. go build -o %s ./plugins/counter, or give -exe)", *exe, err, *exe)
	}
	var results []failoverRun
	for _, sb := range runs {
		dir, err := os.MkdirTemp("", "plughost-bench-failover-")
		if err != nil {
			return err
		}
		if *format == "text" {
			fmt.Fprintf(env.stderr, "bench failover: standby %d: starting %d agents in %s\n", sb, *nodes, dir)
		}
		res, err := failoverOnce(ctx, env, failoverSetup{dir: dir, exe: *exe, nodes: *nodes, standby: sb, method: *method,
			data: *data, rate: *rate, before: *before, after: *after, timeout: *timeout})
		if err != nil {
			return fmt.Errorf("bench failover: standby %d: %w (the agents' logs are in %s)", sb, err, dir)
		}
		if !*keep {
			_ = os.RemoveAll(dir)
		}
		results = append(results, res)
	}
	if *format == "json" {
		return printJSON(env.stdout, results)
	}
	rows := make([][]string, 0, len(results))
	for _, r := range results {
		rows = append(rows, []string{strconv.Itoa(r.Standby), r.Killed, r.NewActive, strconv.Itoa(r.Actives),
			fmt.Sprintf("%.2fs", r.RecoverySeconds), strconv.Itoa(r.Calls), strconv.Itoa(r.Failed),
			fmt.Sprintf("%d (max %dms)", r.Held, r.MaxHeldMs)})
	}
	fmt.Fprintf(env.stdout, "%d agents on loopback; singleton %s; %d calls/s of %s through the nodes without the active instance\n",
		*nodes, results[0].Plugin, *rate, results[0].Method)
	if err := table(env.stdout, []string{"STANDBY", "KILLED", "NEW ACTIVE", "ACTIVES", "KILL TO FIRST SUCCESS", "CALLS", "FAILED", "HELD"}, rows); err != nil {
		return err
	}
	for _, r := range results {
		if r.FirstError != "" {
			fmt.Fprintf(env.stdout, "standby %d: first failed call: %s\n", r.Standby, r.FirstError)
		}
		for _, g := range r.Failures {
			fmt.Fprintf(env.stdout, "standby %d: %d failed %s %s, e.g. %s\n", r.Standby, g.Calls, g.Code, orDash(g.Reason), g.Example)
		}
	}
	return nil
}

type failoverSetup struct {
	dir, exe, method, data string
	nodes, standby, rate   int
	before, after, timeout time.Duration
}

func failoverOnce(ctx context.Context, env *cliEnv, s failoverSetup) (failoverRun, error) {
	res := failoverRun{Standby: s.standby, Nodes: s.nodes}
	c, err := startBenchCluster(ctx, s.dir, s.nodes, nil)
	if err != nil {
		return res, err
	}
	defer c.stop()
	name, err := addSingleton(ctx, c, s.exe, s.standby)
	if err != nil {
		return res, err
	}
	res.Plugin = name
	active, err := waitSingleton(ctx, c.agents[0].conn, name, s.standby, nil, time.Minute)
	if err != nil {
		return res, err
	}
	res.Killed = active
	var callers []*benchAgent
	for _, a := range c.agents {
		if a.node != active {
			callers = append(callers, a)
		}
	}
	// Reflection on a node without the instance describes it once its
	// route feed has seen the instance serve, a moment after the active's
	// own node does.
	var (
		full string
		req  proto.Message
		out  protoreflect.MessageDescriptor
	)
	for start := time.Now(); ; {
		full, req, out, err = failoverMethod(ctx, callers[0], name, s.method, s.data)
		var ue *usageError
		if err == nil || errors.As(err, &ue) || time.Since(start) > 30*time.Second {
			break
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err != nil {
		return res, err
	}
	res.Method = strings.TrimPrefix(full, "/")

	load := startLoad(ctx, s.rate, s.timeout, func(i int) *benchAgent { return callers[i%len(callers)] },
		func(ctx context.Context, a *benchAgent, opts ...grpc.CallOption) (string, error) {
			return "", a.conn.Invoke(ctx, full, req, dynamicpb.NewMessage(out), opts...)
		})
	defer load.stop()

	select {
	case <-time.After(s.before):
	case <-ctx.Done():
		load.stop()
		return res, ctx.Err()
	}
	killAt := time.Now()
	if err := c.agent(active).kill(); err != nil {
		load.stop()
		return res, err
	}
	// The first call started after the kill that succeeds ends the wait.
	recovered := func() (time.Time, bool) {
		var first time.Time
		for _, fc := range load.ended() {
			if fc.err == nil && fc.start.After(killAt) && (first.IsZero() || fc.end.Before(first)) {
				first = fc.end
			}
		}
		return first, !first.IsZero()
	}
	deadline := time.After(s.timeout + 30*time.Second)
	var firstOK time.Time
wait:
	for {
		select {
		case <-ctx.Done():
			load.stop()
			return res, ctx.Err()
		case <-deadline:
			break wait
		case <-time.After(20 * time.Millisecond):
		}
		if t, ok := recovered(); ok {
			firstOK = t
			break
		}
	}
	if !firstOK.IsZero() {
		select {
		case <-time.After(s.after):
		case <-ctx.Done():
		}
	}
	load.stop()
	if t, ok := recovered(); ok { // a call held longer may have ended first
		firstOK = t
	}
	if firstOK.IsZero() {
		return res, fmt.Errorf("no call succeeded within %v of killing %s, the node of the active instance", s.timeout+30*time.Second, active)
	}
	res.RecoverySeconds = firstOK.Sub(killAt).Seconds()
	calls := load.ended()
	res.Calls = len(calls)
	for _, fc := range calls {
		if fc.err != nil {
			res.Failed++
			if fc.start.Before(killAt) && fc.end.Before(killAt) {
				res.FailedBefore++
			}
			if res.FirstError == "" {
				res.FirstError = fmt.Sprintf("through %s, %.2fs after the kill: %s", fc.node, fc.end.Sub(killAt).Seconds(), status.Convert(fc.err).Message())
			}
		}
		if fc.held > 0 {
			res.Held++
			res.MaxHeldMs = max(res.MaxHeldMs, fc.held.Milliseconds())
		}
	}
	res.Failures = groupFailures(calls)
	// The calls succeed again: say which node serves them, and whether
	// one active instance is all there is.
	res.NewActive, err = waitSingleton(ctx, callers[0].conn, name, 0, map[string]bool{active: true}, 30*time.Second)
	if err != nil {
		return res, err
	}
	res.Actives, err = countActives(ctx, callers[0].conn, name, active)
	return res, err
}

// addSingleton bundles exe as a singleton with standby instances and adds
// it through the cluster's first agent. It returns the plugin's name.
func addSingleton(ctx context.Context, c *benchCluster, exe string, standby int) (string, error) {
	m := map[string]any{"placement": map[string]any{"mode": "singleton", "standby": standby}}
	name, _, err := addBenchBundle(ctx, c, c.agents[0], exe, m)
	return name, err
}

// waitSingleton waits until the plugin has a healthy active instance on a
// node not in skip, and standby healthy standby instances, and returns the
// active's node.
func waitSingleton(ctx context.Context, conn *grpc.ClientConn, name string, standby int, skip map[string]bool, within time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	op := operatorv1.NewOperatorServiceClient(conn)
	var last string
	for {
		st, err := op.GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: name})
		if err == nil {
			active, standbys := "", 0
			var seen []string
			for _, in := range st.GetPlugin().GetCluster() {
				seen = append(seen, fmt.Sprintf("%s %s healthy=%v", in.GetNode(), orDash(in.GetRole()), in.GetHealthy()))
				if !in.GetHealthy() || skip[in.GetNode()] {
					continue
				}
				switch in.GetRole() {
				case "active":
					active = in.GetNode()
				case "standby":
					standbys++
				}
			}
			if active != "" && standbys >= standby {
				return active, nil
			}
			last = "instances: " + orDash(strings.Join(seen, ", "))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no healthy active instance of singleton %s (with %d standby) within %v; last seen %s", name, standby, within, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// countActives counts the plugin's healthy active instances on nodes
// other than dead.
func countActives(ctx context.Context, conn *grpc.ClientConn, name, dead string) (int, error) {
	st, err := operatorv1.NewOperatorServiceClient(conn).GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: name})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, in := range st.GetPlugin().GetCluster() {
		if in.GetNode() != dead && in.GetRole() == "active" && in.GetHealthy() {
			n++
		}
	}
	return n, nil
}

// failoverMethod resolves the method the load calls and its request.
func failoverMethod(ctx context.Context, a *benchAgent, plugin, method, data string) (string, proto.Message, protoreflect.MessageDescriptor, error) {
	var md protoreflect.MethodDescriptor
	var err error
	if method == "" {
		md, err = firstUnaryMethod(ctx, a.conn, a.api, plugin)
	} else {
		svc, name, ok := strings.Cut(strings.TrimPrefix(method, "/"), "/")
		if !ok || svc == "" || name == "" {
			return "", nil, nil, usagef("bench failover: -method SERVICE/METHOD, e.g. counter.v1.CounterService/Increment")
		}
		md, err = resolveMethod(ctx, a.conn, a.api, svc, name)
		if err == nil && (md.IsStreamingClient() || md.IsStreamingServer()) {
			err = usagef("bench failover: %s is streaming; give a unary method", method)
		}
	}
	if err != nil {
		return "", nil, nil, err
	}
	reqs, err := decodeRequests(md.Input(), []byte(data), false)
	if err != nil {
		return "", nil, nil, fmt.Errorf("request: %w", err)
	}
	return "/" + string(md.Parent().FullName()) + "/" + string(md.Name()), reqs[0], md.Output(), nil
}
