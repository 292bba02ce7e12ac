package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// nodeJSON is one node in `plughost nodes -format json`.
type nodeJSON struct {
	Name             string            `json:"name"`
	Status           string            `json:"status"`
	FaultDomain      string            `json:"fault_domain"`
	UpgradeDomain    string            `json:"upgrade_domain"`
	Tags             map[string]string `json:"tags"`
	Eligible         bool              `json:"eligible"`
	EligibilitySince *time.Time        `json:"eligibility_since,omitempty"`
	EligibilityActor string            `json:"eligibility_actor,omitempty"`
	APIAddress       string            `json:"api_address"`
	RPCAddress       string            `json:"rpc_address"`
	Plugins          []nodePluginJSON  `json:"plugins"`
	Invalid          string            `json:"invalid,omitempty"`
}

// nodePluginJSON is one plugin instance a node runs.
type nodePluginJSON struct {
	Plugin  string     `json:"plugin"`
	Version string     `json:"version"`
	Role    string     `json:"role,omitempty"`
	State   string     `json:"state"`
	Healthy bool       `json:"healthy"`
	Since   *time.Time `json:"since,omitempty"`
}

// runNodes is `plughost nodes`: every node with its identity, its
// eligibility for placement and what it runs.
func runNodes(ctx context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("nodes", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("nodes takes no arguments")
	}
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := operatorv1.NewOperatorServiceClient(conn).ListNodes(ctx, &operatorv1.ListNodesRequest{})
	if err != nil {
		return err
	}
	if resp.GetStale() != "" {
		fmt.Fprintf(env.stderr, "plughost: note: %s\n", resp.GetStale())
	}
	if cf.format == "json" {
		out := []nodeJSON{}
		for _, n := range resp.GetNodes() {
			j := nodeJSON{
				Name: n.GetName(), Status: n.GetStatus(), FaultDomain: n.GetFaultDomain(), UpgradeDomain: n.GetUpgradeDomain(),
				Tags: n.GetTags(), Eligible: n.GetEligible(), EligibilityActor: n.GetEligibilityActor(),
				APIAddress: n.GetApiAddress(), RPCAddress: n.GetRpcAddress(), Plugins: []nodePluginJSON{}, Invalid: n.GetInvalid(),
			}
			if j.Tags == nil {
				j.Tags = map[string]string{}
			}
			if n.GetEligibilitySince() != nil {
				t := n.GetEligibilitySince().AsTime()
				j.EligibilitySince = &t
			}
			for _, p := range n.GetPlugins() {
				pj := nodePluginJSON{Plugin: p.GetPlugin(), Version: p.GetVersion(), Role: p.GetRole(), State: state(p.GetState()), Healthy: p.GetHealthy()}
				if p.GetSince() != nil {
					t := p.GetSince().AsTime()
					pj.Since = &t
				}
				j.Plugins = append(j.Plugins, pj)
			}
			out = append(out, j)
		}
		return printJSON(env.stdout, out)
	}
	var rows [][]string
	var invalid []string
	for _, n := range resp.GetNodes() {
		eligible := "eligible"
		if !n.GetEligible() {
			eligible = "drained"
		}
		if n.GetInvalid() != "" {
			eligible = "invalid"
			invalid = append(invalid, fmt.Sprintf("%s: %s", n.GetName(), n.GetInvalid()))
		}
		rows = append(rows, []string{n.GetName(), n.GetStatus(), orDash(n.GetFaultDomain()), orDash(n.GetUpgradeDomain()),
			eligible, orDash(joinTags(n.GetTags())), orDash(runs(n.GetPlugins()))})
	}
	if err := table(env.stdout, []string{"NAME", "STATUS", "FAULT DOMAIN", "UPGRADE DOMAIN", "ELIGIBILITY", "TAGS", "RUNS"}, rows); err != nil {
		return err
	}
	for _, line := range invalid {
		fmt.Fprintf(env.stderr, "plughost: node %s (it gets no instances until its agent restarts with a valid -fault-domain, -upgrade-domain and -tag)\n", line)
	}
	return nil
}

// joinTags is k=v,k=v sorted by key.
func joinTags(tags map[string]string) string {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+tags[k])
	}
	return strings.Join(out, ",")
}

// runs is what a node runs, as plugin@version, with /role for a
// singleton's instance and (state) for one that is not healthy,
// comma-separated.
func runs(plugins []*operatorv1.NodePlugin) string {
	out := make([]string, 0, len(plugins))
	for _, p := range plugins {
		s := p.GetPlugin() + "@" + orDash(p.GetVersion())
		if p.GetRole() != "" {
			s += "/" + p.GetRole()
		}
		if !p.GetHealthy() {
			s += "(" + state(p.GetState()) + ")"
		}
		out = append(out, s)
	}
	return strings.Join(out, ",")
}

