package store

import "github.com/plughost/plughost/store/local"

// Errors returned by the store. Match them with errors.Is; the gRPC server
// maps them to status codes. They are store/local's, which serves the API
// from each node's state machine.
var (
	// ErrNotLeader means the request needs the raft leader and this node is
	// not it. The message names the leader when one is known.
	ErrNotLeader = local.ErrNotLeader
	// ErrValueTooLarge means a value is larger than Config.MaxValueBytes.
	ErrValueTooLarge = local.ErrValueTooLarge
	// ErrQuotaExceeded means a write would cross its namespace's quota; the
	// write was not applied at all.
	ErrQuotaExceeded = local.ErrQuotaExceeded
	// ErrCompacted means a watch needs a revision the history no longer
	// holds: list again and watch from the list's revision + 1.
	ErrCompacted = local.ErrCompacted
	// ErrCorruptBackup means a backup failed verification; nothing was
	// changed.
	ErrCorruptBackup = local.ErrCorruptBackup
	// ErrInvalidNamespace means a namespace name is malformed or reserved.
	ErrInvalidNamespace = local.ErrInvalidNamespace
	// ErrInvalidRequest means a request is malformed: an empty key, a bad
	// transaction, an unknown consistency.
	ErrInvalidRequest = local.ErrInvalidRequest
	// ErrStaleEpoch means a plugin instance's write to its singleton's
	// namespace carried an epoch other than the singleton's current one,
	// or none: the instance is not the active. Nothing was changed.
	ErrStaleEpoch = local.ErrStaleEpoch
	// ErrCASFailed means a conditional Put or Delete found the key at
	// another mod revision; nothing was changed.
	ErrCASFailed = local.ErrCASFailed
	// ErrClosed means the store was closed.
	ErrClosed = local.ErrClosed
	// ErrOutcomeUnknown means a write's answer was lost after it reached
	// the leader: it may or may not have been applied. Read what it wrote
	// before writing it again.
	ErrOutcomeUnknown = local.ErrOutcomeUnknown
	// ErrNotEmpty means a restore without force found the store holding
	// data; nothing was changed.
	ErrNotEmpty = local.ErrNotEmpty
	// ErrBackupWithoutACL means a restore would replace a store whose ACLs
	// are bootstrapped with a backup without ACL records, which would
	// reopen 'acl bootstrap'; nothing was changed.
	ErrBackupWithoutACL = local.ErrBackupWithoutACL
	// ErrNoSpace means a node could not write its raft log for lack of disk
	// space: the write was not applied. Writes resume by themselves once
	// space is freed, or go on at another leader.
	ErrNoSpace = local.ErrNoSpace
)
