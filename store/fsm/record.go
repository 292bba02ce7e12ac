package fsm

import (
	"encoding/binary"
	"errors"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// recordFormat is the first byte of every stored record.
const recordFormat = 1

// record is what the store keeps for one key. value aliases the BuntDB
// string it was decoded from; strings are immutable, so that is safe.
type record struct {
	createRev int64
	modRev    int64
	version   int64
	expiresAt int64 // unix ms, 0 for never
	value     string
}

var errBadRecord = errors.New("malformed record")

// encode spells r as a BuntDB value.
func (r *record) encode() string {
	b := make([]byte, 0, 1+4*binary.MaxVarintLen64+len(r.value))
	b = append(b, recordFormat)
	b = binary.AppendUvarint(b, uint64(r.createRev))
	b = binary.AppendUvarint(b, uint64(r.modRev))
	b = binary.AppendUvarint(b, uint64(r.version))
	b = binary.AppendUvarint(b, uint64(r.expiresAt))
	b = append(b, r.value...)
	return string(b)
}

// decodeRecord parses a BuntDB value written by encode.
func decodeRecord(s string) (record, error) {
	var r record
	if len(s) == 0 || s[0] != recordFormat {
		return r, errBadRecord
	}
	p := s[1:]
	fields := [4]*int64{&r.createRev, &r.modRev, &r.version, &r.expiresAt}
	for _, f := range fields {
		v, n := uvarintString(p)
		if n <= 0 || v > 1<<63-1 {
			return r, errBadRecord
		}
		*f = int64(v)
		p = p[n:]
	}
	r.value = p
	return r, nil
}

// uvarintString is binary.Uvarint over a string, without copying it.
func uvarintString(s string) (uint64, int) {
	var x uint64
	var shift uint
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, -1
			}
			return x | uint64(c)<<shift, i + 1
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
	return 0, 0
}

// keyValue is the wire form of the record of key.
func (r *record) keyValue(key string, withValue bool) *storev1.KeyValue {
	kv := &storev1.KeyValue{
		Key:             []byte(key),
		CreateRevision:  r.createRev,
		ModRevision:     r.modRev,
		Version:         r.version,
		ExpiresAtUnixMs: r.expiresAt,
	}
	if withValue {
		kv.Value = []byte(r.value)
	}
	return kv
}

// size is what the record counts against its namespace's byte quota.
func size(key, value string) int64 { return int64(len(key) + len(value)) }