// runNode is `plughost node drain|eligible NODE`: the operator's word on
// whether placement may give a node instances.
func runNode(ctx context.Context, env *cliEnv, args []string) (err error) {
	sub, rest, err := subcommand("node", args)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("node "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	wait, timeout := new(bool), new(time.Duration)
	if sub == "drain" {
		fs.BoolVar(wait, "wait", false, "wait until the node runs nothing (every plugin it reports is stopped or failed), printing what it still runs as that changes")
		fs.DurationVar(timeout, "timeout", 10*time.Minute, "with -wait, give up after this long (exit 1)")
	}
	if err := parse(fs, rest); err != nil {
		return err
	}
	if sub == "drain" && *timeout <= 0 {
		return usagef("-timeout %v must be positive", *timeout)
	}
	if err := cf.check(); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("node %s takes one node name (see `plughost nodes`)", sub)
	}
	name := fs.Arg(0)
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	eligible := sub == "eligible"
	c := operatorv1.NewOperatorServiceClient(conn)
	resp, err := c.SetNodeEligibility(ctx, &operatorv1.SetNodeEligibilityRequest{Node: name, Eligible: eligible})
	if err != nil {
		return err
	}
	if *wait {
		defer func() {
			if err == nil {
				out := env.stdout
				if cf.format == "json" {
					out = env.stderr // stdout holds the JSON alone
				}
				err = waitDrained(ctx, out, c, name, *timeout)
			}
		}()
	}
	if cf.format == "json" {
		out := struct {
			Node     string     `json:"node"`
			Eligible bool       `json:"eligible"`
			Changed  bool       `json:"changed"`
			Since    *time.Time `json:"since,omitempty"`
			Actor    string     `json:"actor,omitempty"`
		}{Node: name, Eligible: eligible, Changed: resp.GetChanged(), Actor: resp.GetActor()}
		if resp.GetSince() != nil {
			t := resp.GetSince().AsTime()
			out.Since = &t
		}
		return printJSON(env.stdout, out)
	}
	switch {
	case !eligible && resp.GetChanged() && *wait:
		fmt.Fprintf(env.stdout, "Node %s drained: it gets no new instances, and the placement controller moves those it runs to other eligible nodes, each new one serving before the old one stops.\n", name)
	case !eligible && resp.GetChanged():
		fmt.Fprintf(env.stdout, "Node %s drained: it gets no new instances, and the placement controller moves those it runs to other eligible nodes, each new one serving before the old one stops.\nWatch with `plughost nodes`; `plughost node eligible %s` brings it back.\n", name, name)
	case !eligible:
		fmt.Fprintf(env.stdout, "Node %s was drained already (since %s, by %s); nothing changed.\n", name, resp.GetSince().AsTime().Format(time.RFC3339), orDash(resp.GetActor()))
	case resp.GetChanged():
		fmt.Fprintf(env.stdout, "Node %s is eligible again: placement may give it instances.\nWatch with `plughost nodes`.\n", name)
	default:
		fmt.Fprintf(env.stdout, "Node %s is eligible already; nothing changed.\n", name)
	}
	return nil
}

// waitDrained polls the node's listing until it runs nothing: every plugin
// it reports is stopped or failed. It prints what the node still runs each
// time that changes. A node gossip does not see alive reports nothing new,
// so the wait ends there, saying so.
func waitDrained(ctx context.Context, out io.Writer, c operatorv1.OperatorServiceClient, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		resp, err := c.ListNodes(ctx, &operatorv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		var node *operatorv1.Node
		for _, n := range resp.GetNodes() {
			if n.GetName() == name {
				node = n
			}
		}
		if node == nil {
			return fmt.Errorf("node %s is no longer a member; `plughost nodes` lists those that are", name)
		}
		var running []*operatorv1.NodePlugin
		for _, p := range node.GetPlugins() {
			switch p.GetState() {
			case operatorv1.InstanceState_INSTANCE_STATE_STOPPED, operatorv1.InstanceState_INSTANCE_STATE_FAILED:
			default:
				running = append(running, p)
			}
		}
		switch {
		case len(running) == 0:
			fmt.Fprintf(out, "Node %s runs nothing now.\n", name)
			return nil
		case node.GetStatus() != "alive":
			fmt.Fprintf(out, "Node %s is %s: it reports nothing more (its last report: %s). Its instances are placed elsewhere as for any lost node.\n",
				name, node.GetStatus(), runs(running))
			return nil
		}
		if now := runs(running); now != last {
			fmt.Fprintf(out, "Waiting: %s still runs %s\n", name, now)
			last = now
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s still runs %s after %v; the drain stands (see `plughost nodes` and `plughost plugin status NAME` for why an instance is not moved)", name, last, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
