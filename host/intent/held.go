package intent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// PrefixHeld is the prefix of the records of the bundles each node holds
// (area: fetch): bundles/<node>, written by that node alone, on start and
// after every install and removal.
const PrefixHeld = "bundles/"

// Held lists the plugin versions whose bundles a node has installed, each
// "name@version", sorted: the peers another node fetches a bundle from.
type Held struct {
	Node    string   `json:"node"`
	Bundles []string `json:"bundles"`
}

// HeldKey is the key of a node's Held record.
func HeldKey(node string) string { return PrefixHeld + node }

// Key is where the record is kept.
func (r *Held) Key() string { return HeldKey(r.Node) }

// HeldRef is the "name@version" form of a plugin version in a Held record.
func HeldRef(name, version string) string { return name + "@" + version }

// Has reports whether the node holds name's version.
func (r *Held) Has(name, version string) bool {
	_, found := slices.BinarySearch(r.Bundles, HeldRef(name, version))
	return found
}

// maxHeld bounds the versions one record lists.
const maxHeld = 100000

// Validate checks the record: every entry a valid name@version, sorted,
// without repeats.
func (r *Held) Validate() error {
	errs := []error{checkNode(r.Node)}
	if len(r.Bundles) > maxHeld {
		errs = append(errs, fmt.Errorf("%d bundles listed, more than %d", len(r.Bundles), maxHeld))
	}
	for i, ref := range r.Bundles {
		name, version, ok := strings.Cut(ref, "@")
		if !ok || checkPlugin(name) != nil || checkVersion(version) != nil {
			errs = append(errs, fmt.Errorf("%q is not name@version", ref))
			break
		}
		if i > 0 && r.Bundles[i-1] >= ref {
			errs = append(errs, fmt.Errorf("bundles are not sorted without repeats at %q", ref))
			break
		}
	}
	return errors.Join(errs...)
}

// Held reads every node's bundles record.
func (db *DB) Held(ctx context.Context) ([]Item[Held], []error, error) {
	return List[Held](ctx, db, PrefixHeld)
}

// PutHeld writes h, its bundles sorted without repeats, as its node's
// record.
func (db *DB) PutHeld(ctx context.Context, h *Held) error {
	r := &Held{Node: h.Node, Bundles: slices.Compact(slices.Sorted(slices.Values(h.Bundles)))}
	if r.Bundles == nil {
		r.Bundles = []string{}
	}
	_, err := db.Put(ctx, r)
	return err
}
