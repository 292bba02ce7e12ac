package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/plughost/plughost/host/governance"
)

// Every agent on a machine shares the cgroup parent (cgroup_parent, default
// "plughost") and keeps to a cgroup of its own in it,
// <cgroup_parent>/agent-<node>-<hash of the data dir>, in which each of its
// plugin instances gets a cgroup. The agent records it in
// <data-dir>/cgroup.json. It cleans, at start and through its reaper, only
// what is in that cgroup.
const (
	cgroupRecordFile = "cgroup.json"
	cgroupLockFile   = "cgroup.lock"
	// cgroupLockWait bounds how long a starting agent waits for the reaper
	// of an earlier run on its data dir to finish.
	cgroupLockWait = 30 * time.Second
)

// cgroupRecord is what <data-dir>/cgroup.json holds: the agent's own
// cgroup <Parent>/<Group>, and the data dir it belongs to.
type cgroupRecord struct {
	Parent  string `json:"parent"`
	Group   string `json:"group"`
	DataDir string `json:"data_dir"`
}

// ownCgroup names the agent's own cgroup below cfg.CgroupParent after its
// node name and a short hash of its absolute data dir: two agents that run
// at once never share a data dir (it is locked), so never a cgroup.
func ownCgroup(cfg *Config) (cgroupRecord, error) {
	dir, sum, err := dataDirHash(cfg)
	if err != nil {
		return cgroupRecord{}, err
	}
	node := cfg.Node
	if len(node) > 64 {
		node = node[:64]
	}
	return cgroupRecord{Parent: cfg.CgroupParent, Group: "agent-" + node + "-" + sum, DataDir: dir}, nil
}

// dataDirHash is the absolute data dir and a short hash of it, which names
// what the agent owns outside its data dir.
func dataDirHash(cfg *Config) (dir, sum string, err error) {
	dir, err = filepath.Abs(cfg.DataDir)
	if err != nil {
		return "", "", fmt.Errorf("agent: data dir: %w", err)
	}
	h := sha256.Sum256([]byte(dir))
	return dir, hex.EncodeToString(h[:4]), nil
}

func readCgroupRecord(dataDir string) (cgroupRecord, error) {
	var rec cgroupRecord
	b, err := os.ReadFile(filepath.Join(dataDir, cgroupRecordFile))
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("%s: %w", filepath.Join(dataDir, cgroupRecordFile), err)
	}
	return rec, nil
}

func writeCgroupRecord(dataDir string, rec cgroupRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	file := filepath.Join(dataDir, cgroupRecordFile)
	if err := os.WriteFile(file+".tmp", append(b, '\n'), privateFileMode); err != nil {
		return err
	}
	return os.Rename(file+".tmp", file)
}

