package agent

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// startReaper starts the reaper command (see cmd/plughost reaper) in a
// session of its own, holding the read end of a pipe whose write end only
// this agent has. However the agent ends — kill -9 included — the kernel
// closes the write end, the reaper reads EOF and kills and removes every
// instance cgroup under the agent's cgroup parent: what the plugins left
// running dies even when a plugin could not take its children with it.
// stop closes the write end at a clean shutdown.
func startReaper(command []string) (stop func(), err error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.ExtraFiles = []*os.File{r} // fd 3 in the reaper
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("starting the cgroup reaper: %w", err)
	}
	r.Close()
	go func() { _ = cmd.Wait() }()
	return func() { w.Close() }, nil
}
