package fsm

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/tidwall/buntdb"
)

// ErrCorrupt means a snapshot or backup file failed verification.
var ErrCorrupt = errors.New("store: corrupt backup")

// The snapshot file, used both for raft snapshots and for backups:
//
//	header  (40 bytes, big endian)
//	  magic       [8]byte  "PHSTORE\x1a"
//	  version     uint32   1
//	  flags       uint32   0
//	  revision    int64    the store revision the file holds
//	  keys        int64    how many keys the payload holds
//	  payloadLen  int64    bytes of payload
//	payload         a BuntDB save: one RESP "set <key> <value>" per key, in
//	                key order (loadable by buntdb.DB.Load)
//	checksum [32]byte  SHA-256 of header and payload
var snapshotMagic = [8]byte{'P', 'H', 'S', 'T', 'O', 'R', 'E', 0x1a}

const (
	snapshotVersion    = 1
	snapshotHeaderLen  = 40
	snapshotTrailerLen = sha256.Size
	maxNamespaceLen    = 64
)

// Item is one BuntDB key and value of a snapshot.
type Item struct{ Key, Value string }

// Snapshot is a captured state: the revision and every key.
type Snapshot struct {
	Revision int64
	Items    []Item
}

// respSize is the length of the RESP set command for it.
func (it *Item) respSize() int64 {
	bulk := func(n int) int64 { return int64(1 + len(strconv.Itoa(n)) + 2 + n + 2) }
	return 4 + bulk(3) + bulk(len(it.Key)) + bulk(len(it.Value))
}

