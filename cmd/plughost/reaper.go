package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/plughost/plughost/host/agent"
	"github.com/plughost/plughost/host/governance"
)

// runReaper is the agent's cgroup reaper (started by the agent, not by
// operators): it waits until the agent's end of the pipe on fd 3 closes —
// the agent exited, however — then, unless the agent said it removed its
// cgroups itself, kills every process in the agent's own cgroup
// <-cgroup-parent>/<-group> and removes it, and the parent once no other
// agent's cgroup is in it. Nothing outside the agent's own cgroup is
// touched. The agent's cgroup lock, fd 4, stays open until the reaper
// exits, so that an agent restarted on the same data dir waits for it.
func runReaper(_ context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("reaper", flag.ContinueOnError)
	parent := fs.String("cgroup-parent", "", "the agent's cgroup parent")
	group := fs.String("group", "", "the agent's own cgroup in the parent")
	sockets := fs.String("sockets", "", "the agent's plugin socket dir, removed once its plugins are gone")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *parent == "" || *group == "" {
		return usagef("reaper: give -cgroup-parent and -group")
	}
	// The agent's terminal and pipes may be gone by the time it reports.
	signal.Ignore(syscall.SIGPIPE, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	pipe := os.NewFile(3, "agent-pipe")
	if pipe == nil {
		return fmt.Errorf("reaper: no pipe from the agent on fd 3")
	}
	said, _ := io.ReadAll(io.LimitReader(pipe, 64))
	if string(said) == agent.ReaperNothingLeft {
		return nil
	}
	m, err := governance.NewManager(governance.Config{Parent: *parent, Group: *group})
	if err != nil {
		return err
	}
	cleaned, err := m.CleanStale()
	if len(cleaned) > 0 {
		fmt.Fprintf(env.stderr, "plughost reaper: the agent is gone; removed its instance cgroups %v\n", cleaned)
	}
	if *sockets != "" {
		agent.RemoveSocketDir(*sockets)
	}
	return errors.Join(err, m.Close())
}
