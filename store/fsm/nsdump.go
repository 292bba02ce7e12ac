package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tidwall/buntdb"
)

// A namespace dump is one namespace's keys at one revision in a canonical
// encoding: the same keys, values and expiry times always encode to the
// same bytes, so a checksum over the dump identifies its data. Rollouts
// keep one of a stateful plugin's namespace (host/rollout) and restore it
// with OpRestoreNamespace.
//
//	magic      [8]byte  "PHNSDUMP"
//	version    uvarint  1
//	namespace  uvarint length, bytes
//	keys       uvarint  how many entries follow
//	entries    in increasing key order, each:
//	  key        uvarint length (> 0), bytes
//	  value      uvarint length, bytes
//	  expires    uvarint  unix ms the key's TTL runs out at, 0 for never
//
// Every uvarint is in its shortest form and nothing follows the last
// entry. Revisions are not part of it: restored keys are written anew.
var dumpMagic = []byte("PHNSDUMP")

const (
	dumpVersion = 1
	// maxDumpKeyBytes bounds a key of a dump, as the store's API bounds a
	// key (local.MaxKeyBytes is smaller still).
	maxDumpKeyBytes = 64 << 10
)

// NamespaceDump is a namespace captured at one revision.
type NamespaceDump struct {
	Namespace string
	// Revision is the store revision the namespace was read at.
	Revision int64
	// Keys and Bytes are what the namespace held: its keys, and the bytes
	// of their keys and values (what its quota counts).
	Keys  int64
	Bytes int64
	// Data is the dump, nil when Bytes was over the limit the capture was
	// given.
	Data []byte
}

// DumpEntry is one key of a namespace dump.
type DumpEntry struct {
	Key, Value  []byte
	ExpiresAtMs int64
}

// CaptureNamespace reads namespace ns at the current revision and encodes
// it as a dump. With maxBytes > 0, a namespace holding more than maxBytes
// is not read: the dump comes back with its counts and no Data.
func (f *FSM) CaptureNamespace(ns string, maxBytes int64) (*NamespaceDump, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	u := f.usage[ns]
	d := &NamespaceDump{Namespace: ns, Revision: f.applied, Keys: u.Keys, Bytes: u.Bytes}
	if maxBytes > 0 && u.Bytes > maxBytes {
		return d, nil
	}
	b := appendDumpHeader(make([]byte, 0, 32+len(ns)+int(u.Bytes)+8*int(u.Keys)), ns, u.Keys)
	start, end := namespaceBounds(ns)
	var n int64
	var ierr error
	err := f.db.View(func(tx *buntdb.Tx) error {
		return tx.AscendRange("", start, end, func(k, v string) bool {
			_, key, ok := splitDataKey(k)
			rec, err := decodeRecord(v)
			if !ok || err != nil {
				ierr = fmt.Errorf("%w: key %q", errBadRecord, k)
				return false
			}
			b = appendDumpEntry(b, key, rec.value, rec.expiresAt)
			n++
			return true
		})
	})
	if err == nil {
		err = ierr
	}
	if err != nil {
		return nil, err
	}
	if n != u.Keys {
		return nil, fmt.Errorf("store: namespace %s holds %d keys, its usage says %d", ns, n, u.Keys)
	}
	d.Data = b
	return d, nil
}

func appendDumpHeader(b []byte, ns string, keys int64) []byte {
	b = append(b, dumpMagic...)
	b = binary.AppendUvarint(b, dumpVersion)
	b = binary.AppendUvarint(b, uint64(len(ns)))
	b = append(b, ns...)
	return binary.AppendUvarint(b, uint64(keys))
}

func appendDumpEntry(b []byte, key, value string, expiresAt int64) []byte {
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(value)))
	b = append(b, value...)
	return binary.AppendUvarint(b, uint64(expiresAt))
}

// EncodeDump is the dump of namespace ns holding entries, which must be in
// increasing key order.
func EncodeDump(ns string, entries []DumpEntry) []byte {
	b := appendDumpHeader(nil, ns, int64(len(entries)))
	for _, e := range entries {
		b = appendDumpEntry(b, string(e.Key), string(e.Value), e.ExpiresAtMs)
	}
	return b
}

// dumpReader reads a dump strictly.
type dumpReader struct{ p []byte }

var errShortDump = errors.New("truncated")

func (r *dumpReader) uvarint() (uint64, error) {
	v, n := binary.Uvarint(r.p)
	if n <= 0 {
		return 0, errShortDump
	}
	// Only the shortest spelling of a number is canonical.
	if n != uvarintLen(v) {
		return 0, errors.New("a number is not in its shortest form")
	}
	r.p = r.p[n:]
	return v, nil
}

func (r *dumpReader) bytes(max uint64) ([]byte, error) {
	n, err := r.uvarint()
	if err != nil {
		return nil, err
	}
	if n > max || n > uint64(len(r.p)) {
		return nil, fmt.Errorf("a length of %d bytes runs past the dump or its limit", n)
	}
	b := r.p[:n:n]
	r.p = r.p[n:]
	return b, nil
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// DecodeDump parses a dump, checking it is canonical. Its entries alias
// data. A malformed dump is an error wrapping ErrCorrupt.
func DecodeDump(data []byte) (ns string, entries []DumpEntry, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w: namespace snapshot: %v", ErrCorrupt, err)
		}
	}()
	if !bytes.HasPrefix(data, dumpMagic) {
		return "", nil, errors.New("bad magic: not a namespace snapshot")
	}
	r := &dumpReader{p: data[len(dumpMagic):]}
	v, err := r.uvarint()
	if err != nil {
		return "", nil, err
	}
	if v != dumpVersion {
		return "", nil, fmt.Errorf("format version %d, this build reads version %d", v, dumpVersion)
	}
	nsb, err := r.bytes(maxNamespaceLen)
	if err != nil {
		return "", nil, err
	}
	if len(nsb) == 0 || bytes.IndexByte(nsb, nsEnd) >= 0 {
		return "", nil, fmt.Errorf("namespace %q", nsb)
	}
	keys, err := r.uvarint()
	if err != nil {
		return "", nil, err
	}
	// The count is only a claim until the entries bear it out: an entry
	// takes at least four bytes.
	entries = make([]DumpEntry, 0, min(keys, uint64(len(r.p)/4)))
	for i := uint64(0); i < keys; i++ {
		var e DumpEntry
		if e.Key, err = r.bytes(maxDumpKeyBytes); err != nil {
			return "", nil, fmt.Errorf("entry %d: %v", i, err)
		}
		if len(e.Key) == 0 {
			return "", nil, fmt.Errorf("entry %d: empty key", i)
		}
		if n := len(entries); n > 0 && bytes.Compare(entries[n-1].Key, e.Key) >= 0 {
			return "", nil, fmt.Errorf("entry %d: keys out of order", i)
		}
		if e.Value, err = r.bytes(uint64(len(r.p))); err != nil {
			return "", nil, fmt.Errorf("entry %d: %v", i, err)
		}
		exp, err := r.uvarint()
		if err != nil {
			return "", nil, fmt.Errorf("entry %d: %v", i, err)
		}
		if exp > 1<<63-1 {
			return "", nil, fmt.Errorf("entry %d: expiry out of range", i)
		}
		e.ExpiresAtMs = int64(exp)
		entries = append(entries, e)
	}
	if len(r.p) > 0 {
		return "", nil, fmt.Errorf("%d bytes after the last entry", len(r.p))
	}
	return string(nsb), entries, nil
}
