package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/plughost/plughost/host/cluster"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// runKeygen is `plughost keygen`: a new gossip encryption key.
func runKeygen(_ context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("keygen takes no arguments")
	}
	key, err := cluster.GenerateKey()
	if err != nil {
		return err
	}
	fmt.Fprintln(env.stdout, key)
	return nil
}

// keyringReportJSON is `plughost keyring -format json`.
type keyringReportJSON struct {
	Nodes     int32             `json:"nodes"`
	Responses int32             `json:"responses"`
	Failures  map[string]string `json:"failures"`
	Warnings  map[string]string `json:"warnings"`
	Keys      []gossipKeyJSON   `json:"keys,omitempty"`
}

type gossipKeyJSON struct {
	Key          string `json:"key"`
	Nodes        int32  `json:"nodes"`
	PrimaryNodes int32  `json:"primary_nodes"`
}

// runKeyring is `plughost keyring -list | -install KEY | -use KEY |
// -remove KEY`: the gossip keyring of every member, changed through serf
// as Consul's `consul keyring` does.
func runKeyring(ctx context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("keyring", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	list := fs.Bool("list", false, "list the keys every member holds, with how many hold each and use it as their primary key")
	install := fs.String("install", "", "add `KEY` to every member's keyring (they keep encrypting with their primary key, and accept both)")
	use := fs.String("use", "", "make `KEY`, installed already, every member's primary key")
	remove := fs.String("remove", "", "remove `KEY` from every member's keyring (a member refuses to remove its primary key)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("keyring takes no arguments, got %q: give the key to -install, -use or -remove", fs.Args())
	}
	n := 0
	for _, set := range []bool{*list, *install != "", *use != "", *remove != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return usagef("keyring: give exactly one of -list, -install KEY, -use KEY or -remove KEY")
	}
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	c := operatorv1.NewOperatorServiceClient(conn)
	var (
		report *operatorv1.GossipKeyringReport
		done   string // what succeeded, said of every member
		doing  string
	)
	switch {
	case *list:
		resp, err := c.ListGossipKeys(ctx, &operatorv1.ListGossipKeysRequest{})
		if err != nil {
			return err
		}
		report, doing = resp.GetReport(), "listing the gossip keys"
	case *install != "":
		resp, err := c.InstallGossipKey(ctx, &operatorv1.InstallGossipKeyRequest{Key: *install})
		if err != nil {
			return err
		}
		report, doing, done = resp.GetReport(), "installing the gossip key", "installed the gossip key on"
	case *use != "":
		resp, err := c.UseGossipKey(ctx, &operatorv1.UseGossipKeyRequest{Key: *use})
		if err != nil {
			return err
		}
		report, doing, done = resp.GetReport(), "making the gossip key primary", "the gossip key is now the primary key of"
	case *remove != "":
		resp, err := c.RemoveGossipKey(ctx, &operatorv1.RemoveGossipKeyRequest{Key: *remove})
		if err != nil {
			return err
		}
		report, doing, done = resp.GetReport(), "removing the gossip key", "removed the gossip key from"
	}
	ok := len(report.GetFailures()) == 0 && report.GetResponses() == report.GetNodes()
	if err := printKeyringReport(env, cf.format, report, *list, done, ok); err != nil {
		return err
	}
	if ok {
		return nil
	}
	fmt.Fprintf(env.stderr, "plughost: %s failed on %d of %d members", doing, len(report.GetFailures()), report.GetNodes())
	if missing := report.GetNodes() - report.GetResponses(); missing > 0 {
		fmt.Fprintf(env.stderr, " and %d did not answer in time", missing)
	}
	fmt.Fprintln(env.stderr, ":")
	for _, f := range report.GetFailures() {
		fmt.Fprintf(env.stderr, "  %s: %s\n", f.GetNode(), f.GetMessage())
	}
	fmt.Fprintln(env.stderr, "fix those members and run it again; 'plughost keyring -list' shows the keys each holds")
	return errSilent
}

func printKeyringReport(env *cliEnv, format string, r *operatorv1.GossipKeyringReport, list bool, done string, ok bool) error {
	if format == "json" {
		out := keyringReportJSON{Nodes: r.GetNodes(), Responses: r.GetResponses(), Failures: map[string]string{}, Warnings: map[string]string{}}
		for _, f := range r.GetFailures() {
			out.Failures[f.GetNode()] = f.GetMessage()
		}
		for _, w := range r.GetWarnings() {
			out.Warnings[w.GetNode()] = w.GetMessage()
		}
		for _, k := range r.GetKeys() {
			out.Keys = append(out.Keys, gossipKeyJSON{k.GetKey(), k.GetNodes(), k.GetPrimaryNodes()})
		}
		return printJSON(env.stdout, out)
	}
	for _, w := range r.GetWarnings() {
		fmt.Fprintf(env.stderr, "warning from %s: %s\n", w.GetNode(), w.GetMessage())
	}
	if list {
		rows := make([][]string, 0, len(r.GetKeys()))
		for _, k := range r.GetKeys() {
			rows = append(rows, []string{k.GetKey(), fmt.Sprintf("%d/%d", k.GetNodes(), r.GetNodes()), fmt.Sprintf("%d/%d", k.GetPrimaryNodes(), r.GetNodes())})
		}
		return table(env.stdout, []string{"KEY", "INSTALLED", "PRIMARY"}, rows)
	}
	if ok {
		fmt.Fprintf(env.stdout, "%s %s\n", done, allMembers(r.GetNodes()))
	}
	return nil
}

func allMembers(n int32) string {
	if n == 1 {
		return "the only member"
	}
	return fmt.Sprintf("all %d members", n)
}
