package store

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/hashicorp/raft"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/fsm"
	"github.com/plughost/plughost/store/local"
)

// MaxBackupBytes bounds a backup file Restore accepts: it travels through the
// raft log as one entry.
const MaxBackupBytes = 1 << 30

// Backup writes a consistent snapshot of the whole store to w: a header
// (magic, format version, revision), the keys, and a SHA-256 checksum. It
// reads linearizably, so it holds every write acknowledged before it began.
func (s *Store) Backup(ctx context.Context, w io.Writer) error {
	if err := s.linearize(ctx); err != nil {
		return err
	}
	snap, err := s.fsm.Capture()
	if err != nil {
		return s.fsmError(err)
	}
	return snap.Write(w)
}

// Restore replaces the whole store with a backup written by Backup. It reads
// and verifies the entire file — magic, version, length, checksum, every
// record — before it changes anything; a bad file fails with an error
// wrapping ErrCorruptBackup and the live data untouched. The restore then
// goes through the raft log, so every node installs it at one revision.
// Key revisions are restored as they were in the backup; watches across the
// restore end with ErrCompacted.
//
// A store that holds data, in any namespace (_sys too: the agent's plugin
// catalog, pins and history), is replaced only with opts.Force; without it
// Restore fails with an error wrapping ErrNotEmpty that names what the
// restore would replace.
func (s *Store) Restore(ctx context.Context, r io.Reader, opts RestoreOptions) (*storev1.RestoreResponse, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if s.node.raft.State() != raft.Leader {
		return nil, s.notLeader()
	}
	data, err := io.ReadAll(io.LimitReader(r, MaxBackupBytes+1))
	if err != nil {
		return nil, fmt.Errorf("store: read backup: %w", err)
	}
	if len(data) > MaxBackupBytes {
		return nil, fmt.Errorf("%w: backup is larger than %d bytes", ErrInvalidRequest, MaxBackupBytes)
	}
	snap, err := fsm.DecodeSnapshot(data)
	if err != nil {
		return nil, err
	}
	for _, it := range snap.Items {
		if err := local.ValidNamespace(it.Namespace()); err != nil {
			return nil, fmt.Errorf("%w: a key is in namespace %q: %v", ErrCorruptBackup, it.Namespace(), err)
		}
	}
	if held := s.heldData(ctx); len(held) > 0 && !opts.Force {
		return nil, notEmpty(held)
	}
	if !snap.Has(SystemNamespace, SystemACLBootstrapKey) && s.hasKey(ctx, SystemNamespace, SystemACLBootstrapKey) {
		// Force or not: the backup would drop every token, and the first
		// to ask would get a management token from 'acl bootstrap'.
		return nil, fmt.Errorf("%w: it was taken before its cluster's ACLs were bootstrapped, and restoring it would drop every token of this cluster and reopen 'acl bootstrap' to whoever asks first; nothing was changed. Restore it into an agent with an empty data dir (given -acl-initial-management-file, so it bootstraps with your token), or restore a backup taken since ACLs were bootstrapped",
			ErrBackupWithoutACL)
	}
	res, err := s.propose(ctx, &fsm.Command{Op: fsm.OpRestore, Snapshot: data})
	if err != nil {
		return nil, err
	}
	return &storev1.RestoreResponse{Revision: res.Index, Keys: res.Keys}, nil
}

// SystemACLPrefix is where host/acl keeps its records (tokens, policies)
// in SystemNamespace. Every store holds some from its first leader on, so
// they alone do not make a store one that holds data for Restore (which
// replaces them with the backup's, as it does the rest of _sys).
const SystemACLPrefix = "acl/"

// SystemACLBootstrapKey is the key in SystemNamespace that says the
// cluster's ACLs are bootstrapped (host/acl).
const SystemACLBootstrapKey = SystemACLPrefix + "bootstrap"

// hasKey reports whether this node's copy holds key in ns.
func (s *Store) hasKey(ctx context.Context, ns, key string) bool {
	resp, err := s.eng.Get(ctx, &storev1.GetRequest{Namespace: ns, Key: []byte(key), Consistency: storev1.Consistency_CONSISTENCY_STALE})
	return err == nil && resp.GetKv() != nil
}

// heldData is the usage of each namespace that holds data, _sys left out
// when it holds ACL records only.
func (s *Store) heldData(ctx context.Context) map[string]fsm.Usage {
	held := s.fsm.Namespaces()
	u, ok := held[SystemNamespace]
	if !ok {
		return held
	}
	var acl int64
	var page []byte
	for {
		resp, err := s.eng.List(ctx, &storev1.ListRequest{Namespace: SystemNamespace, Prefix: []byte(SystemACLPrefix),
			KeysOnly: true, Consistency: storev1.Consistency_CONSISTENCY_STALE, PageToken: page})
		if err != nil {
			return held
		}
		acl += int64(len(resp.GetKvs()))
		if page = resp.GetNextPageToken(); len(page) == 0 {
			break
		}
	}
	if acl >= u.Keys {
		delete(held, SystemNamespace)
	}
	return held
}

// RestoreOptions shape a Restore.
type RestoreOptions struct {
	// Force lets the restore replace a store that holds data.
	Force bool
}

// notEmpty says what a restore would replace: each namespace with data,
// _sys first.
func notEmpty(held map[string]fsm.Usage) error {
	names := make([]string, 0, len(held))
	for ns := range held {
		if ns != SystemNamespace {
			names = append(names, ns)
		}
	}
	slices.Sort(names)
	var parts []string
	if _, ok := held[SystemNamespace]; ok {
		names = append([]string{SystemNamespace}, names...)
	}
	for _, ns := range names {
		parts = append(parts, fmt.Sprintf("%s (%s)", ns, keys(held[ns].Keys)))
	}
	return fmt.Errorf("%w in %s; nothing was changed: a restore replaces every namespace with the backup's, %s (the agent's plugin catalog, pins and history) included. Restore with force to replace them ('plughost store restore -force FILE'), or into an agent with an empty data dir",
		ErrNotEmpty, strings.Join(parts, ", "), SystemNamespace)
}

func keys(n int64) string {
	if n == 1 {
		return "1 key"
	}
	return fmt.Sprintf("%d keys", n)
}
