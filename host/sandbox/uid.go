package sandbox

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoUID: every uid of the range is taken.
var ErrNoUID = errors.New("sandbox: no free uid in plugin_uid_range")

// candidate is the i-th uid tried for key: a hash of the agent's identity,
// the key and i, into [lo, hi]. The first is the same at every call, so a
// plugin keeps its uid across restarts; later ones are tried when it is
// taken.
func candidate(identity, key string, i int, lo, hi uint32) uint32 {
	h := sha256.Sum256([]byte(identity + "\x00" + key + "\x00" + strconv.Itoa(i)))
	return lo + binary.BigEndian.Uint32(h[:4])%(hi-lo+1)
}

// allocate returns key's uid: the one it has, or the first candidate that
// no other key of this agent holds, no process on the machine runs with
// (as uid or gid), systemd has not given a DynamicUser= service, no
// subordinate id range (/etc/subuid, /etc/subgid) includes, no user or
// group in the user database has, and no other agent on the machine has
// locked.
func (s *Sandbox) allocate(key string) (uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if uid, ok := s.byName[key]; ok {
		return uid, nil
	}
	running := idsInUse()
	subIDs := s.subIDRanges()
	// Hashed candidates first, so that a plugin keeps its uid; then every
	// uid of the range in turn, so that a range with few free uids left
	// still gives them.
	size := int(s.hi - s.lo + 1)
	hashed := min(size*2, 4096)
	tries := hashed + min(size, 1<<16)
	for i := range tries {
		uid := candidate(s.cfg.Identity, key, i, s.lo, s.hi)
		if i >= hashed {
			uid = s.lo + uint32(i-hashed)
		}
		id := strconv.FormatUint(uint64(uid), 10)
		if other, taken := s.byUID[uid]; taken {
			s.log.Debug("plugin uid taken within the agent; trying another", "uid", uid, "for", key, "held_by", other)
			continue
		}
		if running[uid] {
			s.log.Debug("plugin uid is the uid or gid of a running process; trying another", "uid", uid)
			continue
		}
		if s.systemdDynamic(id) {
			s.log.Debug("plugin uid is a systemd DynamicUser= uid; trying another", "uid", uid, "dir", s.cfg.DynamicUIDDir)
			continue
		}
		if r, ok := subIDs.find(uid); ok {
			s.log.Debug("plugin uid is in a subordinate id range; trying another", "uid", uid, "file", r.file, "owner", r.owner)
			continue
		}
		if u, err := user.LookupId(id); err == nil {
			s.log.Debug("plugin uid belongs to a user; trying another", "uid", uid, "user", u.Username)
			continue
		}
		if g, err := user.LookupGroupId(id); err == nil {
			s.log.Debug("plugin gid belongs to a group; trying another", "gid", uid, "group", g.Name)
			continue
		}
		if !s.lock(uid) {
			s.log.Debug("plugin uid locked by another agent; trying another", "uid", uid)
			continue
		}
		s.byName[key], s.byUID[uid] = uid, key
		return uid, nil
	}
	return 0, fmt.Errorf("%w %s after %d tries (%d plugins hold one here): widen the range", ErrNoUID, s.cfg.UIDRange, tries, len(s.byName))
}

// systemdDynamic says whether systemd has an entry for uid (decimal) in
// its dynamic-uid dir: the lock file of a uid it gave a DynamicUser=
// service, or the "direct:" symlink it makes beside it.
func (s *Sandbox) systemdDynamic(id string) bool {
	for _, name := range []string{id, "direct:" + id} {
		if _, err := os.Lstat(filepath.Join(s.cfg.DynamicUIDDir, name)); err == nil {
			return true
		}
	}
	return false
}

// subIDRange is one line of an /etc/subuid-style file: count ids from
// start, given to owner.
type subIDRange struct {
	file, owner  string
	start, count uint64
}

type subIDRanges []subIDRange

func (rs subIDRanges) find(id uint32) (subIDRange, bool) {
	for _, r := range rs {
		if uint64(id) >= r.start && uint64(id)-r.start < r.count {
			return r, true
		}
	}
	return subIDRange{}, false
}

// subIDRanges reads the ranges of the configured subordinate id files. A
// file that does not exist has none; one that cannot be read is logged.
func (s *Sandbox) subIDRanges() subIDRanges {
	var out subIDRanges
	for _, file := range s.cfg.SubIDFiles {
		b, err := os.ReadFile(file)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("could not read a subordinate id file; plugin uids may fall in its ranges", "file", file, "error", err)
			}
			continue
		}
		out = append(out, parseSubIDs(file, string(b))...)
	}
	return out
}

// parseSubIDs parses "owner:start:count" lines, skipping comments and
// lines that are not such.
func parseSubIDs(file, text string) subIDRanges {
	var out subIDRanges
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 {
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, subIDRange{file: file, owner: f[0], start: start, count: count})
	}
	return out
}

// lock takes the machine-wide lock of uid, held until Close.
func (s *Sandbox) lock(uid uint32) bool {
	if s.cfg.LockDir == "" {
		return true
	}
	// Made again: another agent that stopped may have removed it empty.
	_ = os.MkdirAll(s.cfg.LockDir, 0o700)
	f, err := os.OpenFile(filepath.Join(s.cfg.LockDir, strconv.FormatUint(uint64(uid), 10)), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		s.log.Warn("could not open a uid lock; the uid is not given", "uid", uid, "error", err)
		return false
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return false
	}
	s.locks[uid] = f
	return true
}
