package store

import (
	"context"
	"fmt"
	"io"

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
func (s *Store) Restore(ctx context.Context, r io.Reader) (*storev1.RestoreResponse, error) {
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
	res, err := s.propose(ctx, &fsm.Command{Op: fsm.OpRestore, Snapshot: data})
	if err != nil {
		return nil, err
	}
	return &storev1.RestoreResponse{Revision: res.Index, Keys: res.Keys}, nil
}
