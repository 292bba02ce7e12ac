package fsm

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// Op is the kind of a command.
type Op uint8

// The commands the state machine applies. Their numbers are part of the
// durable log format: never renumber them.
const (
	// OpNoop changes nothing. A new leader applies one to learn that its
	// state machine has caught up with its term.
	OpNoop Op = 1
	// OpTxn runs a transaction; Put, Delete and DeleteRange are spelled as
	// transactions.
	OpTxn Op = 2
	// OpExpire removes keys whose TTL ran out, if they are unchanged.
	OpExpire Op = 3
	// OpRestore replaces the whole state with a verified snapshot file.
	OpRestore Op = 4
	// OpRestoreNamespace replaces one namespace with a namespace dump
	// already kept in the store (see NamespaceRestore).
	OpRestoreNamespace Op = 5
)

// commandFormat is the first byte of every encoded command.
const commandFormat = 1

// Command is one entry of the replicated log. Everything Apply needs to be
// deterministic travels inside it: the proposer's clock for TTLs and the
// quota in force for the namespace.
type Command struct {
	Op Op
	// NowMs is the proposing leader's wall clock (unix ms); a TTL counts
	// from it.
	NowMs int64
	// Quota is the limit of the transaction's namespace when proposed.
	Quota Quota
	// Txn is the transaction of an OpTxn.
	Txn *storev1.TxnRequest
	// Expire lists the keys an OpExpire removes.
	Expire []ExpireKey
	// Snapshot is the snapshot file an OpRestore installs.
	Snapshot []byte
	// Restore is what an OpRestoreNamespace restores.
	Restore *NamespaceRestore
}

// NamespaceRestore replaces Namespace with the namespace dump kept in
// chunks under the key prefix Source of SystemNamespace: their values, in
// key order, joined. The dump must have the checksum SHA256 and be of
// Namespace, or nothing changes (ErrCorrupt). Every replica reads the same
// chunks at the same index, so the restore is as deterministic as a
// transaction, and one entry of the log: no read sees it half done.
type NamespaceRestore struct {
	Namespace string
	Source    []byte
	SHA256    []byte
}

// ExpireKey names a key to expire and the mod revision its TTL belongs to.
type ExpireKey struct {
	Namespace   string
	Key         []byte
	ModRevision int64
}

// Field numbers of the command encoding (protobuf wire format).
const (
	fieldOp          = 1
	fieldNowMs       = 2
	fieldMaxBytes    = 3
	fieldMaxKeys     = 4
	fieldTxn         = 5
	fieldExpire      = 6
	fieldSnapshot    = 7
	fieldRestore     = 8
	fieldExpireNS    = 1
	fieldExpireKey   = 2
	fieldExpireModRv = 3
	fieldRestoreNS   = 1
	fieldRestoreSrc  = 2
	fieldRestoreSum  = 3
)

var errBadCommand = errors.New("malformed command")

