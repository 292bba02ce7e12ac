package cluster

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/hashicorp/serf/serf"
)

// peersFile records, in the cluster's data dir, the gossip addresses of the
// other members last seen alive. serf's own snapshot flushes a member's
// join only with a later write, so a node killed soon after its peers
// joined it forgets them, and one whose -join names only itself (the
// node the others joined) then stays alone until a peer happens to reach
// it. joinLoop tries these addresses besides -join.
const peersFile = "members.json"

// readPeers returns the recorded addresses; none when there is no record
// or it cannot be read (it is only a hint).
func readPeers(dir string) []string {
	if dir == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(dir, peersFile))
	if err != nil {
		return nil
	}
	var recorded []string
	if json.Unmarshal(b, &recorded) != nil {
		return nil
	}
	var addrs []string
	for _, a := range recorded {
		if _, _, err := net.SplitHostPort(a); err == nil && len(addrs) < maxRecordedPeers {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// maxRecordedPeers bounds the addresses tried from peersFile: a cluster
// has at most a few dozen members, and the file is only a hint.
const maxRecordedPeers = 64

// recordPeers writes the addresses of the alive members other than this
// node, when they changed since the last record.
func (c *Cluster) recordPeers(members []serf.Member) {
	if c.cfg.DataDir == "" {
		return
	}
	var addrs []string
	for _, m := range members {
		if m.Name == c.cfg.NodeName || m.Status != serf.StatusAlive {
			continue
		}
		addrs = append(addrs, net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))))
	}
	slices.Sort(addrs)
	if len(addrs) == 0 || slices.Equal(addrs, c.recorded) {
		return
	}
	if err := writePeers(c.cfg.DataDir, addrs); err != nil {
		c.log.Warn("recording the cluster's members for the next start", "error", err)
		return
	}
	c.recorded = addrs
}

func writePeers(dir string, addrs []string) error {
	b, err := json.Marshal(addrs)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, peersFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, peersFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
