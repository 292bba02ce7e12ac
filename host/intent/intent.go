// Package intent holds the cluster-wide records in the store's _sys
// namespace: what should run (intent), where it runs (assignment, with the
// singletons' active and standby), and what runs (observation), with typed,
// validating reads, writes and watches over them.
//
// Each kind of record has exactly one writer:
//
//	intent/<plugin>            operator actions (bundle add, pin, unpin, rollback)
//	assign/<node>/<plugin>     the leader-only placement controller
//	singleton/<plugin>         the placement controller, in the txn of the assignments
//	placement/<plugin>         the placement controller: what it could not place and why
//	observe/<node>/<plugin>    that node's supervisor
//
// Records are JSON. Whatever is read is input from another node: Decode
// checks the record against its key and its own rules, and a record that
// fails is reported (a *RecordError), never used.
//
// # Singleton epochs
//
// The mod revision of singleton/<plugin> (the raft index of the txn that
// wrote it) is the singleton's epoch. The controller writes that record only
// when the active node changes, in the same txn as the assignments, so the
// epoch grows exactly on failover (a new standby alone leaves it, and the
// active's epoch, unchanged; Singleton.Standby is the standby chosen with
// the active, the current standby is the assignment whose role is standby).
// The active's Assignment.Epoch is then stamped with that revision by a
// follow-up txn (compared against the singleton's mod revision) of the
// same controller pass; a new leader stamps any active whose Epoch differs.
// An active assignment with Epoch 0 is not stamped yet: a node must not
// start it as active until it is. Readers that need the epoch now (the
// store's fencing) read the mod revision of singleton/<plugin>.
package intent

import (
	"time"

	"github.com/plughost/plughost/host/bundle"
)

// Key prefixes inside store.SystemNamespace.
const (
	PrefixIntent    = "intent/"
	PrefixAssign    = "assign/"
	PrefixSingleton = "singleton/"
	PrefixPlacement = "placement/"
	PrefixObserve   = "observe/"
)

// Roles of an assigned instance. Only singletons have one.
const (
	RoleNone    = ""
	RoleActive  = "active"
	RoleStandby = "standby"
)

// Severities of a placement diagnostic.
const (
	SeverityError   = "error"
	SeverityWarning = "warning"
)

// Intent is what should run of one plugin, cluster-wide: the target version
// (the pin, else the highest registered version) and the placement spec of
// that version's manifest.
type Intent struct {
	Plugin    string           `json:"plugin"`
	Version   string           `json:"version"`
	Placement bundle.Placement `json:"placement"`
	Pinned    bool             `json:"pinned"`
}

// Assignment is one plugin version a node must run. For a singleton Role is
// active or standby, and an active's Epoch is the singleton's epoch (see the
// package doc); 0 elsewhere. Draining marks an instance kept only until its
// replacement elsewhere is healthy (the node is drained, or no longer
// matches the constraint): it should get calls only when no other instance
// can take them, and it is removed once the replacement serves.
type Assignment struct {
	Node     string `json:"node"`
	Plugin   string `json:"plugin"`
	Version  string `json:"version"`
	Role     string `json:"role,omitempty"`
	Epoch    int64  `json:"epoch,omitempty"`
	Draining bool   `json:"draining,omitempty"`
}

// Singleton names the nodes of a singleton plugin's active instance and, when
// it has one, its warm standby. Its key's mod revision is the epoch. Active
// is empty while no node can take the singleton: the epoch still grows, so
// the last active's writes are refused.
type Singleton struct {
	Plugin  string `json:"plugin"`
	Active  string `json:"active"`
	Standby string `json:"standby,omitempty"`
}

// PlacementStatus is the placement controller's last word on a plugin that
// it could not place as its spec wants: how many instances it wanted and
// placed, and why. No record means everything wanted is placed.
type PlacementStatus struct {
	Plugin   string    `json:"plugin"`
	Severity string    `json:"severity"` // SeverityError or SeverityWarning
	Wanted   int       `json:"wanted"`
	Placed   int       `json:"placed"`
	Message  string    `json:"message"`
	Since    time.Time `json:"since"`
}

// Observation is what a node runs of one plugin, as that node reports it.
type Observation struct {
	Node      string    `json:"node"`
	Plugin    string    `json:"plugin"`
	Version   string    `json:"version"`
	Role      string    `json:"role,omitempty"`
	Epoch     int64     `json:"epoch,omitempty"`
	State     string    `json:"state"`
	Healthy   bool      `json:"healthy"`
	Since     time.Time `json:"since"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"last_error,omitempty"`
	Services  []string  `json:"services,omitempty"`
	// Draining is the version of an instance the node drains (its
	// replacement serves, or it is no longer assigned), and InFlight the
	// calls still in flight in it.
	Draining string `json:"draining,omitempty"`
	InFlight int64  `json:"in_flight,omitempty"`
}

// IntentKey is the key of a plugin's intent.
func IntentKey(plugin string) string { return PrefixIntent + plugin }

// AssignKey is the key of a node's assignment of a plugin.
func AssignKey(node, plugin string) string { return PrefixAssign + node + "/" + plugin }

// AssignPrefix is the prefix of a node's assignments.
func AssignPrefix(node string) string { return PrefixAssign + node + "/" }

// SingletonKey is the key of a singleton plugin's record.
func SingletonKey(plugin string) string { return PrefixSingleton + plugin }

// PlacementKey is the key of a plugin's placement diagnostic.
func PlacementKey(plugin string) string { return PrefixPlacement + plugin }

// ObserveKey is the key of a node's observation of a plugin.
func ObserveKey(node, plugin string) string { return PrefixObserve + node + "/" + plugin }

// ObservePrefix is the prefix of a node's observations.
func ObservePrefix(node string) string { return PrefixObserve + node + "/" }

// Key is where the intent is kept.
func (r *Intent) Key() string { return IntentKey(r.Plugin) }

// Key is where the assignment is kept.
func (r *Assignment) Key() string { return AssignKey(r.Node, r.Plugin) }

// Key is where the singleton record is kept.
func (r *Singleton) Key() string { return SingletonKey(r.Plugin) }

// Key is where the placement diagnostic is kept.
func (r *PlacementStatus) Key() string { return PlacementKey(r.Plugin) }

// Key is where the observation is kept.
func (r *Observation) Key() string { return ObserveKey(r.Node, r.Plugin) }
