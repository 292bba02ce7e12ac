package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/intent"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// runRollout is `plughost rollout list|status|pause|resume|abort`: the
// cluster-wide version changes the leader's rollout controller moves, one
// upgrade domain at a time.
func runRollout(ctx context.Context, env *cliEnv, args []string) error {
	sub, rest, err := subcommand("rollout", args)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("rollout "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var (
		plugin  string
		follow  bool
		restore bool
	)
	switch sub {
	case "list":
		fs.StringVar(&plugin, "plugin", "", "list this plugin's rollouts only")
	case "status":
		fs.BoolVar(&follow, "follow", false, "follow the rollout until it is finished: a live view on a terminal, a line a change otherwise")
	case "abort":
		fs.BoolVar(&restore, "restore-data", false, "restore the plugin's namespace to the snapshot the rollout took, once the old version serves again")
	}
	if err := parse(fs, rest); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	switch {
	case sub == "list" && fs.NArg() != 0:
		return usagef("rollout list takes no arguments (-plugin NAME keeps one plugin's)")
	case sub == "status" && fs.NArg() > 1:
		return usagef("rollout status takes at most one rollout ID or plugin name")
	case sub != "list" && sub != "status" && fs.NArg() != 1:
		return usagef("rollout %s takes one rollout ID or plugin name (see 'plughost rollout list')", sub)
	}
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	rc := &rolloutCmd{env: env, format: cf.format, c: operatorv1.NewOperatorServiceClient(conn)}
	switch sub {
	case "list":
		return rc.list(ctx, plugin)
	case "status":
		return rc.status(ctx, fs.Arg(0), follow)
	default:
		return rc.control(ctx, sub, fs.Arg(0), restore)
	}
}

type rolloutCmd struct {
	env    *cliEnv
	format string
	c      operatorv1.OperatorServiceClient
}

func (rc *rolloutCmd) staleNote(stale string) {
	if stale != "" {
		fmt.Fprintf(rc.env.stderr, "plughost: note: %s\n", stale)
	}
}

func (rc *rolloutCmd) list(ctx context.Context, plugin string) error {
	resp, err := rc.c.ListRollouts(ctx, &operatorv1.ListRolloutsRequest{Name: plugin})
	if err != nil {
		return err
	}
	rc.staleNote(resp.GetStale())
	for _, r := range resp.GetRefused() {
		fmt.Fprintf(rc.env.stderr, "plughost: warning: %s\n", shown(r))
	}
	if rc.format == "json" {
		out := []rolloutJSON{}
		for _, r := range resp.GetRollouts() {
			out = append(out, toRolloutJSON(r))
		}
		return printJSON(rc.env.stdout, out)
	}
	return rolloutTable(rc.env.stdout, resp.GetRollouts())
}

// rolloutTable is `rollout list`'s table, newest first.
func rolloutTable(w io.Writer, rs []*operatorv1.Rollout) error {
	var rows [][]string
	for _, r := range rs {
		done := 0
		for _, d := range r.GetDomains() {
			if d.GetPhase() == intent.DomainDone || d.GetPhase() == intent.DomainRolledBack {
				done++
			}
		}
		rows = append(rows, []string{r.GetId(), r.GetPlugin(), orDash(r.GetFromVersion()), r.GetToVersion(), r.GetTrigger(),
			stateWords(r), fmt.Sprintf("%d/%d", done, len(r.GetDomains())), ts(r.GetCreated()), orDash(r.GetActor()), orDash(note(r))})
	}
	return table(w, []string{"ID", "PLUGIN", "FROM", "TO", "TRIGGER", "STATE", "DOMAINS", "CREATED", "ACTOR", "NOTE"}, rows)
}

// stateWords is a rollout's state as a list shows it.
func stateWords(r *operatorv1.Rollout) string {
	if r.GetState() == intent.RolloutPaused && r.GetPaused() == intent.RolloutRollingBack {
		return "paused (rolling back)"
	}
	return r.GetState()
}

// note is what a list says of a rollout besides its state: why it failed,
// what is pending, what superseded it.
func note(r *operatorv1.Rollout) string {
	switch {
	case r.GetFailure() != "" && r.GetFailedNode() != "":
		return "node " + r.GetFailedNode() + ": " + r.GetFailure()
	case r.GetFailure() != "":
		return r.GetFailure()
	case r.GetSupersededBy() != "":
		return "superseded by " + r.GetSupersededBy()
	case len(r.GetPending()) > 0 && r.GetConverged() == nil:
		return "pending: " + strings.Join(r.GetPending(), ", ")
	case len(r.GetPending()) > 0:
		return "converged " + ts(r.GetConverged())
	}
	return ""
}

// getRollout reads the rollout ref names: a rollout ID (PLUGIN-N), else a
// plugin (its newest rollout), else, with ref empty, the newest of any
// plugin. A ref that reads as an ID but names no rollout is tried as a
// plugin name: plugin "web-2" has rollouts "web-2-1"...
func (rc *rolloutCmd) getRollout(ctx context.Context, ref string) (*operatorv1.GetRolloutResponse, error) {
	if ref == "" {
		resp, err := rc.c.ListRollouts(ctx, &operatorv1.ListRolloutsRequest{Limit: 1})
		if err != nil {
			return nil, err
		}
		if len(resp.GetRollouts()) == 0 {
			return nil, errors.New("no plugin has had a rollout yet: a pin, unpin or rollback of a plugin that runs, or a newer bundle of an unpinned one, starts one")
		}
		return &operatorv1.GetRolloutResponse{Rollout: resp.GetRollouts()[0], Stale: resp.GetStale()}, nil
	}
	id, name := refOf(ref)
	resp, err := rc.c.GetRollout(ctx, &operatorv1.GetRolloutRequest{Id: id, Name: name})
	if id != "" && bundle.ValidName(ref) && operatorv1.RolloutErrorReason(err) == operatorv1.ReasonRolloutNotFound {
		resp, err = rc.c.GetRollout(ctx, &operatorv1.GetRolloutRequest{Name: ref})
	}
	return resp, err
}

// refOf reads a command line's ID|PLUGIN: a rollout ID, or a plugin name.
func refOf(ref string) (id, plugin string) {
	if _, _, ok := intent.ParseRolloutID(ref); ok {
		return ref, ""
	}
	return "", ref
}

func (rc *rolloutCmd) status(ctx context.Context, ref string, follow bool) error {
	resp, err := rc.getRollout(ctx, ref)
	if err != nil {
		return err
	}
	rc.staleNote(resp.GetStale())
	r := resp.GetRollout()
	if !follow {
		if rc.format == "json" {
			return printJSON(rc.env.stdout, toRolloutJSON(r))
		}
		renderRollout(rc.env.stdout, r, time.Now(), false)
		return nil
	}
	stream, err := rc.c.WatchRollout(ctx, &operatorv1.WatchRolloutRequest{Id: r.GetId()})
	if err != nil {
		return err
	}
	recv := func() (*operatorv1.Rollout, error) {
		m, err := stream.Recv()
		return m.GetRollout(), err
	}
	switch {
	case rc.format == "json":
		// One JSON document a change of the record, for a program to read.
		for {
			r, err := recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := printJSON(rc.env.stdout, toRolloutJSON(r)); err != nil {
				return err
			}
		}
	case isTerminal(rc.env.stdout):
		return liveView(ctx, rc.env.stdout, recv)
	}
	_, err = followLines(rc.env.stdout, recv)
	return err
}

// isTerminal reports whether w is a terminal, for the live view.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// liveView redraws the rollout in place, on each change of its record and
// each second (the health gates' time left), until it is finished.
func liveView(ctx context.Context, w io.Writer, recv func() (*operatorv1.Rollout, error)) error {
	type msg struct {
		r   *operatorv1.Rollout
		at  time.Time
		err error
	}
	ch := make(chan msg, 1)
	go func() {
		for {
			r, err := recv()
			ch <- msg{r, time.Now(), err}
			if err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var (
		cur   *operatorv1.Rollout
		recvd time.Time
		lines int
	)
	draw := func() {
		if cur == nil {
			return
		}
		var b strings.Builder
		// The record's time-left fields count from as_of: move its clock on
		// by what passed since it came.
		renderRollout(&b, cur, cur.GetAsOf().AsTime().Add(time.Since(recvd)), true)
		if lines > 0 {
			fmt.Fprintf(w, "\x1b[%dA\x1b[J", lines)
		}
		fmt.Fprint(w, b.String())
		lines = strings.Count(b.String(), "\n")
	}
	for {
		select {
		case m := <-ch:
			if errors.Is(m.err, io.EOF) {
				draw()
				return nil
			}
			if m.err != nil {
				return m.err
			}
			cur, recvd = m.r, m.at
			draw()
		case <-tick.C:
			draw()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// followLines prints a line for each change between successive records of
// a rollout (see rolloutChanges) until the stream ends, and returns the
// last record.
func followLines(w io.Writer, recv func() (*operatorv1.Rollout, error)) (*operatorv1.Rollout, error) {
	var prev *operatorv1.Rollout
	for {
		r, err := recv()
		if errors.Is(err, io.EOF) {
			return prev, nil
		}
		if err != nil {
			return prev, err
		}
		for _, l := range rolloutChanges(prev, r) {
			fmt.Fprintf(w, "[%s] %s\n", r.GetId(), shown(l))
		}
		prev = r
	}
}

// rolloutChanges says in lines what changed from prev (nil: nothing seen
// yet) to r: the rollout's start, each domain's and node's phase, its
// state, failure and outcome.
func rolloutChanges(prev, r *operatorv1.Rollout) []string {
	var out []string
	if prev == nil {
		var uds []string
		for _, d := range r.GetDomains() {
			uds = append(uds, d.GetName())
		}
		out = append(out, fmt.Sprintf("%s %s -> %s over %d upgrade domain(s) (%s), %s by %s",
			r.GetPlugin(), orDash(r.GetFromVersion()), r.GetToVersion(), len(uds), strings.Join(uds, ", "), r.GetTrigger(), orDash(r.GetActor())))
		prev = &operatorv1.Rollout{State: intent.RolloutRunning}
	}
	before := map[string]*operatorv1.RolloutDomain{}
	for _, d := range prev.GetDomains() {
		before[d.GetName()] = d
	}
	for _, d := range r.GetDomains() {
		pd := before[d.GetName()]
		var dline []string
		if d.GetPhase() != pd.GetPhase() && d.GetPhase() != intent.DomainWaiting {
			dline = []string{domainLine(d)}
		}
		nodes := map[string]*operatorv1.RolloutNode{}
		for _, n := range pd.GetNodes() {
			nodes[n.GetName()] = n
		}
		var nlines []string
		for _, n := range d.GetNodes() {
			pn := nodes[n.GetName()]
			if n.GetPhase() == pn.GetPhase() || n.GetPhase() == intent.NodeWaiting {
				continue
			}
			nlines = append(nlines, "  "+nodeLine(d, n, 0))
		}
		// A domain that starts, then its nodes; its nodes, then the domain
		// that is through.
		if d.GetPhase() == intent.DomainDone || d.GetPhase() == intent.DomainRolledBack {
			out = append(append(out, nlines...), dline...)
		} else {
			out = append(append(out, dline...), nlines...)
		}
	}
	if r.GetState() != prev.GetState() || r.GetFailure() != prev.GetFailure() {
		// The failure, said once: not again when the rollout ends on it.
		said := r.GetFailure() != "" && r.GetFailure() == prev.GetFailure() && r.GetFailedNode() == prev.GetFailedNode()
		if l := stateLineWhy(r, !said); l != "" {
			out = append(out, l)
		}
	}
	if r.GetConverged() != nil && prev.GetConverged() == nil {
		out = append(out, fmt.Sprintf("converged: %s serves %s too (%s)", strings.Join(r.GetPending(), ", "), r.GetTargetVersion(), ts(r.GetConverged())))
	}
	if r.GetRestored() != nil && prev.GetRestored() == nil {
		out = append(out, fmt.Sprintf("data restored: namespace %s back to the snapshot taken %s", r.GetSnapshot().GetNamespace(), ts(r.GetSnapshot().GetTaken())))
	}
	return out
}

func domainLine(d *operatorv1.RolloutDomain) string {
	l := fmt.Sprintf("domain %s %s", d.GetName(), strings.ReplaceAll(d.GetPhase(), "_", " "))
	switch d.GetPhase() {
	case intent.DomainUpdating:
		l += fmt.Sprintf(": %s -> %s on %s", orDash(d.GetFromVersion()), d.GetVersion(), nodeNames(d))
	case intent.DomainRollingBack:
		l += fmt.Sprintf(" to %s on %s", d.GetVersion(), nodeNames(d))
	case intent.DomainDone, intent.DomainRolledBack:
		l += " on " + d.GetVersion()
		if d.GetStarted() != nil && d.GetFinished() != nil {
			l += fmt.Sprintf(" in %s", d.GetFinished().AsTime().Sub(d.GetStarted().AsTime()).Round(100*time.Millisecond))
		}
	}
	return l
}

func nodeNames(d *operatorv1.RolloutDomain) string {
	var ns []string
	for _, n := range d.GetNodes() {
		ns = append(ns, n.GetName())
	}
	if len(ns) == 0 {
		return "no node"
	}
	return strings.Join(ns, ", ")
}

// nodeLine says where a node is, with gateLeft, when positive, what
// remains of its min_healthy_time.
func nodeLine(d *operatorv1.RolloutDomain, n *operatorv1.RolloutNode, gateLeft time.Duration) string {
	l := fmt.Sprintf("node %s %s", n.GetName(), n.GetPhase())
	switch n.GetPhase() {
	case intent.NodeHealthy:
		l += " on " + d.GetVersion()
	case intent.NodeUpdating:
		l += " to " + d.GetVersion()
		if n.GetVersion() != "" {
			l += ", serving " + n.GetVersion()
		}
		if gateLeft > 0 {
			l += fmt.Sprintf(", healthy: %s of min_healthy_time left", gateLeft)
		}
	case intent.NodeDown:
		if n.GetDownSince() != nil {
			l += " since " + ts(n.GetDownSince())
		}
		if n.GetReason() == "" {
			l += ": skipped by the health gate, assigned anyway"
		}
	}
	if n.GetReason() != "" {
		l += ": " + n.GetReason()
	}
	if n.GetDraining() != "" {
		l += fmt.Sprintf("; draining %s: %d calls in flight", n.GetDraining(), n.GetInFlight())
	}
	return l
}

// timeLeft is a time-left field, counted at the record's as_of, counted
// at now instead.
func timeLeft(ms int64, now time.Time, asOf *timestamppb.Timestamp) time.Duration {
	left := time.Duration(ms) * time.Millisecond
	if asOf != nil {
		left -= now.Sub(asOf.AsTime())
	}
	return max(0, left).Round(100 * time.Millisecond)
}

// stateLine says what a rollout's state means; "" for running.
func stateLine(r *operatorv1.Rollout) string { return stateLineWhy(r, true) }

// stateLineWhy is stateLine, with the failure or without.
func stateLineWhy(r *operatorv1.Rollout, withWhy bool) string {
	why := ""
	if r.GetFailure() != "" && withWhy {
		why = ": " + r.GetFailure()
		if r.GetFailedNode() != "" {
			why = ": node " + r.GetFailedNode() + ": " + r.GetFailure()
		}
	}
	switch r.GetState() {
	case intent.RolloutRollingBack:
		return "rolling back to " + r.GetFromVersion() + why
	case intent.RolloutPaused:
		if strings.Contains(r.GetFailure(), intent.NoRetry) {
			// A node fell back: resume alone does not go on; the failure
			// says what does.
			return "paused: node " + r.GetFailedNode() + ": " + r.GetFailure()
		}
		return "paused" + why + fmt.Sprintf(" ('plughost rollout resume %s' goes on, 'plughost rollout abort %s' rolls back)", r.GetId(), r.GetId())
	case intent.RolloutCompleted:
		return "completed" + took(r) + pendingWords(r)
	case intent.RolloutRolledBack:
		return "rolled back to " + r.GetFromVersion() + took(r) + why + pendingWords(r)
	case intent.RolloutSuperseded:
		return "superseded by " + r.GetSupersededBy()
	}
	return ""
}

func took(r *operatorv1.Rollout) string {
	if r.GetCreated() == nil || r.GetFinished() == nil {
		return ""
	}
	return " in " + r.GetFinished().AsTime().Sub(r.GetCreated().AsTime()).Round(100*time.Millisecond).String()
}

// pendingWords is ", 1 node pending: n4 (down since …)" for a completed
// rollout with nodes down, "; n4, down then, converged …" once they all
// serve its target (the record lists none pending then).
func pendingWords(r *operatorv1.Rollout) string {
	down := map[string]*timestamppb.Timestamp{}
	var wasDown []string
	for _, d := range r.GetDomains() {
		for _, n := range d.GetNodes() {
			if n.GetDownSince() != nil {
				down[n.GetName()] = n.GetDownSince()
			}
			if n.GetPhase() == intent.NodeDown && !slices.Contains(wasDown, n.GetName()) {
				wasDown = append(wasDown, n.GetName())
			}
		}
	}
	if r.GetConverged() != nil {
		if len(wasDown) == 0 {
			wasDown = r.GetPending()
		}
		return fmt.Sprintf("; %s, down then, converged %s", strings.Join(wasDown, ", "), ts(r.GetConverged()))
	}
	if len(r.GetPending()) == 0 {
		return ""
	}
	var ns []string
	for _, n := range r.GetPending() {
		if t, ok := down[n]; ok {
			n += " (down since " + ts(t) + ")"
		}
		ns = append(ns, n)
	}
	word := "nodes"
	if len(ns) == 1 {
		word = "node"
	}
	return fmt.Sprintf(", %d %s pending: %s", len(ns), word, strings.Join(ns, ", "))
}

// barWidth is the width of a domain's progress bar.
const barWidth = 20

// renderRollout writes a rollout's status: its header, then a line per
// upgrade domain with a progress bar and a line per node. now counts the
// health gates' time left; live draws for a terminal (no timestamps that
// tick, the bar).
func renderRollout(w io.Writer, r *operatorv1.Rollout, now time.Time, live bool) {
	p := r.GetPolicy()
	fmt.Fprintf(w, "Rollout %s: %s %s -> %s, %s by %s\n", r.GetId(), r.GetPlugin(), orDash(r.GetFromVersion()), r.GetToVersion(), r.GetTrigger(), orDash(r.GetActor()))
	state := stateWords(r)
	if l := stateLine(r); l != "" {
		state = l
	}
	fmt.Fprintf(w, "State:    %s\n", shown(state))
	if r.GetReason() != "" {
		fmt.Fprintf(w, "Reason:   %s\n", shown(r.GetReason()))
	}
	if !live {
		fmt.Fprintf(w, "Policy:   %s, max_parallel %d, min_healthy_time %s, healthy_deadline %s, progress_deadline %s, on failure %s\n",
			p.GetMode(), p.GetMaxParallel(), ms(p.GetMinHealthyTimeMs()), ms(p.GetHealthyDeadlineMs()), ms(p.GetProgressDeadlineMs()), p.GetFailureAction())
		fmt.Fprintf(w, "Created:  %s\n", ts(r.GetCreated()))
		if r.GetFinished() != nil {
			fmt.Fprintf(w, "Finished: %s\n", ts(r.GetFinished()))
		}
	}
	if s := r.GetSnapshot(); s != nil {
		if s.GetSkipped() != "" {
			fmt.Fprintf(w, "Snapshot: none: %s\n", shown(s.GetSkipped()))
		} else {
			fmt.Fprintf(w, "Snapshot: namespace %s, %d keys, %d bytes, sha256 %.12s, taken %s\n", s.GetNamespace(), s.GetKeys(), s.GetBytes(), s.GetSha256(), ts(s.GetTaken()))
		}
	}
	if r.GetRestoreData() {
		restored := "asked; not yet"
		if r.GetRestored() != nil {
			restored = "restored " + ts(r.GetRestored())
		}
		fmt.Fprintf(w, "Restore:  %s\n", restored)
	}
	if c := r.GetControl(); c != nil {
		applied := "not yet applied by the rollout controller"
		if c.GetApplied() {
			applied = "applied"
		}
		fmt.Fprintf(w, "Request:  %s by %s at %s, %s\n", c.GetAction(), orDash(c.GetActor()), ts(c.GetAt()), applied)
	}
	for _, d := range r.GetDomains() {
		total, through := len(d.GetNodes()), 0
		for _, n := range d.GetNodes() {
			if n.GetPhase() == intent.NodeHealthy || n.GetPhase() == intent.NodeDown {
				through++
			}
		}
		if d.GetPhase() == intent.DomainDone || d.GetPhase() == intent.DomainRolledBack {
			through = total
		}
		filled := barWidth
		if total > 0 {
			filled = barWidth * through / total
		}
		line := fmt.Sprintf("  %-10s [%s%s] %d/%d  %-12s %s", shown(d.GetName()), strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled),
			through, total, d.GetPhase(), d.GetVersion())
		if left := timeLeft(d.GetDeadlineLeftMs(), now, r.GetAsOf()); left > 0 {
			line += fmt.Sprintf("  (healthy_deadline: %s left)", left)
		}
		fmt.Fprintln(w, line)
		for _, n := range d.GetNodes() {
			fmt.Fprintf(w, "      %s\n", shown(nodeLine(d, n, timeLeft(n.GetGateLeftMs(), now, r.GetAsOf()))))
		}
	}
}

func ms(v int64) string { return (time.Duration(v) * time.Millisecond).String() }

// control is `rollout pause|resume|abort ID|PLUGIN`.
func (rc *rolloutCmd) control(ctx context.Context, action, ref string, restore bool) error {
	id, name := refOf(ref)
	if id != "" {
		name, _, _ = intent.ParseRolloutID(id)
	}
	do := func(name, id string) (*operatorv1.Rollout, *operatorv1.RolloutControl, error) {
		switch action {
		case "pause":
			resp, err := rc.c.PauseRollout(ctx, &operatorv1.PauseRolloutRequest{Name: name, Id: id})
			return resp.GetRollout(), resp.GetControl(), err
		case "resume":
			resp, err := rc.c.ResumeRollout(ctx, &operatorv1.ResumeRolloutRequest{Name: name, Id: id})
			return resp.GetRollout(), resp.GetControl(), err
		}
		resp, err := rc.c.AbortRollout(ctx, &operatorv1.AbortRolloutRequest{Name: name, Id: id, RestoreData: restore})
		return resp.GetRollout(), resp.GetControl(), err
	}
	r, c, err := do(name, id)
	if id != "" && bundle.ValidName(ref) && (operatorv1.RolloutErrorReason(err) == operatorv1.ReasonRolloutNotFound || status.Code(err) == codes.PermissionDenied) {
		// Not a rollout ID after all: a plugin whose name ends in -N.
		r, c, err = do(ref, "")
	}
	if err != nil {
		return err
	}
	if rc.format == "json" {
		return printJSON(rc.env.stdout, struct {
			Rollout rolloutJSON `json:"rollout"`
			Action  string      `json:"action"`
			Actor   string      `json:"actor"`
			At      string      `json:"at"`
		}{toRolloutJSON(r), c.GetAction(), c.GetActor(), ts(c.GetAt())})
	}
	what := map[string]string{
		"pause":  "to pause: its nodes keep what they serve",
		"resume": "to resume, " + strings.ReplaceAll(r.GetPaused(), "_", " "),
		"abort":  "to roll back to " + r.GetFromVersion() + " now, every domain it moved, newest first",
	}[action]
	if restore {
		what += ", then restore namespace " + r.GetSnapshot().GetNamespace() + " to its snapshot"
	}
	fmt.Fprintf(rc.env.stdout, "Asked rollout %s (%s) %s; the rollout controller applies it.\nFollow it with 'plughost rollout status -follow %s'.\n", r.GetId(), stateWords(r), what, r.GetId())
	return nil
}

// rolloutJSON is a rollout in -format json: every field of its record.
type rolloutJSON struct {
	ID           string              `json:"id"`
	Plugin       string              `json:"plugin"`
	Seq          int64               `json:"seq"`
	From         string              `json:"from"`
	To           string              `json:"to"`
	Target       string              `json:"target"`
	Trigger      string              `json:"trigger"`
	Actor        string              `json:"actor"`
	Reason       string              `json:"reason,omitempty"`
	Policy       rolloutPolicyJSON   `json:"policy"`
	State        string              `json:"state"`
	Paused       string              `json:"paused,omitempty"`
	Domains      []rolloutDomainJSON `json:"domains"`
	Created      *time.Time          `json:"created,omitempty"`
	Updated      *time.Time          `json:"updated,omitempty"`
	Finished     *time.Time          `json:"finished,omitempty"`
	Failure      string              `json:"failure,omitempty"`
	FailedNode   string              `json:"failed_node,omitempty"`
	Pending      []string            `json:"pending"`
	Converged    *time.Time          `json:"converged,omitempty"`
	SupersededBy string              `json:"superseded_by,omitempty"`
	Snapshot     *rolloutSnapJSON    `json:"snapshot,omitempty"`
	RestoreData  bool                `json:"restore_data"`
	Restored     *time.Time          `json:"restored,omitempty"`
	Revision     int64               `json:"revision"`
	AsOf         *time.Time          `json:"as_of,omitempty"`
	Control      *rolloutCtlJSON     `json:"control,omitempty"`
}

type rolloutPolicyJSON struct {
	Mode               string `json:"mode"`
	Strategy           string `json:"strategy"`
	MaxParallel        int32  `json:"max_parallel"`
	MinHealthyTimeMs   int64  `json:"min_healthy_time_ms"`
	HealthyDeadlineMs  int64  `json:"healthy_deadline_ms"`
	ProgressDeadlineMs int64  `json:"progress_deadline_ms"`
	FailureAction      string `json:"failure_action"`
}

type rolloutDomainJSON struct {
	Name           string            `json:"name"`
	From           string            `json:"from"`
	Version        string            `json:"version"`
	Phase          string            `json:"phase"`
	Started        *time.Time        `json:"started,omitempty"`
	Finished       *time.Time        `json:"finished,omitempty"`
	DeadlineLeftMs int64             `json:"deadline_left_ms"`
	Nodes          []rolloutNodeJSON `json:"nodes"`
}

type rolloutNodeJSON struct {
	Name         string     `json:"name"`
	Phase        string     `json:"phase"`
	Version      string     `json:"version,omitempty"`
	HealthySince *time.Time `json:"healthy_since,omitempty"`
	DownSince    *time.Time `json:"down_since,omitempty"`
	Since        *time.Time `json:"since,omitempty"`
	Reason       string     `json:"reason,omitempty"`
	Restarts     int32      `json:"restarts"`
	GateLeftMs   int64      `json:"gate_left_ms"`
	Draining     string     `json:"draining,omitempty"`
	InFlight     int64      `json:"in_flight,omitempty"`
}

type rolloutSnapJSON struct {
	Namespace string     `json:"namespace"`
	Keys      int64      `json:"keys"`
	Bytes     int64      `json:"bytes"`
	SHA256    string     `json:"sha256,omitempty"`
	Revision  int64      `json:"revision,omitempty"`
	Taken     *time.Time `json:"taken,omitempty"`
	Skipped   string     `json:"skipped,omitempty"`
}

type rolloutCtlJSON struct {
	Action      string     `json:"action"`
	RestoreData bool       `json:"restore_data"`
	Actor       string     `json:"actor"`
	At          *time.Time `json:"at,omitempty"`
	Applied     bool       `json:"applied"`
}

// timeOf is a timestamp for JSON: nil when unset.
func timeOf(t *timestamppb.Timestamp) *time.Time {
	if t == nil {
		return nil
	}
	v := t.AsTime()
	return &v
}

func toRolloutJSON(r *operatorv1.Rollout) rolloutJSON {
	p := r.GetPolicy()
	out := rolloutJSON{
		ID: r.GetId(), Plugin: r.GetPlugin(), Seq: r.GetSeq(), From: r.GetFromVersion(), To: r.GetToVersion(), Target: r.GetTargetVersion(),
		Trigger: r.GetTrigger(), Actor: r.GetActor(), Reason: r.GetReason(),
		Policy: rolloutPolicyJSON{p.GetMode(), p.GetStrategy(), p.GetMaxParallel(), p.GetMinHealthyTimeMs(), p.GetHealthyDeadlineMs(),
			p.GetProgressDeadlineMs(), p.GetFailureAction()},
		State: r.GetState(), Paused: r.GetPaused(), Domains: []rolloutDomainJSON{},
		Created: timeOf(r.GetCreated()), Updated: timeOf(r.GetUpdated()), Finished: timeOf(r.GetFinished()),
		Failure: r.GetFailure(), FailedNode: r.GetFailedNode(), Pending: append([]string{}, r.GetPending()...),
		Converged: timeOf(r.GetConverged()), SupersededBy: r.GetSupersededBy(), RestoreData: r.GetRestoreData(),
		Restored: timeOf(r.GetRestored()), Revision: r.GetRevision(), AsOf: timeOf(r.GetAsOf()),
	}
	if s := r.GetSnapshot(); s != nil {
		out.Snapshot = &rolloutSnapJSON{s.GetNamespace(), s.GetKeys(), s.GetBytes(), s.GetSha256(), s.GetRevision(), timeOf(s.GetTaken()), s.GetSkipped()}
	}
	if c := r.GetControl(); c != nil {
		out.Control = &rolloutCtlJSON{c.GetAction(), c.GetRestoreData(), c.GetActor(), timeOf(c.GetAt()), c.GetApplied()}
	}
	for _, d := range r.GetDomains() {
		dj := rolloutDomainJSON{Name: d.GetName(), From: d.GetFromVersion(), Version: d.GetVersion(), Phase: d.GetPhase(),
			Started: timeOf(d.GetStarted()), Finished: timeOf(d.GetFinished()), DeadlineLeftMs: d.GetDeadlineLeftMs(), Nodes: []rolloutNodeJSON{}}
		for _, n := range d.GetNodes() {
			dj.Nodes = append(dj.Nodes, rolloutNodeJSON{n.GetName(), n.GetPhase(), n.GetVersion(), timeOf(n.GetHealthySince()),
				timeOf(n.GetDownSince()), timeOf(n.GetSince()), n.GetReason(), n.GetRestarts(), n.GetGateLeftMs(),
				n.GetDraining(), n.GetInFlight()})
		}
		out.Domains = append(out.Domains, dj)
	}
	return out
}
