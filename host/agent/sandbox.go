package agent

import (
	"fmt"
	"path/filepath"

	"github.com/plughost/plughost/host/sandbox"
)

// startSandbox prepares what plugins run as: a uid of their own each (or
// plugin_user), working dirs in the agent's socket dir, and the machine's
// uid locks beside the agents' socket dirs.
func (a *Agent) startSandbox(sockets string) (*sandbox.Sandbox, error) {
	cfg := &a.cfg
	_, sum, err := dataDirHash(cfg)
	if err != nil {
		return nil, err
	}
	sb, err := sandbox.New(sandbox.Config{
		User:     cfg.PluginUser,
		UIDRange: cfg.PluginUIDRange,
		Identity: cfg.Node + "-" + sum,
		WorkDir:  filepath.Join(sockets, workDirName),
		LockDir:  filepath.Join(filepath.Dir(sockets), uidLockDirName),
		DataDir:  cfg.DataDir,
		Logger:   a.log.Named("sandbox"),
	})
	if err != nil {
		return nil, fmt.Errorf("agent: plugin sandbox: %w", err)
	}
	return sb, nil
}
