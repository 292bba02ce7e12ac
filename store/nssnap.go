package store

import (
	"context"
	"crypto/sha256"
	"fmt"

	"github.com/plughost/plughost/store/fsm"
	"github.com/plughost/plughost/store/local"
)

// NamespaceDump is one namespace captured at one revision, in a canonical
// encoding (see fsm.NamespaceDump).
type NamespaceDump = fsm.NamespaceDump

// CaptureNamespace reads namespace ns linearizably, at one revision, as a
// dump. With maxBytes > 0 a namespace holding more than maxBytes (keys and
// values) is not read: the dump has its counts and no Data. Only the
// leader captures; elsewhere it fails with ErrNotLeader.
func (s *Store) CaptureNamespace(ctx context.Context, ns string, maxBytes int64) (*NamespaceDump, error) {
	if err := local.ValidPluginNamespace(ns); err != nil {
		return nil, err
	}
	if err := s.linearize(ctx); err != nil {
		return nil, err
	}
	d, err := s.fsm.CaptureNamespace(ns, maxBytes)
	return d, s.fsmError(err)
}

// RestoreNamespace replaces plugin namespace ns with the dump kept in
// chunks under key prefix source of SystemNamespace (their values joined in
// key order), as one entry of the raft log: every node installs it at one
// revision and no read sees it half done. The dump must have the SHA-256
// sum and be of ns; otherwise nothing changes and the error wraps
// ErrCorruptBackup. No quota refuses it. It returns the revision and how
// many keys the namespace holds. Only the leader restores.
func (s *Store) RestoreNamespace(ctx context.Context, ns, source string, sum []byte) (rev, keys int64, err error) {
	if err := local.ValidPluginNamespace(ns); err != nil {
		return 0, 0, err
	}
	if source == "" || len(sum) != sha256.Size {
		return 0, 0, fmt.Errorf("%w: a namespace restore needs a source prefix and a SHA-256 sum", ErrInvalidRequest)
	}
	res, err := s.propose(ctx, &fsm.Command{Op: fsm.OpRestoreNamespace, NowMs: s.cfg.clock().UnixMilli(),
		Restore: &fsm.NamespaceRestore{Namespace: ns, Source: []byte(source), SHA256: sum}})
	if err != nil {
		return 0, 0, err
	}
	return res.Index, res.Keys, nil
}

// NamespaceUsage is what namespace ns holds on this node, its keys and the
// bytes of their keys and values, and the quota it is held to (zero
// fields: unlimited).
func (s *Store) NamespaceUsage(ns string) (keys, bytes int64, quota Quota) {
	u := s.fsm.Usage(ns)
	return u.Keys, u.Bytes, s.cfg.quotaFor(ns)
}
