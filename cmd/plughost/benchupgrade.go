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
	"sync"
	"time"

	"github.com/jhump/protoreflect/grpcreflect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/plughost/plughost/host/loadgen"
	"github.com/plughost/plughost/host/router"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// upgradeCall is one call of the steady load.
type upgradeCall struct {
	start   time.Time
	latency time.Duration
	held    time.Duration
	err     error
}

// phaseStats summarizes the calls that started in one phase of the run.
type phaseStats struct {
	Calls   int           `json:"calls"`
	Failed  int           `json:"failed"`
	Held    int           `json:"held"`
	HeldMax time.Duration `json:"held_max_ns"`
	HeldAvg time.Duration `json:"held_avg_ns"`
	P50     time.Duration `json:"p50_ns"`
	P99     time.Duration `json:"p99_ns"`
	Max     time.Duration `json:"max_ns"`
}

func summarize(calls []upgradeCall) phaseStats {
	var ps phaseStats
	var lat []time.Duration
	var heldSum time.Duration
	for _, c := range calls {
		ps.Calls++
		if c.err != nil {
			ps.Failed++
			continue
		}
		lat = append(lat, c.latency)
		if c.held > 0 {
			ps.Held++
			heldSum += c.held
			ps.HeldMax = max(ps.HeldMax, c.held)
		}
	}
	slices.Sort(lat)
	ps.P50, ps.P99 = loadgen.Percentile(lat, 50), loadgen.Percentile(lat, 99)
	if len(lat) > 0 {
		ps.Max = lat[len(lat)-1]
	}
	if ps.Held > 0 {
		ps.HeldAvg = heldSum / time.Duration(ps.Held)
	}
	return ps
}

