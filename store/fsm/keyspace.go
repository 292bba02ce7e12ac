package fsm

import (
	"encoding/hex"
	"strconv"
	"strings"
)

// The BuntDB key space. Keys are Go strings holding raw bytes; BuntDB orders
// them bytewise, so the layout below keeps every namespace's keys contiguous
// and in the order of their bytes:
//
//	d <namespace> 0x00 <key>            -> record (see record.go)
//	e <16 hex digits of expires_at_ms> <namespace> 0x00 <key> -> ""
//
// A namespace never contains 0x00, so no key of one namespace can be spelled
// as a key of another, whatever bytes the key holds. The "e" entries index
// the keys that carry a TTL by expiry time; they are derived from the records
// and rebuilt, not saved, by snapshots.
const (
	dataTag   = 'd'
	expiryTag = 'e'
	nsEnd     = 0x00
)

// dataKey is the BuntDB key of key in namespace ns.
func dataKey(ns string, key []byte) string {
	var b strings.Builder
	b.Grow(2 + len(ns) + len(key))
	b.WriteByte(dataTag)
	b.WriteString(ns)
	b.WriteByte(nsEnd)
	b.Write(key)
	return b.String()
}

// namespaceBounds is the half-open BuntDB key range holding all of ns.
func namespaceBounds(ns string) (start, end string) {
	return string(dataTag) + ns + "\x00", string(dataTag) + ns + "\x01"
}

// splitDataKey parses a BuntDB data key back into its namespace and key.
func splitDataKey(k string) (ns string, key string, ok bool) {
	if len(k) < 2 || k[0] != dataTag {
		return "", "", false
	}
	i := strings.IndexByte(k[1:], nsEnd)
	if i <= 0 {
		return "", "", false
	}
	return k[1 : 1+i], k[2+i:], true
}

// expiryKey is the BuntDB key indexing key in ns by its expiry time.
func expiryKey(expiresAtMs int64, ns string, key string) string {
	var b strings.Builder
	b.Grow(18 + len(ns) + len(key))
	b.WriteByte(expiryTag)
	b.WriteString(expiryStamp(expiresAtMs))
	b.WriteString(ns)
	b.WriteByte(nsEnd)
	b.WriteString(key)
	return b.String()
}

// expiryStamp is the fixed-width, order-preserving spelling of a time.
func expiryStamp(ms int64) string {
	var buf [8]byte
	for i := 7; i >= 0; i-- {
		buf[i] = byte(ms)
		ms >>= 8
	}
	return hex.EncodeToString(buf[:])
}

// expiryUpperBound is the smallest expiry key for keys expiring after ms.
func expiryUpperBound(ms int64) string {
	return string(expiryTag) + expiryStamp(ms+1)
}

// splitExpiryKey parses an expiry index key.
func splitExpiryKey(k string) (expiresAtMs int64, ns string, key string, ok bool) {
	if len(k) < 18 || k[0] != expiryTag {
		return 0, "", "", false
	}
	at, err := strconv.ParseUint(k[1:17], 16, 64)
	if err != nil {
		return 0, "", "", false
	}
	ns, key, ok = splitDataKey(string(dataTag) + k[17:])
	return int64(at), ns, key, ok
}

// PrefixEnd is the smallest key greater than every key starting with
// prefix, or nil when there is none (the prefix is all 0xff bytes).
func PrefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
