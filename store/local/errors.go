package local

import (
	"errors"
	"fmt"

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
	// ErrTxnTooLarge means a transaction's encoded size is larger than
	// Config.MaxTxnBytes; nothing was applied.
	ErrTxnTooLarge = errors.New("store: transaction too large")
	// ErrTooManyWatches means a watch would take a client, or the node,
	// past its limit of watches open at once.
	ErrTooManyWatches = errors.New("store: too many watches")
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
	// ErrStaleEpoch means a plugin instance's write to its singleton's
	// namespace carried an epoch other than the singleton's current one,
	// or none: the instance is not the active. Nothing was changed. The
	// error is a *fsm.EpochError naming both epochs.
	ErrStaleEpoch = fsm.ErrStaleEpoch
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
	// ErrBackupWithoutACL means a restore would replace a store whose ACLs
	// are bootstrapped with a backup that holds no ACL records; nothing
	// was changed.
	ErrBackupWithoutACL = errors.New("store: the backup holds no ACL records")
	// ErrNoSpace means a node could not write its raft log for lack of disk
	// space: the write was not applied. Writes resume by themselves once
	// space is freed, or go on at another leader.
	ErrNoSpace = errors.New("store: no space left on device")
)

// LimitError is a request refused for crossing a configured limit: it
// matches its sentinel (ErrTxnTooLarge, ErrTooManyWatches, ...) and names
// the agent config key of the limit, which travels to clients in the
// status's google.rpc.ErrorInfo metadata (storev1.MetadataLimit).
type LimitError struct {
	Err   error  // the sentinel
	Limit string // the config key, such as "max_txn_bytes"
	Msg   string // the whole message, the sentinel's text first
}

func (e *LimitError) Error() string { return e.Msg }
func (e *LimitError) Unwrap() error { return e.Err }

// limitErrorf returns a LimitError whose message is the sentinel's text,
// ": ", and the formatted rest.
func limitErrorf(sentinel error, limit, format string, args ...any) error {
	return &LimitError{Err: sentinel, Limit: limit, Msg: sentinel.Error() + ": " + fmt.Sprintf(format, args...)}
}

// closedError translates the state machine's and the watch hub's ErrClosed
// into the store's.
func closedError(err error) error {
	if errors.Is(err, fsm.ErrClosed) || errors.Is(err, watch.ErrClosed) {
		return ErrClosed
	}
	return err
}