// benchUpgrade drives steady load at a plugin through the agent while it
// pins a version, and reports what the swap cost the callers.
func benchUpgrade(ctx context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("bench upgrade", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	pluginName := fs.String("plugin", "echo", "plugin to upgrade")
	to := fs.String("to", "", "version to pin (required)")
	method := fs.String("method", "", "unary method to call for load, SERVICE/METHOD (default the plugin's first unary method)")
	data := fs.String("d", "{}", "request as JSON")
	rate := fs.Int("rate", 200, "calls per second")
	before := fs.Duration("before", 3*time.Second, "steady load before the pin")
	after := fs.Duration("after", 2*time.Second, "load after the swap ends")
	timeout := fs.Duration("timeout", 30*time.Second, "deadline of each call")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	if *to == "" {
		return usagef("bench upgrade: give -to VERSION")
	}
	if *rate <= 0 {
		return usagef("bench upgrade: -rate must be positive")
	}
	var svc, name string
	if *method != "" {
		var ok bool
		if svc, name, ok = strings.Cut(strings.TrimPrefix(*method, "/"), "/"); !ok || svc == "" || name == "" {
			return usagef("bench upgrade: -method SERVICE/METHOD, e.g. echo.v1.EchoService/Echo")
		}
	}
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	var md protoreflect.MethodDescriptor
	if *method == "" {
		if md, err = firstUnaryMethod(ctx, conn, cf.addr, *pluginName); err != nil {
			return fmt.Errorf("bench upgrade: %w", err)
		}
		svc, name = string(md.Parent().FullName()), string(md.Name())
		fmt.Fprintf(env.stderr, "bench upgrade: calling %s/%s, the first unary method of %s (-method chooses another)\n", svc, name, *pluginName)
	} else {
		if md, err = resolveMethod(ctx, conn, cf.addr, svc, name); err != nil {
			return fmt.Errorf("bench upgrade: %w", err)
		}
		if md.IsStreamingClient() || md.IsStreamingServer() {
			return usagef("bench upgrade: %s is streaming; give a unary method", *method)
		}
	}
	reqs, err := decodeRequests(md.Input(), []byte(*data), false)
	if err != nil {
		return fmt.Errorf("bench upgrade: request: %w", err)
	}
	req := reqs[0]
	full := "/" + svc + "/" + name

	var (
		mu    sync.Mutex
		calls []upgradeCall
		wg    sync.WaitGroup
	)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	sem := make(chan struct{}, 4096)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(*rate))
		defer tick.Stop()
		for {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			select {
			case sem <- struct{}{}:
			default:
				mu.Lock()
				calls = append(calls, upgradeCall{start: time.Now(), err: errors.New("load generator saturated: 4096 calls in flight")})
				mu.Unlock()
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				cctx, cancel := context.WithTimeout(ctx, *timeout)
				defer cancel()
				var trailer metadata.MD
				resp := dynamicpb.NewMessage(md.Output())
				t0 := time.Now()
				err := conn.Invoke(cctx, full, proto.Message(req), resp, grpc.Trailer(&trailer))
				c := upgradeCall{start: t0, latency: time.Since(t0), err: err}
				if v := trailer.Get(router.HeldTrailer); len(v) > 0 {
					ms, _ := strconv.Atoi(v[0])
					c.held = time.Duration(ms) * time.Millisecond
				}
				mu.Lock()
				calls = append(calls, c)
				mu.Unlock()
			}()
		}
	}()

	select {
	case <-time.After(*before):
	case <-ctx.Done():
		return ctx.Err()
	}
	pinAt := time.Now()
	outcome, swapMsg := "done", ""
	var servingAfter time.Duration // pin → the new version takes calls
	stream, err := operatorv1.NewOperatorServiceClient(conn).PinVersion(ctx, &operatorv1.PinVersionRequest{Name: *pluginName, Version: *to})
	if err != nil {
		return err
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			outcome, swapMsg = "fell back", err.Error()
			break
		}
		// The pin follows the rollout it starts (area: surface): the
		// answering node's swap steps come between the rollout's records.
		if m.GetProgress() == nil {
			continue
		}
		swapMsg = m.GetProgress().GetMessage()
		if m.GetProgress().GetPhase() == operatorv1.SwapPhase_SWAP_PHASE_SWITCHING {
			servingAfter = time.Since(pinAt)
		}
	}
	doneAt := time.Now()
	if servingAfter == 0 && outcome == "done" {
		servingAfter = doneAt.Sub(pinAt)
	}
	select {
	case <-time.After(*after):
	case <-ctx.Done():
	}
	stopLoad()
	wg.Wait()

	var steady, during, later []upgradeCall
	for _, c := range calls {
		switch {
		case c.start.Before(pinAt):
			steady = append(steady, c)
		case !c.start.After(doneAt):
			during = append(during, c)
		default:
			later = append(later, c)
		}
	}
	all := summarize(calls)
	res := map[string]any{
		"plugin": *pluginName, "method": full, "to": *to, "outcome": outcome, "message": swapMsg, "rate": *rate,
		"swap_time_ns": servingAfter, "swap_with_drain_ns": doneAt.Sub(pinAt), "calls": all.Calls, "failed": all.Failed,
		"steady": summarize(steady), "during_swap": summarize(during), "after": summarize(later),
	}
	firstErr := ""
	for _, c := range calls {
		if c.err != nil {
			firstErr = c.err.Error()
			break
		}
	}
	res["first_error"] = firstErr
	if cf.format == "json" {
		return printJSON(env.stdout, res)
	}
	s, d := summarize(steady), summarize(during)
	w := env.stdout
	fmt.Fprintf(w, "load: %s with %s\n", full, *data)
	if outcome == "done" {
		fmt.Fprintf(w, "upgrade %s to %s under %d calls/s: done; new version serving %s after the pin, old one drained after %s\n",
			*pluginName, *to, *rate, servingAfter.Round(time.Millisecond), doneAt.Sub(pinAt).Round(time.Millisecond))
	} else {
		fmt.Fprintf(w, "upgrade %s to %s under %d calls/s: fell back; fallback complete %s after the pin\n",
			*pluginName, *to, *rate, doneAt.Sub(pinAt).Round(time.Millisecond))
	}
	if swapMsg != "" {
		fmt.Fprintf(w, "  %s\n", swapMsg)
	}
	fmt.Fprintf(w, "  calls %d, failed %d", all.Calls, all.Failed)
	if firstErr != "" {
		fmt.Fprintf(w, " (first: %s)", firstErr)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  held %d (avg %s, max %s)\n", all.Held, all.HeldAvg.Round(time.Millisecond), all.HeldMax.Round(time.Millisecond))
	ratio := 0.0
	if s.P99 > 0 {
		ratio = float64(d.P99) / float64(s.P99)
	}
	fmt.Fprintf(w, "  p99 steady %s, during the swap %s (%.2fx); p50 steady %s, during %s\n", us(s.P99), us(d.P99), ratio, us(s.P50), us(d.P50))
	if outcome != "done" {
		return errSilent
	}
	return nil
}

// firstUnaryMethod finds the first unary method of a plugin's services, in
// the order the agent lists the services and their protos declare the
// methods, through the agent's reflection.
func firstUnaryMethod(ctx context.Context, conn *grpc.ClientConn, addr, plugin string) (protoreflect.MethodDescriptor, error) {
	st, err := operatorv1.NewOperatorServiceClient(conn).GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: plugin})
	if err != nil {
		return nil, err
	}
	svcs := st.GetPlugin().GetServices()
	rc := grpcreflect.NewClientAuto(ctx, conn)
	defer rc.Reset()
	for _, svc := range svcs {
		sd, err := rc.ResolveService(svc)
		if err != nil {
			return nil, fmt.Errorf("reflection of %s at %s: %w", svc, addr, err)
		}
		for _, m := range sd.GetMethods() {
			if !m.IsClientStreaming() && !m.IsServerStreaming() {
				return m.UnwrapMethod(), nil
			}
		}
	}
	if len(svcs) == 0 {
		return nil, fmt.Errorf("plugin %s lists no services (state %s); give -method SERVICE/METHOD", plugin, state(st.GetPlugin().GetState()))
	}
	return nil, fmt.Errorf("plugin %s has no unary method in %s; give -method SERVICE/METHOD", plugin, strings.Join(svcs, ", "))
}
