//go:build unix

package sdk

import (
	"context"
	"os"
	"os/signal"
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
// exits. The returned func stops the watchdog.
func startWatchdog(ctx context.Context, logger hclog.Logger) (stop func()) {
	parent := os.Getppid()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		ticker := time.NewTicker(watchdogInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-sigs:
				logger.Warn("SIGTERM: the agent is gone or wants the plugin dead; killing the plugin's process group")
				die()
			case <-ticker.C:
				if ppid := os.Getppid(); ppid != parent {
					logger.Warn("the agent is gone; killing the plugin's process group", "parent", parent, "new_parent", ppid)
					die()
				}
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
		signal.Stop(sigs)
	}
}

// die kills the plugin's process group when the plugin leads it, and exits
// otherwise. It does not return.
func die() {
	pid := os.Getpid()
	if pgid, err := unix.Getpgid(0); err == nil && pgid == pid {
		_ = unix.Kill(-pgid, unix.SIGKILL)
	}
	// Not a group leader, or the kill did not take: leave as SIGTERM would.
	os.Exit(128 + int(syscall.SIGTERM))
}
