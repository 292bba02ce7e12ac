package agent

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// ReaperNothingLeft is what the agent writes to its reaper's pipe (see
// startReaper) when it stops cleanly and has removed its cgroups itself:
// the reaper then has nothing to do.
const ReaperNothingLeft = "nothing left\n"

// reaper is the agent's end of its running reaper.
type reaper struct{ w *os.File }

// startReaper starts the reaper command (see cmd/plughost reaper) in a
// session of its own, holding the read end of a pipe whose write end only
// this agent has (fd 3), and the agent's cgroup lock (fd 4). However the
// agent ends — kill -9 included — the kernel closes the write end, the
// reaper reads EOF and kills and removes every instance cgroup in the
// agent's own cgroup, then that cgroup: what the plugins left running dies
// even when a plugin could not take its children with it. The reaper holds
// the lock until it is done, so that an agent started on the same data dir
// waits for it (see lockCgroup).
func startReaper(command []string, lock *os.File) (*reaper, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.ExtraFiles = []*os.File{r, lock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("starting the cgroup reaper: %w", err)
	}
	r.Close()
	go func() { _ = cmd.Wait() }()
	return &reaper{w: w}, nil
}

// nothingLeft tells the reaper that the agent removed its cgroups itself.
func (r *reaper) nothingLeft() { _, _ = r.w.WriteString(ReaperNothingLeft) }

// stop closes the agent's end of the pipe: the reaper cleans up unless
// told nothingLeft, and exits.
func (r *reaper) stop() { r.w.Close() }
