package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"

	"github.com/plughost/plughost/store/fsm"
)

// PeersFile is the file an operator writes in a server's store dir to
// recover a cluster that lost its quorum for good: the servers that are
// left, as a JSON list of {"id", "address", "non_voter"}. At its next start
// the server replaces its raft configuration with that list and renames
// the file to PeersFile+".applied". Every server that is left must get the
// same file before it starts.
const PeersFile = "peers.json"

// recoverFromPeersFile applies dir's PeersFile, if there is one, to the
// raft state before raft starts.
func recoverFromPeersFile(dir string, rc *raft.Config, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore, trans raft.Transport) error {
	path := filepath.Join(dir, PeersFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	conf, err := raft.ReadConfigJSON(path)
	if err != nil {
		return fmt.Errorf("store: %s: %w (fix or remove the file; it lists the servers left as [{\"id\": \"n1\", \"address\": \"host:port\", \"non_voter\": false}])", path, err)
	}
	self := false
	for _, s := range conf.Servers {
		self = self || s.ID == rc.LocalID
	}
	if !self {
		return fmt.Errorf("store: %s does not list this server (%s): a server only recovers into a configuration that holds it", path, rc.LocalID)
	}
	// Recovery replays the log into a state machine of its own: the one
	// raft starts with restores from the snapshot recovery leaves.
	tmp, err := fsm.New(fsm.Config{Logger: rc.Logger.Named("recovery")})
	if err != nil {
		return err
	}
	defer tmp.Close()
	if err := raft.RecoverCluster(rc, raftFSM{tmp}, logs, stable, snaps, trans, conf); err != nil {
		return fmt.Errorf("store: recovering the raft configuration from %s: %w", path, err)
	}
	if err := os.Rename(path, path+".applied"); err != nil {
		return fmt.Errorf("store: the raft configuration was recovered from %s, but renaming it failed (remove it before the next start): %w", path, err)
	}
	rc.Logger.Warn("recovered the raft configuration from "+PeersFile, "servers", conf.Servers)
	return nil
}