// lockCgroup takes <data-dir>/cgroup.lock. The agent holds it while it runs
// and shares it with its reaper, which holds it until it has cleaned up
// after the agent: so a starting agent takes it only once the reaper of an
// earlier run on the same data dir is done, and never cleans, nor starts
// plugins, while that reaper still kills what is in the cgroup. It waits
// at most wait.
func lockCgroup(ctx context.Context, dataDir string, wait time.Duration) (*os.File, error) {
	file := filepath.Join(dataDir, cgroupLockFile)
	f, err := os.OpenFile(file, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("agent: cgroup lock: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("agent: cgroup lock %s: %w", file, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("agent: the cgroup reaper of an earlier run on data dir %s still holds %s after %s: wait until it exits (see 'ps -ef | grep \"plughost reaper\"'), then start the agent again", dataDir, file, wait)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// startGovernance takes the agent's own cgroup and sets a.gov: it waits for
// the reaper of an earlier run on this data dir, cleans what that run left,
// records the cgroup in the data dir and starts this run's reaper. stop,
// called once the plugins are stopped, removes the agent's cgroups (and the
// cgroup parent, if no other agent uses it) and tells the reaper that
// nothing is left to do.
func (a *Agent) startGovernance(ctx context.Context) (stop func(), err error) {
	cfg := &a.cfg
	log := a.log.Named("governance")
	if cfg.DisableCgroups {
		a.gov, err = governance.NewManager(governance.Config{Parent: cfg.CgroupParent, Disabled: true, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("agent: resource governance: %w", err)
		}
		return func() {}, nil
	}
	own, err := ownCgroup(cfg)
	if err != nil {
		return nil, err
	}
	lock, err := lockCgroup(ctx, own.DataDir, cgroupLockWait)
	if err != nil {
		return nil, err
	}
	a.cleanRecorded(own)
	a.gov, err = governance.NewManager(governance.Config{Parent: own.Parent, Group: own.Group, Logger: log})
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("agent: resource governance: %w", err)
	}
	if a.gov.Mode() == governance.ModeNone {
		lock.Close()
		return func() {}, nil
	}
	if err := writeCgroupRecord(own.DataDir, own); err != nil {
		a.log.Warn("could not record the agent's cgroup in its data dir; a restart with another node name or cgroup_parent will not find what this run leaves", "error", err)
	}
	if cleaned, err := a.gov.CleanStale(); err != nil {
		a.log.Warn("cleaning stale cgroups failed", "error", err)
	} else if len(cleaned) > 0 {
		a.log.Info("removed cgroups left by an earlier run", "cgroups", cleaned)
	}
	var r *reaper
	if len(cfg.ReaperCommand) > 0 {
		command := append(slices.Clone(cfg.ReaperCommand), "-cgroup-parent", own.Parent, "-group", own.Group)
		if sockets, err := socketDir(cfg); err == nil {
			command = append(command, "-sockets", sockets)
		}
		if r, err = startReaper(command, lock); err != nil {
			a.log.Warn("no cgroup reaper: plugin children may outlive an agent that is killed", "error", err)
		}
	}
	return func() {
		if err := a.gov.Close(); err != nil {
			a.log.Warn("could not remove the agent's cgroups; its reaper tries again", "error", err)
		} else if r != nil {
			r.nothingLeft()
		}
		if r != nil {
			r.stop()
		}
		lock.Close()
	}, nil
}

// sameAgent reports whether group is a cgroup name this agent's data dir
// would have given: "agent-<any node>-<the data dir's hash>", as own is.
// The record is a file, and no one else's cgroup is cleaned on its word.
func sameAgent(group, own string) bool {
	i := strings.LastIndexByte(own, '-')
	if i < 0 || !strings.HasPrefix(group, "agent-") || strings.ContainsAny(group, "/.") {
		return false
	}
	node, ok := strings.CutSuffix(strings.TrimPrefix(group, "agent-"), own[i:])
	return ok && node != ""
}

// cleanRecorded cleans what an earlier run on this data dir left in the
// cgroup it recorded, where that is not own: the node name or
// cgroup_parent changed since. A record naming another data dir (this one
// was copied or moved) proves nothing about whose that cgroup is, and it
// is left alone.
func (a *Agent) cleanRecorded(own cgroupRecord) {
	prev, err := readCgroupRecord(own.DataDir)
	switch {
	case errors.Is(err, os.ErrNotExist) || prev == own:
		return
	case err != nil:
		a.log.Warn("could not read the cgroup an earlier run recorded; what it left there stays", "error", err)
		return
	case prev.DataDir != own.DataDir:
		a.log.Info("the data dir records the cgroup of another data dir (it was copied or moved); leaving that cgroup alone", "recorded", prev.Parent+"/"+prev.Group, "of", prev.DataDir)
		return
	case !sameAgent(prev.Group, own.Group):
		a.log.Warn("the data dir records a cgroup that is not named after it; leaving that cgroup alone", "recorded", prev.Parent+"/"+prev.Group, "own", own.Parent+"/"+own.Group)
		return
	}
	m, err := governance.NewManager(governance.Config{Parent: prev.Parent, Group: prev.Group, Logger: a.log.Named("governance")})
	if err == nil {
		var cleaned []string
		if cleaned, err = m.CleanStale(); len(cleaned) > 0 {
			a.log.Info("removed cgroups left by an earlier run", "cgroups", cleaned)
		}
		err = errors.Join(err, m.Close())
	}
	if err != nil {
		a.log.Warn("could not clean the cgroup an earlier run recorded", "cgroup", prev.Parent+"/"+prev.Group, "error", err)
	}
}
