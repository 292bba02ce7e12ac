package fsm

import (
	"errors"
	"fmt"
)

// ErrQuotaExceeded is the sentinel every QuotaError matches.
var ErrQuotaExceeded = errors.New("store: quota exceeded")

// Quota bounds one namespace; zero fields are unlimited.
type Quota struct {
	MaxBytes int64
	MaxKeys  int64
}

// Usage is what one namespace holds: its keys, and the bytes of their keys
// and values.
type Usage struct {
	Keys  int64
	Bytes int64
}

// QuotaError says which limit a write would have crossed.
type QuotaError struct {
	Namespace string
	Have      int64  // what the namespace would hold after the write
	Max       int64  // the limit
	Unit      string // "keys" or "bytes"
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("store: namespace %q quota exceeded: %d %s > max %d %s (raise quotas.%s.max_%s, or default_quota.max_%s for every namespace, in the agent config)",
		e.Namespace, e.Have, e.Unit, e.Max, e.Unit, e.Namespace, e.Unit, e.Unit)
}

// Is makes errors.Is(err, ErrQuotaExceeded) hold.
func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExceeded }

// checkQuota refuses a change from before to after that crosses q. A change
// that does not grow a measure is always allowed, so a namespace already over
// a lowered quota can still shrink.
func checkQuota(ns string, q Quota, before, after Usage) error {
	if q.MaxKeys > 0 && after.Keys > q.MaxKeys && after.Keys > before.Keys {
		return &QuotaError{Namespace: ns, Have: after.Keys, Max: q.MaxKeys, Unit: "keys"}
	}
	if q.MaxBytes > 0 && after.Bytes > q.MaxBytes && after.Bytes > before.Bytes {
		return &QuotaError{Namespace: ns, Have: after.Bytes, Max: q.MaxBytes, Unit: "bytes"}
	}
	return nil
}
