package fsm

import (
	"encoding/json"
	"errors"
	"fmt"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// Fencing: a write a plugin instance makes carries a storev1.Fence with the
// singleton epoch the instance holds. A singleton's current epoch is the mod
// revision of the agent's key SingletonKey(plugin) in namespace
// SingletonNamespace, which the leader's placement controller rewrites
// whenever the singleton's active instance changes. A fenced write to the
// namespace of a singleton applies only at the current epoch, so an active
// that was cut off and replaced cannot change the state its successor owns.
// The check reads only the state the command applies to: it is as
// deterministic as the rest of apply.

// SingletonNamespace and SingletonKey name the record whose mod revision is
// a singleton's epoch (host/intent's singleton/<plugin> in _sys).
const SingletonNamespace = "_sys"

// SingletonKey is the key, in SingletonNamespace, of plugin's singleton
// record.
func SingletonKey(plugin string) []byte { return []byte("singleton/" + plugin) }

// ErrStaleEpoch is the sentinel every EpochError matches.
var ErrStaleEpoch = errors.New("store: write fenced")

// EpochError is a fenced write refused because its epoch is not its
// singleton's current one. Nothing of the write was applied.
type EpochError struct {
	// Plugin is the singleton, whose namespace the write was to.
	Plugin string
	// Epoch is the write's epoch; 0 when it carried none.
	Epoch int64
	// Current is the singleton's current epoch.
	Current int64
	// Active is the node the singleton's record names as active, or "".
	Active string
}

func (e *EpochError) Error() string {
	active := "it has no active"
	if e.Active != "" {
		active = "active on " + e.Active
	}
	switch {
	case e.Epoch == 0:
		return fmt.Sprintf("store: write without a singleton epoch refused: singleton %s's current epoch is %d (%s); only its active instance writes, with the epoch the agent gave it",
			e.Plugin, e.Current, active)
	case e.Epoch > e.Current:
		return fmt.Sprintf("store: write from epoch %d refused: singleton %s's current epoch is %d (%s); epoch %d was never its epoch",
			e.Epoch, e.Plugin, e.Current, active, e.Epoch)
	}
	return fmt.Sprintf("store: write from epoch %d refused: singleton %s's current epoch is %d (%s)", e.Epoch, e.Plugin, e.Current, active)
}

// Is makes errors.Is(err, ErrStaleEpoch) hold.
func (e *EpochError) Is(target error) bool { return target == ErrStaleEpoch }

// Reason is the google.rpc.ErrorInfo reason of the refusal.
func (e *EpochError) Reason() string {
	if e.Epoch > e.Current {
		return storev1.ReasonUnknownEpoch
	}
	return storev1.ReasonStaleEpoch
}

// checkFence refuses a fenced write to the namespace of a singleton whose
// current epoch is not the write's. An unfenced write, and a write to a
// namespace that is no singleton's, pass.
func (c *changeSet) checkFence(ns string, fence *storev1.Fence) error {
	if fence == nil || ns == SingletonNamespace {
		return nil
	}
	rec, ok, err := c.get(SingletonNamespace, SingletonKey(ns))
	if err != nil || !ok {
		return err
	}
	if fence.GetEpoch() == rec.modRev {
		return nil
	}
	// Only the refusal reads the record's value, for its message; a value
	// that does not decode leaves the active unnamed.
	var s struct{ Active string }
	_ = json.Unmarshal([]byte(rec.value), &s)
	return &EpochError{Plugin: ns, Epoch: fence.GetEpoch(), Current: rec.modRev, Active: s.Active}
}
