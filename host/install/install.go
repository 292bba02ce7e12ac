// Package install puts bundles on a node and moves them between nodes:
// the intake verifies, probes, installs and registers a bundle (Intake:
// 'plughost bundle add', a drop into the bundles dir, a fetch); a node
// serves the bundles installed in its plugins dir to its peers over the
// cluster RPC port (Server), fetches a version it must run but lacks from
// the peers that hold it (Fetcher) and hands what it received to the
// intake, records which bundles it holds (bundles/<node> in _sys), and
// removes versions no longer wanted (Keeper).
package install

import (
	"errors"
	"time"
)

// Errors of the package.
var (
	// ErrNoPeer means no other node could be asked for a bundle.
	ErrNoPeer = errors.New("no peer holds the bundle")
	// ErrCorrupt means a peer served a bundle whose executable is not the
	// catalog's: its bytes are refused.
	ErrCorrupt = errors.New("peer served a corrupt bundle")
)

// Bounds of a transfer.
const (
	// ChunkSize is the most archive bytes one FetchResponse carries.
	ChunkSize = 256 << 10
	// MaxArchive is the largest archive a node serves or takes: the bundle
	// intake's own limit on what an archive holds.
	MaxArchive = 1 << 30
	// idleTimeout ends a fetch from a peer that sent nothing for so long.
	idleTimeout = 20 * time.Second
)

// DefaultServeConcurrency is how many fetches a node serves at once.
const DefaultServeConcurrency = 4

// DefaultKeep is how many installed versions per plugin GC keeps, newest
// first, besides those running, desired, pinned or assigned.
const DefaultKeep = 3
