package intent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/plughost/plughost/host/bundle"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// PrefixHeld is the prefix, in store.SystemNamespace, of the records of
// the bundles each node holds (area: fetch): bundles/<node>, written by
// that node alone, on start and after every install and removal.
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
func (h *Held) Key() string { return HeldKey(h.Node) }

// HeldRef is the "name@version" form of a plugin version in a Held record.
func HeldRef(name, version string) string { return name + "@" + version }

// Has reports whether the node holds name's version.
func (h *Held) Has(name, version string) bool {
	_, found := slices.BinarySearch(h.Bundles, HeldRef(name, version))
	return found
}

// ErrInvalidHeld means a bundles/<node> record fails its checks: it is not
// used to pick peers.
var ErrInvalidHeld = errors.New("invalid bundles record")

// heldNodeRE is the agent's rule for -node (host/agent Config.Validate).
var heldNodeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// maxHeld bounds the versions one record lists.
const maxHeld = 100000

// DecodeHeld decodes and checks the record at key: its node must be the
// key's, and every entry a valid name@version, sorted, without repeats.
func DecodeHeld(key, value []byte) (*Held, error) {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("bundles record %q in %s: %s: %w", key, store.SystemNamespace, fmt.Sprintf(format, args...), ErrInvalidHeld)
	}
	var h Held
	dec := json.NewDecoder(strings.NewReader(string(value)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, refuse("not JSON of a bundles record (%v)", err)
	}
	if !heldNodeRE.MatchString(h.Node) || HeldKey(h.Node) != string(key) {
		return nil, refuse("node %q does not match its key", h.Node)
	}
	if len(h.Bundles) > maxHeld {
		return nil, refuse("%d bundles listed, more than %d", len(h.Bundles), maxHeld)
	}
	for i, ref := range h.Bundles {
		name, version, ok := strings.Cut(ref, "@")
		if !ok || !bundle.ValidName(name) || !bundle.ValidVersion(version) {
			return nil, refuse("%q is not name@version", ref)
		}
		if i > 0 && h.Bundles[i-1] >= ref {
			return nil, refuse("bundles are not sorted without repeats at %q", ref)
		}
	}
	return &h, nil
}

// PutHeld writes h, sorted, as its node's record.
func PutHeld(ctx context.Context, st *store.Store, h *Held) error {
	h.Bundles = slices.Clone(h.Bundles)
	slices.Sort(h.Bundles)
	h.Bundles = slices.Compact(h.Bundles)
	if h.Bundles == nil {
		h.Bundles = []string{}
	}
	val, err := json.Marshal(h)
	if err != nil {
		return err
	}
	_, err = st.Put(ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(h.Key()), Value: val})
	return err
}

// ListHeld reads every node's record from this node's copy of the store
// (consistency: stale reads, which need no leader). Records that fail
// DecodeHeld are returned as errors, apart.
func ListHeld(ctx context.Context, st *store.Store) (held []*Held, refused []error, err error) {
	var token []byte
	for {
		resp, err := st.List(ctx, &storev1.ListRequest{Namespace: store.SystemNamespace, Prefix: []byte(PrefixHeld),
			PageToken: token, Consistency: storev1.Consistency_CONSISTENCY_STALE})
		if err != nil {
			return nil, nil, err
		}
		for _, kv := range resp.GetKvs() {
			h, err := DecodeHeld(kv.GetKey(), kv.GetValue())
			if err != nil {
				refused = append(refused, err)
				continue
			}
			held = append(held, h)
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			return held, refused, nil
		}
	}
}
