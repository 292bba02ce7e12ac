package local

import (
	"errors"

	"github.com/plughost/plughost/store/fsm"
	"github.com/plughost/plughost/store/watch"
)

// Errors returned by the store. Match them with errors.Is; Server maps them
// to status codes. Package store re-exports them under the same names.
var (
	// ErrNotLeader means the request needs the raft leader and this node is
	// not it. The message names the leader when one is known. A Memory
	// store is always its own leader.
	ErrNotLeader = errors.New("store: not the leader")
	// ErrValueTooLarge means a value is larger than Config.MaxValueBytes.
	ErrValueTooLarge = errors.New("store: value too large")
	// ErrQuotaExceeded means a write would cross its namespace's quota; the
	// write was not applied at all.
	ErrQuotaExceeded = fsm.ErrQuotaExceeded
	// ErrCompacted means a watch needs a revision the history no longer
	// holds: list again and watch from the list's revision + 1.
	ErrCompacted = watch.ErrCompacted
	// ErrCorruptBackup means a backup failed verification; nothing was
	// changed.
	ErrCorruptBackup = fsm.ErrCorrupt
	// ErrInvalidNamespace means a namespace name is malformed or reserved.
	ErrInvalidNamespace = errors.New("store: invalid namespace")
	// ErrInvalidRequest means a request is malformed: an empty key, a bad
	// transaction, an unknown consistency.
	ErrInvalidRequest = errors.New("store: invalid request")
	// ErrCASFailed means a conditional Put or Delete found the key at
	// another mod revision; nothing was changed.
	ErrCASFailed = errors.New("store: compare-and-set failed")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrOutcomeUnknown means a write reached the leader, or its log, and
	// its answer was lost: leadership changed, the leader stopped or the
	// connection to it broke. It may or may not have been applied, so
	// sending it again may apply it twice: read what it wrote first. The
	// error also matches its cause (ErrNotLeader, ErrClosed or the
	// context's). Over gRPC it is UNAVAILABLE with the ErrorInfo reason
	// storev1.ReasonOutcomeUnknown.
	ErrOutcomeUnknown = errors.New("store: the write may or may not have been applied")
	// ErrNotEmpty means a restore without force found the store holding
	// data; nothing was changed.
	ErrNotEmpty = errors.New("store: the store already holds data")
	// ErrNoSpace means a node could not write its raft log for lack of disk
	// space: the write was not applied. Writes resume by themselves once
	// space is freed, or go on at another leader.
	ErrNoSpace = errors.New("store: no space left on device")
)

// closedError translates the state machine's and the watch hub's ErrClosed
// into the store's.
func closedError(err error) error {
	if errors.Is(err, fsm.ErrClosed) || errors.Is(err, watch.ErrClosed) {
		return ErrClosed
	}
	return err
}
