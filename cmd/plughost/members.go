package main

import (
	"context"
	"flag"
	"sort"
	"strings"

	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// memberJSON is one member in `plughost members -format json`.
type memberJSON struct {
	Name       string            `json:"name"`
	Address    string            `json:"address"`
	Status     string            `json:"status"`
	RaftRole   string            `json:"raft_role"`
	APIAddress string            `json:"api_address"`
	RPCAddress string            `json:"rpc_address"`
	Tags       map[string]string `json:"tags"`
}

func runMembers(ctx context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("members", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("members takes no arguments")
	}
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := operatorv1.NewOperatorServiceClient(conn).ListMembers(ctx, &operatorv1.ListMembersRequest{})
	if err != nil {
		return err
	}
	if cf.format == "json" {
		out := []memberJSON{}
		for _, m := range resp.GetMembers() {
			out = append(out, memberJSON{m.GetName(), m.GetAddress(), m.GetStatus(), m.GetRaftRole(), m.GetApiAddress(), m.GetRpcAddress(), m.GetTags()})
		}
		return printJSON(env.stdout, out)
	}
	var rows [][]string
	for _, m := range resp.GetMembers() {
		keys := make([]string, 0, len(m.GetTags()))
		for k := range m.GetTags() {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		tags := make([]string, 0, len(keys))
		for _, k := range keys {
			tags = append(tags, k+"="+m.GetTags()[k])
		}
		rows = append(rows, []string{m.GetName(), m.GetAddress(), orDash(m.GetApiAddress()), m.GetStatus(), m.GetRaftRole(), orDash(strings.Join(tags, ","))})
	}
	return table(env.stdout, []string{"NAME", "ADDRESS", "API", "STATUS", "RAFT", "TAGS"}, rows)
}
