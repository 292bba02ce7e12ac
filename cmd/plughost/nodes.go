package main

import (
	"context"
	"flag"
	"fmt"
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
func runNode(ctx context.Context, env *cliEnv, args []string) error {
	sub, rest, err := subcommand("node", args)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("node "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	if err := parse(fs, rest); err != nil {
		return err
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
	resp, err := operatorv1.NewOperatorServiceClient(conn).SetNodeEligibility(ctx, &operatorv1.SetNodeEligibilityRequest{Node: name, Eligible: eligible})
	if err != nil {
		return err
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