// Write writes s as a snapshot file.
func (s *Snapshot) Write(w io.Writer) error {
	var payloadLen int64
	for i := range s.Items {
		payloadLen += s.Items[i].respSize()
	}
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 1<<20)
	var hdr [snapshotHeaderLen]byte
	copy(hdr[:8], snapshotMagic[:])
	binary.BigEndian.PutUint32(hdr[8:], snapshotVersion)
	binary.BigEndian.PutUint64(hdr[16:], uint64(s.Revision))
	binary.BigEndian.PutUint64(hdr[24:], uint64(len(s.Items)))
	binary.BigEndian.PutUint64(hdr[32:], uint64(payloadLen))
	bw.Write(hdr[:])
	var buf []byte
	for i := range s.Items {
		buf = appendSet(buf[:0], s.Items[i].Key, s.Items[i].Value)
		if _, err := bw.Write(buf); err != nil {
			return fmt.Errorf("store: write snapshot: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("store: write snapshot: %w", err)
	}
	if _, err := w.Write(h.Sum(nil)); err != nil {
		return fmt.Errorf("store: write snapshot: %w", err)
	}
	return nil
}

func appendSet(b []byte, key, value string) []byte {
	b = append(b, "*3\r\n$3\r\nset\r\n"...)
	for _, s := range [2]string{key, value} {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, '\r', '\n')
		b = append(b, s...)
		b = append(b, '\r', '\n')
	}
	return b
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// DecodeSnapshot verifies a whole snapshot file — magic, version, length,
// checksum and every record — and returns its contents.
func DecodeSnapshot(data []byte) (*Snapshot, error) {
	if len(data) < snapshotHeaderLen+snapshotTrailerLen {
		return nil, corrupt("file is %d bytes, shorter than a header and checksum (%d bytes): truncated or not a plughost backup",
			len(data), snapshotHeaderLen+snapshotTrailerLen)
	}
	if !bytes.Equal(data[:8], snapshotMagic[:]) {
		return nil, corrupt("bad magic %q: not a plughost store backup", data[:8])
	}
	if v := binary.BigEndian.Uint32(data[8:]); v != snapshotVersion {
		return nil, corrupt("format version %d, this build reads version %d", v, snapshotVersion)
	}
	rev := int64(binary.BigEndian.Uint64(data[16:]))
	keys := int64(binary.BigEndian.Uint64(data[24:]))
	payloadLen := binary.BigEndian.Uint64(data[32:])
	if want := uint64(len(data) - snapshotHeaderLen - snapshotTrailerLen); payloadLen != want {
		return nil, corrupt("header says %d payload bytes, file holds %d: truncated or padded", payloadLen, want)
	}
	body := data[:len(data)-snapshotTrailerLen]
	sum := sha256.Sum256(body)
	if !bytes.Equal(sum[:], data[len(body):]) {
		return nil, corrupt("SHA-256 checksum mismatch: the file was altered or damaged")
	}
	if rev < 0 || keys < 0 {
		return nil, corrupt("negative revision %d or key count %d", rev, keys)
	}
	items, err := parseItems(data[snapshotHeaderLen:len(body)], keys)
	if err != nil {
		return nil, err
	}
	return &Snapshot{Revision: rev, Items: items}, nil
}

// parseItems reads the RESP payload strictly: only "set" commands of data
// keys, in increasing key order, each with a well-formed record.
func parseItems(p []byte, keys int64) ([]Item, error) {
	const head = "*3\r\n$3\r\nset\r\n"
	// The header's count is only a claim until the payload bears it out:
	// every record starts with head, so no more than that many fit.
	items := make([]Item, 0, min(keys, int64(len(p)/len(head))))
	for len(p) > 0 {
		if !bytes.HasPrefix(p, []byte(head)) {
			return nil, corrupt("record %d: not a set command", len(items))
		}
		p = p[len(head):]
		var parts [2]string
		for i := range parts {
			s, rest, err := parseBulk(p)
			if err != nil {
				return nil, corrupt("record %d: %v", len(items), err)
			}
			parts[i], p = s, rest
		}
		it := Item{Key: parts[0], Value: parts[1]}
		ns, _, ok := splitDataKey(it.Key)
		if !ok || len(ns) > maxNamespaceLen {
			return nil, corrupt("record %d: key %q is not a store key", len(items), it.Key)
		}
		if n := len(items); n > 0 && items[n-1].Key >= it.Key {
			return nil, corrupt("record %d: keys out of order", n)
		}
		if _, err := decodeRecord(it.Value); err != nil {
			return nil, corrupt("record %d: %v", len(items), err)
		}
		items = append(items, it)
	}
	if int64(len(items)) != keys {
		return nil, corrupt("header says %d keys, payload holds %d", keys, len(items))
	}
	return items, nil
}

// parseBulk reads one RESP bulk string.
func parseBulk(p []byte) (string, []byte, error) {
	if len(p) == 0 || p[0] != '$' {
		return "", nil, errors.New("missing bulk string")
	}
	i := bytes.Index(p, []byte("\r\n"))
	if i < 2 || i > 12 {
		return "", nil, errors.New("bad bulk length")
	}
	n, err := strconv.Atoi(string(p[1:i]))
	if err != nil || n < 0 {
		return "", nil, errors.New("bad bulk length")
	}
	p = p[i+2:]
	if len(p) < n+2 || p[n] != '\r' || p[n+1] != '\n' {
		return "", nil, errors.New("bulk string runs past the payload")
	}
	return string(p[:n]), p[n+2:], nil
}

// load builds a database from verified items, with the expiry index and the
// namespace usage derived from the records.
func load(items []Item) (*buntdb.DB, map[string]Usage, error) {
	db, err := openDB()
	if err != nil {
		return nil, nil, err
	}
	usage := make(map[string]Usage)
	err = db.Update(func(tx *buntdb.Tx) error {
		for _, it := range items {
			ns, key, ok := splitDataKey(it.Key)
			rec, err := decodeRecord(it.Value)
			if !ok || err != nil {
				return corrupt("key %q is not a store record", it.Key)
			}
			if _, _, err := tx.Set(it.Key, it.Value, nil); err != nil {
				return err
			}
			if rec.expiresAt != 0 {
				if _, _, err := tx.Set(expiryKey(rec.expiresAt, ns, key), "", nil); err != nil {
					return err
				}
			}
			u := usage[ns]
			u.Keys++
			u.Bytes += size(key, rec.value)
			usage[ns] = u
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, usage, nil
}

// Namespace is the namespace of the item's key.
func (it *Item) Namespace() string {
	ns, _, _ := splitDataKey(it.Key)
	return ns
}

// Has reports whether the snapshot holds key in namespace ns.
func (s *Snapshot) Has(ns, key string) bool {
	for i := range s.Items {
		if n, k, ok := splitDataKey(s.Items[i].Key); ok && n == ns && k == key {
			return true
		}
	}
	return false
}
