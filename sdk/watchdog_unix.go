//go:build unix

package sdk

import (
	"context"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// watchdogInterval is how often the watchdog checks the parent process.
const watchdogInterval = 200 * time.Millisecond

// startWatchdog makes sure the plugin does not outlive the agent. The agent
// starts plugins in their own process group with a parent-death signal of
// SIGTERM; the watchdog also covers a parent that dies before that signal
// is armed, or a launcher that does not arm it. On SIGTERM, or when the
// parent pid changes, it kills the plugin's process group, so whatever the
// plugin forked dies with it; a plugin that does not lead its group only
// exits. beforeDeath, if not nil, runs first: the kill skips deferred
// cleanup. The returned func stops the watchdog.
func startWatchdog(ctx context.Context, logger hclog.Logger, beforeDeath func()) (stop func()) {
	kill := func() {
		if beforeDeath != nil {
			beforeDeath()
		}
		die()
	}
	parent := os.Getppid()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	// Once the agent is gone, a write to stderr (the agent's pipe) fails
	// with EPIPE, and Go ends a process whose stderr write fails so with
	// SIGPIPE: the first log line after the agent's death would end the
	// plugin before it killed its process group. Taking SIGPIPE here makes
	// such a write merely fail.
	pipes := make(chan os.Signal, 1)
	signal.Notify(pipes, syscall.SIGPIPE)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		ticker := time.NewTicker(watchdogInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-pipes:
				// A broken pipe, maybe the agent's: the parent check
				// below, or SIGTERM, tells whether the agent is gone.
			case <-sigs:
				logger.Warn("SIGTERM: the agent is gone or wants the plugin dead; killing the plugin's process group")
				kill()
			case <-ticker.C:
				if ppid := os.Getppid(); ppid != parent {
					logger.Warn("the agent is gone; killing the plugin's process group", "parent", parent, "new_parent", ppid)
					kill()
				}
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
		signal.Stop(sigs)
		signal.Stop(pipes)
		// go-plugin's Serve also returns when the agent is gone, and may
		// win the race against the loop above, even before the plugin is
		// reparented: whatever the plugin started must not outlive it. The
		// plugin itself exits normally.
		killOthersInGroup()
	}
}

// killGroup kills the plugin's process group, the plugin with it, when the
// plugin leads it; otherwise it does nothing.
func killGroup() {
	pid := os.Getpid()
	if pgid, err := unix.Getpgid(0); err == nil && pgid == pid {
		_ = unix.Kill(-pgid, unix.SIGKILL)
	}
}

// die kills the plugin's process group when the plugin leads it, and exits
// otherwise. It does not return.
func die() {
	killGroup()
	// Not a group leader, or the kill did not take: leave as SIGTERM would.
	os.Exit(128 + int(syscall.SIGTERM))
}

// killOthersInGroup kills every other process of the plugin's process group
// (what the plugin forked), when the plugin leads the group. It reads /proc
// and does nothing where there is none.
func killOthersInGroup() {
	pid := os.Getpid()
	pgid, err := unix.Getpgid(0)
	if err != nil || pgid != pid {
		return
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range entries {
		other, err := strconv.Atoi(e.Name())
		if err != nil || other == pid {
			continue
		}
		if g, err := unix.Getpgid(other); err == nil && g == pgid {
			_ = unix.Kill(other, unix.SIGKILL)
		}
	}
}
