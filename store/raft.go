package store

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/plughost/plughost/store/fsm"
)

// Raft tuning. Batching matters most: with BatchApplyCh the leader takes up
// to maxAppendEntries waiting proposals, writes them to the log in one
// fsync, replicates them in one RPC, and the FSM applies them as one batch.
const (
	maxAppendEntries  = 512
	snapshotThreshold = 16384
	trailingLogs      = 10240
	snapshotsRetained = 2
	logCacheEntries   = 1024
	transportPool     = 3
	transportTimeout  = 10 * time.Second
)

// raftNode is the raft instance and everything it owns: the log, stable and
// snapshot stores and the transport. Cluster membership changes (voters,
// non-voters, joins) are made on node.raft.
type raftNode struct {
	raft  *raft.Raft
	addr  raft.ServerAddress
	trans raft.Transport
	// addrs finds servers at the address membership knows for them.
	addrs raftAddrs
	// hasState is whether the node has raft state: set at open, and by a
	// bootstrap.
	hasState atomic.Bool
	closer   closers // closed after raft shuts down, in order
}

// newRaftNode starts raft over f with the stores and transport cfg asks for,
// bootstrapping a single-voter cluster when cfg.Bootstrap is set and there
// is no state yet.
func newRaftNode(cfg Config, f *fsm.FSM) (n *raftNode, err error) {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = cfg.Logger.Named("raft")
	rc.HeartbeatTimeout = cfg.timing.Heartbeat
	rc.ElectionTimeout = cfg.timing.Election
	rc.LeaderLeaseTimeout = cfg.timing.LeaderLease
	rc.CommitTimeout = cfg.timing.Commit
	rc.MaxAppendEntries = maxAppendEntries
	rc.BatchApplyCh = true
	rc.SnapshotThreshold = snapshotThreshold
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	rc.TrailingLogs = trailingLogs
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	rc.NoLegacyTelemetry = true
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("store: raft config: %w", err)
	}

	// The stores opened so far are closed if opening fails; node, not n,
	// since a failing return sets n to nil first.
	node := &raftNode{}
	n = node
	defer func() {
		if err != nil {
			node.closeStores()
		}
	}()

	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
		trans  raft.Transport
	)
	if cfg.InMemory {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
		addr, t := raft.NewInmemTransport("")
		n.addr, trans = addr, t
		n.closer = append(n.closer, t)
	} else {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: data dir: %w", err)
		}
		lock, err := lockDir(cfg.Dir)
		if err != nil {
			return nil, err
		}
		n.closer = append(n.closer, lock)
		kind, err := chooseLogStore(cfg.Dir, cfg.LogStore)
		if err != nil {
			return nil, err
		}
		logStore, stableStore, closer, err := openLogStore(kind, cfg.Dir, rc.Logger)
		if err != nil {
			return nil, err
		}
		n.closer = append(closers{closer}, n.closer...) // before the lock
		logs, stable = newLogCache(logCacheEntries, logStore), stableStore
		rc.Logger.Info("raft log", "store", kind, "dir", cfg.Dir)
		snaps, err = newPrivateSnapshots(cfg.Dir, snapshotsRetained, rc.Logger)
		if err != nil {
			return nil, fmt.Errorf("store: snapshot store in %s: %w", cfg.Dir, err)
		}
		tc := &raft.NetworkTransportConfig{
			ServerAddressProvider: &n.addrs,
			Logger:                rc.Logger,
			MaxPool:               transportPool,
			Timeout:               transportTimeout,
		}
		var t *raft.NetworkTransport
		if cfg.Transport != nil {
			tc.Stream = &raftLayer{Listener: cfg.Transport.Raft(), t: cfg.Transport, addrs: &n.addrs}
			t = raft.NewNetworkTransportWithConfig(tc)
		} else if t, err = raft.NewTCPTransportWithConfig(cfg.RaftAddr, nil, tc); err != nil {
			return nil, fmt.Errorf("store: raft transport on %s: %w", cfg.RaftAddr, err)
		}
		n.addr, trans = t.LocalAddr(), t
		n.closer = append(closers{t}, n.closer...)
	}

	if !cfg.InMemory {
		if err := recoverFromPeersFile(cfg.Dir, rc, logs, stable, snaps, trans); err != nil {
			return nil, err
		}
	}
	has, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return nil, fmt.Errorf("store: inspect raft state: %w", err)
	}
	n.hasState.Store(has)
	if cfg.Bootstrap {
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter, ID: rc.LocalID, Address: n.addr,
			}}}
			if err := raft.BootstrapCluster(rc, logs, stable, snaps, trans, conf); err != nil {
				return nil, fmt.Errorf("store: bootstrap: %w", err)
			}
			n.hasState.Store(true)
		}
	}

	n.trans = trans
	r, err := raft.NewRaft(rc, raftFSM{f}, logs, stable, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("store: start raft: %w", err)
	}
	n.raft = r
	n.addrs.mu.Lock()
	n.addrs.conf = func() []raft.Server {
		fut := r.GetConfiguration() // answered at once, from raft's latest
		if fut.Error() != nil {
			return nil
		}
		return fut.Configuration().Servers
	}
	n.addrs.mu.Unlock()
	return n, nil
}

// close stops raft, then releases the transport and the stores.
func (n *raftNode) close() error {
	var errs []error
	if n.raft != nil {
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
	}
	errs = append(errs, n.closeStores())
	return errors.Join(errs...)
}

func (n *raftNode) closeStores() error {
	err := n.closer.Close()
	n.closer = nil
	return err
}

// fixSelfAddress updates this node's address in the raft configuration when
// it changed since the configuration was written (a restart on another
// port). Only the leader can do it; for a single voter it is always the one.
func (n *raftNode) fixSelfAddress(id raft.ServerID, await func(raft.Future) error) error {
	fut := n.raft.GetConfiguration()
	if err := await(fut); err != nil {
		return err
	}
	for _, s := range fut.Configuration().Servers {
		if s.ID == id && s.Address != n.addr && s.Suffrage == raft.Voter {
			return await(n.raft.AddVoter(id, n.addr, 0, membershipTimeout))
		}
	}
	return nil
}