// Encode spells c for the log.
func (c *Command) Encode() ([]byte, error) {
	b := make([]byte, 0, 64+len(c.Snapshot))
	b = append(b, commandFormat)
	b = protowire.AppendTag(b, fieldOp, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(c.Op))
	if c.NowMs != 0 {
		b = protowire.AppendTag(b, fieldNowMs, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(c.NowMs))
	}
	if c.Quota.MaxBytes != 0 {
		b = protowire.AppendTag(b, fieldMaxBytes, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(c.Quota.MaxBytes))
	}
	if c.Quota.MaxKeys != 0 {
		b = protowire.AppendTag(b, fieldMaxKeys, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(c.Quota.MaxKeys))
	}
	if c.Txn != nil {
		txn, err := proto.MarshalOptions{Deterministic: true}.Marshal(c.Txn)
		if err != nil {
			return nil, fmt.Errorf("encode txn: %w", err)
		}
		b = protowire.AppendTag(b, fieldTxn, protowire.BytesType)
		b = protowire.AppendBytes(b, txn)
	}
	for _, e := range c.Expire {
		var m []byte
		m = protowire.AppendTag(m, fieldExpireNS, protowire.BytesType)
		m = protowire.AppendString(m, e.Namespace)
		m = protowire.AppendTag(m, fieldExpireKey, protowire.BytesType)
		m = protowire.AppendBytes(m, e.Key)
		m = protowire.AppendTag(m, fieldExpireModRv, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(e.ModRevision))
		b = protowire.AppendTag(b, fieldExpire, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	if c.Snapshot != nil {
		b = protowire.AppendTag(b, fieldSnapshot, protowire.BytesType)
		b = protowire.AppendBytes(b, c.Snapshot)
	}
	if r := c.Restore; r != nil {
		var m []byte
		m = protowire.AppendTag(m, fieldRestoreNS, protowire.BytesType)
		m = protowire.AppendString(m, r.Namespace)
		m = protowire.AppendTag(m, fieldRestoreSrc, protowire.BytesType)
		m = protowire.AppendBytes(m, r.Source)
		m = protowire.AppendTag(m, fieldRestoreSum, protowire.BytesType)
		m = protowire.AppendBytes(m, r.SHA256)
		b = protowire.AppendTag(b, fieldRestore, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	return b, nil
}

// DecodeCommand parses a command written by Encode. Unknown fields are an
// error: a node must not half-understand a command its peers apply fully.
func DecodeCommand(b []byte) (*Command, error) {
	if len(b) == 0 || b[0] != commandFormat {
		return nil, fmt.Errorf("%w: unknown format", errBadCommand)
	}
	b = b[1:]
	c := &Command{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("%w: %v", errBadCommand, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && (num == fieldOp || num == fieldNowMs || num == fieldMaxBytes || num == fieldMaxKeys):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, fmt.Errorf("%w: %v", errBadCommand, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldOp:
				c.Op = Op(v)
			case fieldNowMs:
				c.NowMs = int64(v)
			case fieldMaxBytes:
				c.Quota.MaxBytes = int64(v)
			case fieldMaxKeys:
				c.Quota.MaxKeys = int64(v)
			}
		case typ == protowire.BytesType && (num == fieldTxn || num == fieldExpire || num == fieldSnapshot || num == fieldRestore):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, fmt.Errorf("%w: %v", errBadCommand, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldTxn:
				c.Txn = &storev1.TxnRequest{}
				if err := proto.Unmarshal(v, c.Txn); err != nil {
					return nil, fmt.Errorf("%w: txn: %v", errBadCommand, err)
				}
			case fieldExpire:
				e, err := decodeExpireKey(v)
				if err != nil {
					return nil, err
				}
				c.Expire = append(c.Expire, e)
			case fieldSnapshot:
				c.Snapshot = v
			case fieldRestore:
				r, err := decodeNamespaceRestore(v)
				if err != nil {
					return nil, err
				}
				c.Restore = r
			}
		default:
			return nil, fmt.Errorf("%w: unknown field %d", errBadCommand, num)
		}
	}
	switch c.Op {
	case OpNoop, OpExpire:
	case OpTxn:
		if c.Txn == nil {
			return nil, fmt.Errorf("%w: txn command without a txn", errBadCommand)
		}
	case OpRestore:
		if c.Snapshot == nil {
			return nil, fmt.Errorf("%w: restore command without a snapshot", errBadCommand)
		}
	case OpRestoreNamespace:
		if c.Restore == nil {
			return nil, fmt.Errorf("%w: namespace restore command without a restore", errBadCommand)
		}
	default:
		return nil, fmt.Errorf("%w: unknown op %d", errBadCommand, c.Op)
	}
	return c, nil
}

func decodeExpireKey(b []byte) (ExpireKey, error) {
	var e ExpireKey
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return e, fmt.Errorf("%w: expire: %v", errBadCommand, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == fieldExpireNS && typ == protowire.BytesType:
			v, n := protowire.ConsumeString(b)
			if n < 0 {
				return e, fmt.Errorf("%w: expire: %v", errBadCommand, protowire.ParseError(n))
			}
			e.Namespace, b = v, b[n:]
		case num == fieldExpireKey && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return e, fmt.Errorf("%w: expire: %v", errBadCommand, protowire.ParseError(n))
			}
			e.Key, b = v, b[n:]
		case num == fieldExpireModRv && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return e, fmt.Errorf("%w: expire: %v", errBadCommand, protowire.ParseError(n))
			}
			e.ModRevision, b = int64(v), b[n:]
		default:
			return e, fmt.Errorf("%w: expire: unknown field %d", errBadCommand, num)
		}
	}
	// A NUL ends the namespace in the key space: namespace "a\x00b" with
	// key "c" would name key "b\x00c" of namespace "a", and expiring it
	// would count against the wrong namespace and tell the wrong watchers.
	if e.Namespace == "" || strings.IndexByte(e.Namespace, nsEnd) >= 0 {
		return e, fmt.Errorf("%w: expire: namespace %q", errBadCommand, e.Namespace)
	}
	return e, nil
}

// decodeNamespaceRestore parses the restore of an OpRestoreNamespace. Every
// field is required, once.
func decodeNamespaceRestore(b []byte) (*NamespaceRestore, error) {
	r := &NamespaceRestore{}
	seen := 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("%w: restore: %v", errBadCommand, protowire.ParseError(n))
		}
		b = b[n:]
		if typ != protowire.BytesType || num < fieldRestoreNS || num > fieldRestoreSum || seen&(1<<num) != 0 {
			return nil, fmt.Errorf("%w: restore: unexpected field %d", errBadCommand, num)
		}
		seen |= 1 << num
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, fmt.Errorf("%w: restore: %v", errBadCommand, protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case fieldRestoreNS:
			r.Namespace = string(v)
		case fieldRestoreSrc:
			r.Source = v
		case fieldRestoreSum:
			r.SHA256 = v
		}
	}
	// The namespace restored is a plugin's, never the one holding the
	// chunks; the source is a prefix of keys in it.
	switch {
	case r.Namespace == "" || r.Namespace == SingletonNamespace || len(r.Namespace) > maxNamespaceLen ||
		strings.IndexByte(r.Namespace, nsEnd) >= 0:
		return nil, fmt.Errorf("%w: restore: namespace %q", errBadCommand, r.Namespace)
	case len(r.Source) == 0:
		return nil, fmt.Errorf("%w: restore: no source prefix", errBadCommand)
	case len(r.SHA256) != sha256.Size:
		return nil, fmt.Errorf("%w: restore: a checksum of %d bytes, not %d", errBadCommand, len(r.SHA256), sha256.Size)
	}
	return r, nil
}
