package sandbox

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

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
// no other key of this agent holds, no user in the user database has, and
// no other agent on the machine has locked.
func (s *Sandbox) allocate(key string) (uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if uid, ok := s.byName[key]; ok {
		return uid, nil
	}
	size := int(s.hi - s.lo + 1)
	tries := min(size*2, 4096)
	for i := range tries {
		uid := candidate(s.cfg.Identity, key, i, s.lo, s.hi)
		if other, taken := s.byUID[uid]; taken {
			s.log.Debug("plugin uid taken within the agent; trying another", "uid", uid, "for", key, "held_by", other)
			continue
		}
		if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
			s.log.Debug("plugin uid belongs to a user; trying another", "uid", uid, "user", u.Username)
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
