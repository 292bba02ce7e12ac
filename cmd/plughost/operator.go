package main

import (
	"context"
	"flag"
	"fmt"

	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// raftPeerJSON is one server in `plughost operator raft list-peers -format json`.
type raftPeerJSON struct {
	ID         string `json:"id"`
	Address    string `json:"address"`
	Voter      bool   `json:"voter"`
	Leader     bool   `json:"leader"`
	SerfStatus string `json:"serf_status"`
}

// runOperator is `plughost operator raft list-peers|remove-peer`: the
// raft configuration, for diagnosing and repairing a cluster.
func runOperator(ctx context.Context, env *cliEnv, args []string) error {
	area, rest, err := subcommand("operator", args)
	if err != nil {
		return err
	}
	sub, rest, err := subcommand("operator "+area, rest)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("operator "+area+" "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	force := new(bool)
	if sub == "remove-peer" {
		fs.BoolVar(force, "force", false, "remove a server that gossip sees alive (the leader adds it back unless its agent stops)")
	}
	if err := parse(fs, rest); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	var peers []*operatorv1.RaftPeer
	switch sub {
	case "list-peers":
		if fs.NArg() > 0 {
			return usagef("operator raft list-peers takes no arguments")
		}
		conn, err := cf.dial()
		if err != nil {
			return err
		}
		defer conn.Close()
		resp, err := operatorv1.NewOperatorServiceClient(conn).ListRaftPeers(ctx, &operatorv1.ListRaftPeersRequest{})
		if err != nil {
			return err
		}
		peers = resp.GetPeers()
	case "remove-peer":
		if fs.NArg() != 1 {
			return usagef("operator raft remove-peer: give the raft ID of one server (see 'plughost operator raft list-peers')")
		}
		conn, err := cf.dial()
		if err != nil {
			return err
		}
		defer conn.Close()
		resp, err := operatorv1.NewOperatorServiceClient(conn).RemoveRaftPeer(ctx, &operatorv1.RemoveRaftPeerRequest{Id: fs.Arg(0), Force: *force})
		if err != nil {
			return err
		}
		peers = resp.GetPeers()
		if cf.format != "json" {
			fmt.Fprintf(env.stdout, "removed %s from the raft configuration; it is now:\n", fs.Arg(0))
		}
	}
	return printRaftPeers(env, cf.format, peers)
}

func printRaftPeers(env *cliEnv, format string, peers []*operatorv1.RaftPeer) error {
	if format == "json" {
		out := []raftPeerJSON{}
		for _, p := range peers {
			out = append(out, raftPeerJSON{p.GetId(), p.GetAddress(), p.GetVoter(), p.GetLeader(), p.GetSerfStatus()})
		}
		return printJSON(env.stdout, out)
	}
	rows := make([][]string, 0, len(peers))
	for _, p := range peers {
		state := "follower"
		if p.GetLeader() {
			state = "leader"
		}
		voter := "true"
		if !p.GetVoter() {
			voter = "false"
		}
		rows = append(rows, []string{p.GetId(), p.GetAddress(), state, voter, orDash(p.GetSerfStatus())})
	}
	return table(env.stdout, []string{"ID", "ADDRESS", "STATE", "VOTER", "SERF"}, rows)
}
