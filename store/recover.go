package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
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
	conf, err := readPeersFile(path, rc.LocalID)
	if err != nil {
		return err
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

// peersEntry is one server in PeersFile.
type peersEntry struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	NonVoter bool   `json:"non_voter"`
}

// readPeersFile reads PeersFile strictly: a typo in a key would otherwise
// go unnoticed and change whether a server votes. This server must be in
// it as a voter, or it could never lead the recovered cluster.
func readPeersFile(path string, self raft.ServerID) (raft.Configuration, error) {
	fix := func(format string, args ...any) error {
		return fmt.Errorf("store: %s: %s (fix or remove the file; it lists the servers left as [{\"id\": \"n1\", \"address\": \"host:port\", \"non_voter\": false}])",
			path, fmt.Sprintf(format, args...))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return raft.Configuration{}, fmt.Errorf("store: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var entries []peersEntry
	if err := dec.Decode(&entries); err != nil {
		return raft.Configuration{}, fix("%v", err)
	}
	var conf raft.Configuration
	seen := map[string]bool{}
	voter := false
	for _, e := range entries {
		if e.ID == "" || e.Address == "" {
			return raft.Configuration{}, fix("every server needs an id and an address")
		}
		if _, _, err := net.SplitHostPort(e.Address); err != nil {
			return raft.Configuration{}, fix("server %s: address %q: %v", e.ID, e.Address, err)
		}
		if seen[e.ID] {
			return raft.Configuration{}, fix("server %s is listed twice", e.ID)
		}
		seen[e.ID] = true
		sf := raft.Voter
		if e.NonVoter {
			sf = raft.Nonvoter
		}
		if raft.ServerID(e.ID) == self {
			if e.NonVoter {
				return raft.Configuration{}, fix("this server (%s) is listed as a non-voter, so it could never lead", self)
			}
			voter = true
		}
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(e.ID), Address: raft.ServerAddress(e.Address), Suffrage: sf})
	}
	if !voter {
		return raft.Configuration{}, fmt.Errorf("store: %s does not list this server (%s): a server only recovers into a configuration that holds it", path, self)
	}
	return conf, nil
}
