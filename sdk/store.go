package sdk

import (
	"context"
	"iter"
	"time"
)

// Store is a plugin's namespace of the replicated key-value store. Keys are
// strings, values bytes (up to the agent's value limit, 512 KiB by default).
// Every write gets a revision, the position of the write in the cluster's
// log; each key carries the revision that created it, the revision of its
// last write and how many writes it has had.
//
// Reads are linearizable unless the view says otherwise (WithConsistency).
// The Store remembers the highest revision this plugin instance has written
// and makes Session reads wait for it, so a plugin always reads its own
// writes, even on a follower.
//
// Errors are the package's sentinels (ErrNotFound, ErrConflict, ErrLimit,
// ErrCompacted, ErrUnavailable, ErrOutcomeUnknown, ErrFenced,
// ErrPermission) or the context's; test for them with errors.Is. The Store
// sends each request once: a write that fails with ErrOutcomeUnknown may
// have been applied. Every write carries the instance's singleton epoch
// (see Role). A Store is safe for concurrent use.
type Store interface {
	// Get reads key. It returns ErrNotFound, and a zero KV, when the key does
	// not exist.
	Get(ctx context.Context, key string) (KV, error)
	// Put writes key and returns it as written. With opts.IfModRevision set
	// it writes only if the key is unchanged, else returns ErrConflict.
	Put(ctx context.Context, key string, value []byte, opts PutOptions) (KV, error)
	// Delete removes key and reports whether it existed. With
	// opts.IfModRevision set it deletes only if the key is unchanged, else
	// returns ErrConflict.
	Delete(ctx context.Context, key string, opts DeleteOptions) (bool, error)
	// DeleteRange removes every key that starts with prefix, which must not
	// be empty, and returns how many it removed.
	DeleteRange(ctx context.Context, prefix string) (int64, error)
	// List reads one page of the keys that start with prefix (every key for
	// ""), in key order. Page.Next continues it; ListAll reads every page.
	List(ctx context.Context, prefix string, opts ListOptions) (Page, error)
	// Txn evaluates t.If and applies t.Then when every compare holds, else
	// t.Else, atomically. A failed compare is not an error: see
	// TxnResult.Succeeded.
	Txn(ctx context.Context, t Txn) (TxnResult, error)
	// Watch streams the changes to keys that start with prefix, from
	// fromRevision on (0: from now), in revision order, with no gaps and no
	// duplicates. The sequence ends after the first error it yields: ctx's
	// error when ctx ends, ErrCompacted when fromRevision is older than the
	// store's history, ErrUnavailable when the agent ends the stream.
	// Resume from the last event's Revision + 1.
	Watch(ctx context.Context, prefix string, fromRevision int64) iter.Seq2[Event, error]
	// WithConsistency returns a view of the store whose reads (Get, List)
	// use c. Writes are the same, and the view shares the read-your-writes
	// revision with the Store it came from.
	WithConsistency(c Consistency) Store
}

// Consistency selects how fresh a read must be.
type Consistency int

const (
	// Linearizable reads reflect every write acknowledged before the read
	// began, cluster-wide. It is the default and costs a trip to the leader.
	Linearizable Consistency = iota
	// Session reads answer from the local node once it has applied every
	// write this plugin instance made (read-your-writes).
	Session
	// Stale reads answer from the local node at once; they may miss recent
	// writes, this plugin's own included.
	Stale
)

// String returns the consistency's name.
func (c Consistency) String() string {
	switch c {
	case Linearizable:
		return "linearizable"
	case Session:
		return "session"
	case Stale:
		return "stale"
	}
	return "unknown"
}

// KV is a key, its value and its revisions.
type KV struct {
	// Key is the key, within the plugin's namespace.
	Key string
	// Value is the value; nil in a keys-only listing.
	Value []byte
	// CreateRevision is the revision of the write that created the key.
	CreateRevision int64
	// ModRevision is the revision of the key's last write; pass it as
	// IfModRevision to write only if no one else has since.
	ModRevision int64
	// Version counts the writes to the key since it was created.
	Version int64
	// ExpiresAt is when the key expires, or the zero time for never.
	ExpiresAt time.Time
}

// PutOptions adjusts a Put. The zero value writes unconditionally, forever.
type PutOptions struct {
	// TTL makes the key expire this long after the write; zero keeps it.
	TTL time.Duration
	// IfModRevision, when set, makes the put a compare-and-set: it succeeds
	// only when the key's mod revision is *IfModRevision, and 0 means the key
	// must not exist. Otherwise Put returns ErrConflict. A compare-and-set
	// loop passes &kv.ModRevision from its Get: after ErrNotFound the zero
	// KV's ModRevision is 0, which means "create only".
	IfModRevision *int64
}

// DeleteOptions adjusts a Delete. The zero value deletes unconditionally.
type DeleteOptions struct {
	// IfModRevision, when set, deletes only when the key's mod revision is
	// *IfModRevision; otherwise Delete returns ErrConflict.
	IfModRevision *int64
}

// ListOptions adjusts a List.
type ListOptions struct {
	// Limit caps the keys of one page; 0 means the store's default page.
	Limit int
	// Page continues a listing: pass the previous Page.Next.
	Page string
	// KeysOnly leaves values out.
	KeysOnly bool
}

// Page is one page of a listing.
type Page struct {
	// KVs are the page's keys, in key order.
	KVs []KV
	// Next continues the listing; empty when it is complete.
	Next string
	// Revision is the store revision this page observed.
	Revision int64
}

// EventType says what happened to a key.
type EventType int

const (
	// EventPut is a write of the key.
	EventPut EventType = iota + 1
	// EventDelete is a delete of the key.
	EventDelete
	// EventExpire is a delete decided by the key's TTL.
	EventExpire
)

// String returns the event type's name.
func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	case EventExpire:
		return "expire"
	}
	return "unknown"
}

// Event is one change to one key.
type Event struct {
	// Type says what happened.
	Type EventType
	// KV is the key after a put, or the key (without value) that was removed.
	KV KV
	// Revision is the revision of the write that made the change.
	Revision int64
}

// ListAll returns every key that starts with prefix, a page at a time, in key
// order. It stops at the first error, which it yields. Each page is read
// separately, so the whole listing is not one snapshot: keys written while
// it runs may or may not appear. Use KV.ModRevision, or a Watch from the
// first page's revision, when that matters.
func ListAll(ctx context.Context, st Store, prefix string) iter.Seq2[KV, error] {
	return func(yield func(KV, error) bool) {
		var opts ListOptions
		for {
			page, err := st.List(ctx, prefix, opts)
			if err != nil {
				yield(KV{}, err)
				return
			}
			for _, kv := range page.KVs {
				if !yield(kv, nil) {
					return
				}
			}
			if page.Next == "" {
				return
			}
			opts.Page = page.Next
		}
	}
}
