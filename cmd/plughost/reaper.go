package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/plughost/plughost/host/governance"
)

// runReaper is the agent's cgroup reaper (started by the agent, not by
// operators): it waits until the agent's end of the pipe on fd 3 closes —
// the agent exited, however — then kills every process in the instance
// cgroups under -cgroup-parent and removes them.
func runReaper(_ context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("reaper", flag.ContinueOnError)
	parent := fs.String("cgroup-parent", "", "the agent's cgroup parent")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *parent == "" {
		return usagef("reaper: give -cgroup-parent")
	}
	// The agent's terminal and pipes may be gone by the time it reports.
	signal.Ignore(syscall.SIGPIPE, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	pipe := os.NewFile(3, "agent-pipe")
	if pipe == nil {
		return fmt.Errorf("reaper: no pipe from the agent on fd 3")
	}
	_, _ = io.Copy(io.Discard, pipe)
	m, err := governance.NewManager(governance.Config{Parent: *parent})
	if err != nil {
		return err
	}
	cleaned, err := m.CleanStale()
	if len(cleaned) > 0 {
		fmt.Fprintf(env.stderr, "plughost reaper: the agent is gone; removed its instance cgroups %v\n", cleaned)
	}
	return err
}
