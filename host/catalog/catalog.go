// Package catalog keeps the registered plugin versions, the operator's pins
// and the version history in the store's reserved _sys namespace, so every
// node of a cluster agrees on what should run.
package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"golang.org/x/mod/semver"

	"github.com/plughost/plughost/host/bundle"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// Errors the catalog returns.
var (
	// ErrImmutable means a version is registered already with another digest.
	ErrImmutable = errors.New("versions are immutable")
	// ErrUnknownPlugin means no version of the plugin is registered.
	ErrUnknownPlugin = errors.New("unknown plugin")
	// ErrUnknownVersion means the plugin has no such registered version.
	ErrUnknownVersion = errors.New("unknown version")
)

// Key prefixes inside store.SystemNamespace.
const (
	prefixCatalog = "catalog/"
	prefixPin     = "pins/"
	prefixHistory = "history/"
)

// Entry is one registered version of a plugin.
type Entry struct {
	Name         string           `json:"name"`
	Version      string           `json:"version"`
	SHA256       string           `json:"sha256"`
	Manifest     *bundle.Manifest `json:"manifest"`
	RegisteredAt time.Time        `json:"registered_at"`
	Actor        string           `json:"actor"`
}

// Pin is an operator's choice of version.
type Pin struct {
	Version string    `json:"version"`
	Actor   string    `json:"actor"`
	At      time.Time `json:"at"`
	// Action is what made the pin: "pin" (or empty), or "rollback" for
	// 'plugin rollback'; the rollout it starts says so (intent.Trigger*).
	Action string `json:"action,omitempty"`
	// RestoreData asks the rollout this pin starts to restore the plugin's
	// namespace to the snapshot taken before the rollout it undoes
	// ('plugin rollback -restore-data').
	RestoreData bool `json:"restore_data,omitempty"`
	// ModRevision is the store revision the pin was written at (GetPin
	// sets it; not stored): what orders it against other records, where
	// At is another node's clock.
	ModRevision int64 `json:"-"`
}

// Record is one line of a plugin's version history.
type Record struct {
	At       time.Time `json:"at"`
	Actor    string    `json:"actor"`
	Action   string    `json:"action"` // register, pin, unpin, rollback, swap, rollout
	From     string    `json:"from,omitempty"`
	To       string    `json:"to,omitempty"`
	Strategy string    `json:"strategy,omitempty"`
	Outcome  string    `json:"outcome,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Node     string    `json:"node,omitempty"`
	// Rollout is the ID of the rollout an Action "rollout" record tells of.
	Rollout string `json:"rollout,omitempty"`
}

// Catalog reads and writes the catalog in a store.
type Catalog struct {
	st *store.Store
	// consistency of reads; linearizable (the zero value) but for Local.
	consistency storev1.Consistency
}

// Local is the catalog read from this node's copy of the store, which may
// lag behind the cluster's: for answering what can be answered when there
// is no leader. Writes go to the leader as ever.
func (c *Catalog) Local() *Catalog {
	return &Catalog{st: c.st, consistency: storev1.Consistency_CONSISTENCY_STALE}
}

// New returns a catalog kept in st.
func New(st *store.Store) *Catalog { return &Catalog{st: st} }

func catalogKey(name, version string) []byte { return []byte(prefixCatalog + name + "/" + version) }

// Register records a verified bundle's manifest. Registering the same name,
// version and digest again is a no-op that reports already=true; the same
// name and version with another digest is refused with ErrImmutable.
func (c *Catalog) Register(ctx context.Context, m *bundle.Manifest, actor string) (already bool, err error) {
	if err := m.Validate(); err != nil {
		return false, fmt.Errorf("catalog: registering %s %s: %w", m.Name, m.Version, err)
	}
	e := Entry{Name: m.Name, Version: m.Version, SHA256: m.SHA256, Manifest: m, RegisteredAt: time.Now().UTC(), Actor: actor}
	val, err := json.Marshal(e)
	if err != nil {
		return false, err
	}
	key := catalogKey(m.Name, m.Version)
	resp, err := c.commitWithIntent(ctx, m.Name, change{
		cmps:    []*storev1.Compare{{Key: key, Target: &storev1.Compare_Exists{Exists: false}}},
		ops:     []*storev1.TxnOp{{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: key, Value: val}}}},
		failure: []*storev1.TxnOp{{Op: &storev1.TxnOp_Get{Get: &storev1.TxnGet{Key: key}}}},
		after: func(vs []*Entry, pin *Pin) ([]*Entry, *Pin) {
			return append(vs, &Entry{Name: m.Name, Version: m.Version, SHA256: m.SHA256, Manifest: m}), pin
		},
	})
	if err != nil {
		return false, fmt.Errorf("catalog: registering %s %s: %w", m.Name, m.Version, err)
	}
	if !resp.GetSucceeded() {
		old, err := decodeEntry(key, resp.GetResults()[0].GetKv().GetValue())
		if err != nil {
			return false, err
		}
		if old.SHA256 != m.SHA256 {
			return false, fmt.Errorf("%s %s is already registered with sha256 %s, this bundle has %s: %w (give the new build a new version)",
				m.Name, m.Version, short(old.SHA256), short(m.SHA256), ErrImmutable)
		}
		return true, nil
	}
	_ = c.AddHistory(ctx, m.Name, Record{Actor: actor, Action: "register", To: m.Version, Outcome: "registered"})
	return false, nil
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12] + "…"
	}
	return digest
}

// Get returns one registered version. A record that fails the checks of
// decodeEntry is an error matching ErrInvalidRecord.
func (c *Catalog) Get(ctx context.Context, name, version string) (*Entry, error) {
	resp, err := c.st.Get(ctx, &storev1.GetRequest{Namespace: store.SystemNamespace, Key: catalogKey(name, version), Consistency: c.consistency})
	if err != nil {
		return nil, err
	}
	if resp.GetKv() == nil {
		if vs, _ := c.Versions(ctx, name); len(vs) == 0 {
			return nil, fmt.Errorf("plugin %q: %w (add a bundle first; see 'plughost plugin list')", name, ErrUnknownPlugin)
		}
		return nil, fmt.Errorf("plugin %q has no version %q: %w (see 'plughost plugin versions %s')", name, version, ErrUnknownVersion, name)
	}
	return decodeEntry(resp.GetKv().GetKey(), resp.GetKv().GetValue())
}

// Versions lists a plugin's registered versions, lowest first. Records that
// fail the checks of decodeEntry are left out: Refused lists them.
func (c *Catalog) Versions(ctx context.Context, name string) ([]*Entry, error) {
	entries, _, err := c.list(ctx, prefixCatalog+name+"/")
	if err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool { return Less(entries[i].Version, entries[j].Version) })
	return entries, nil
}

// Refused lists the catalog records of a plugin that fail the checks of
// decodeEntry, each a *RecordError that names the record and the fix.
func (c *Catalog) Refused(ctx context.Context, name string) ([]error, error) {
	_, refused, err := c.list(ctx, prefixCatalog+name+"/")
	return refused, err
}

// All lists every registered version of every plugin, by name then version.
// A plugin whose records were all refused (see Refused) is listed with no
// versions, so that what watches the catalog can say why it does not run.
func (c *Catalog) All(ctx context.Context) (map[string][]*Entry, error) {
	entries, refused, err := c.list(ctx, prefixCatalog)
	if err != nil {
		return nil, err
	}
	out := map[string][]*Entry{}
	for _, err := range refused {
		var re *RecordError
		if errors.As(err, &re) {
			if name, ok := PluginOfKey([]byte(re.Key)); ok {
				out[name] = out[name][:0:0]
			}
		}
	}
	for _, e := range entries {
		out[e.Name] = append(out[e.Name], e)
	}
	for _, vs := range out {
		sort.Slice(vs, func(i, j int) bool { return Less(vs[i].Version, vs[j].Version) })
	}
	return out, nil
}

// Names lists the registered plugins, sorted.
func (c *Catalog) Names(ctx context.Context) ([]string, error) {
	all, err := c.All(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// list reads the catalog records under prefix: the valid ones, and the
// refusals of the others.
func (c *Catalog) list(ctx context.Context, prefix string) (valid []*Entry, refused []error, err error) {
	err = c.scan(ctx, prefix, func(kv *storev1.KeyValue) error {
		e, err := decodeEntry(kv.GetKey(), kv.GetValue())
		if err != nil {
			refused = append(refused, err)
			return nil
		}
		valid = append(valid, e)
		return nil
	})
	return valid, refused, err
}

func (c *Catalog) scan(ctx context.Context, prefix string, fn func(*storev1.KeyValue) error) error {
	var token []byte
	for {
		resp, err := c.st.List(ctx, &storev1.ListRequest{Namespace: store.SystemNamespace, Prefix: []byte(prefix), PageToken: token, Consistency: c.consistency})
		if err != nil {
			return err
		}
		for _, kv := range resp.GetKvs() {
			if err := fn(kv); err != nil {
				return err
			}
		}
		token = resp.GetNextPageToken()
		if len(token) == 0 {
			return nil
		}
	}
}

// Less orders versions by semantic version precedence.
func Less(a, b string) bool { return semver.Compare("v"+a, "v"+b) < 0 }

// GetPin returns the plugin's pin, or nil.
func (c *Catalog) GetPin(ctx context.Context, name string) (*Pin, error) {
	resp, err := c.st.Get(ctx, &storev1.GetRequest{Namespace: store.SystemNamespace, Key: []byte(prefixPin + name), Consistency: c.consistency})
	if err != nil || resp.GetKv() == nil {
		return nil, err
	}
	var p Pin
	if err := json.Unmarshal(resp.GetKv().GetValue(), &p); err != nil {
		return nil, fmt.Errorf("catalog: decoding pin of %s: %w", name, err)
	}
	p.ModRevision = resp.GetKv().GetModRevision()
	return &p, nil
}

// SetPin pins a registered version, and makes it the plugin's intent.
func (c *Catalog) SetPin(ctx context.Context, name, version, actor string) error {
	return c.SetPinAs(ctx, name, Pin{Version: version, Actor: actor})
}

// SetPinAs pins a plugin as SetPin does, recording what made the pin
// (pin.Action: "pin" or "rollback") and, for a rollback, whether the
// rollout it starts restores the plugin's data (pin.RestoreData). At is
// set to now.
func (c *Catalog) SetPinAs(ctx context.Context, name string, pin Pin) error {
	version := pin.Version
	if _, err := c.Get(ctx, name, version); err != nil {
		return err
	}
	pin.At = time.Now().UTC()
	val, _ := json.Marshal(pin)
	resp, err := c.commitWithIntent(ctx, name, change{
		cmps: []*storev1.Compare{{Key: catalogKey(name, version), Target: &storev1.Compare_Exists{Exists: true}}},
		ops:  []*storev1.TxnOp{{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: []byte(prefixPin + name), Value: val}}}},
		after: func(vs []*Entry, _ *Pin) ([]*Entry, *Pin) {
			return vs, &pin
		},
	})
	if err == nil && !resp.GetSucceeded() {
		return fmt.Errorf("plugin %q has no version %q: %w (see 'plughost plugin versions %s')", name, version, ErrUnknownVersion, name)
	}
	return err
}

// ClearPin removes a pin, and makes the plugin's highest version its
// intent; it is not an error when there is no pin.
func (c *Catalog) ClearPin(ctx context.Context, name string) error {
	_, err := c.commitWithIntent(ctx, name, change{
		ops: []*storev1.TxnOp{{Op: &storev1.TxnOp_Delete{Delete: &storev1.TxnDelete{Key: []byte(prefixPin + name)}}}},
		after: func(vs []*Entry, _ *Pin) ([]*Entry, *Pin) {
			return vs, nil
		},
	})
	return err
}

// Desired returns the version a plugin should run: its pin, else its highest
// registered version.
func (c *Catalog) Desired(ctx context.Context, name string) (*Entry, *Pin, error) {
	pin, err := c.GetPin(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	if pin != nil {
		e, err := c.Get(ctx, name, pin.Version)
		return e, pin, err
	}
	vs, err := c.Versions(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	if len(vs) == 0 {
		return nil, nil, fmt.Errorf("plugin %q: %w", name, ErrUnknownPlugin)
	}
	return vs[len(vs)-1], nil, nil
}

// AddHistory appends a record to a plugin's history.
func (c *Catalog) AddHistory(ctx context.Context, name string, r Record) error {
	if r.At.IsZero() {
		r.At = time.Now().UTC()
	}
	val, err := json.Marshal(r)
	if err != nil {
		return err
	}
	key := fmt.Sprintf("%s%s/%020d-%s", prefixHistory, name, r.At.UnixNano(), r.Node)
	_, err = c.st.Put(ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(key), Value: val})
	return err
}

// History lists a plugin's history, oldest first.
func (c *Catalog) History(ctx context.Context, name string) ([]Record, error) {
	var out []Record
	err := c.scan(ctx, prefixHistory+name+"/", func(kv *storev1.KeyValue) error {
		var r Record
		if err := json.Unmarshal(kv.GetValue(), &r); err != nil {
			return fmt.Errorf("catalog: decoding %s: %w", kv.GetKey(), err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// PluginOfKey says which plugin a changed _sys key concerns, for watchers of
// the catalog and pins. A key whose name part is not a valid plugin name
// concerns none.
func PluginOfKey(key []byte) (string, bool) {
	k := string(key)
	for _, p := range []string{prefixCatalog, prefixPin} {
		if rest, ok := strings.CutPrefix(k, p); ok {
			name, _, _ := strings.Cut(rest, "/")
			return name, bundle.ValidName(name)
		}
	}
	return "", false
}

// WatchPrefixes are the _sys prefixes whose changes can change what runs.
var WatchPrefixes = []string{prefixCatalog, prefixPin}

const prefixFailed = "failed/"

// Failure records that a version did not become healthy on a node.
type Failure struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	// ModRevision is the store revision it was recorded at (Failures sets
	// it; not stored).
	ModRevision int64 `json:"-"`
}

func failedKey(node, name, version string) []byte {
	return []byte(FailedKey(node, name, version))
}

// FailedKey is the _sys key of the record that version failed on node.
func FailedKey(node, name, version string) string {
	return prefixFailed + node + "/" + name + "/" + version
}

// MarkFailed records that version failed on node, so the node does not try
// it again by itself (not even after a restart) until an operator pins it
// again or a newer version arrives.
func (c *Catalog) MarkFailed(ctx context.Context, node, name, version, reason string) error {
	val, err := json.Marshal(Failure{Reason: reason, At: time.Now().UTC()})
	if err != nil {
		return err
	}
	_, err = c.st.Put(ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: failedKey(node, name, version), Value: val})
	return err
}

// Failures lists the versions of a plugin that failed on node.
func (c *Catalog) Failures(ctx context.Context, node, name string) (map[string]Failure, error) {
	out := map[string]Failure{}
	err := c.scan(ctx, prefixFailed+node+"/"+name+"/", func(kv *storev1.KeyValue) error {
		var f Failure
		if err := json.Unmarshal(kv.GetValue(), &f); err != nil {
			return fmt.Errorf("catalog: decoding %s: %w", kv.GetKey(), err)
		}
		f.ModRevision = kv.GetModRevision()
		k := string(kv.GetKey())
		out[k[strings.LastIndexByte(k, '/')+1:]] = f
		return nil
	})
	return out, err
}

// Effective returns the version node should run: the desired version (pin,
// else highest), unless that version failed on node since it was pinned.
// Then it is running, the version node runs now, if any; else the highest
// version that has not failed on node; else the desired version after all.
func (c *Catalog) Effective(ctx context.Context, node, name, running string) (*Entry, *Pin, error) {
	e, pin, err := c.Desired(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	return c.unlessFailed(ctx, node, name, e, pin, running)
}

// Assigned returns the version node runs when it is assigned version: that
// version, unless it failed on node since the plugin was last pinned; then
// as Effective, the version running, else the highest version that has
// not failed on node, else the assigned version after all.
func (c *Catalog) Assigned(ctx context.Context, node, name, version, running string) (*Entry, *Pin, error) {
	e, err := c.Get(ctx, name, version)
	if err != nil {
		return nil, nil, err
	}
	pin, err := c.GetPin(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	return c.unlessFailed(ctx, node, name, e, pin, running)
}

// unlessFailed is e, unless e failed on node since pin; see Effective.
func (c *Catalog) unlessFailed(ctx context.Context, node, name string, e *Entry, pin *Pin, running string) (*Entry, *Pin, error) {
	failed, err := c.Failures(ctx, node, name)
	if err != nil || len(failed) == 0 {
		return e, pin, err
	}
	f, bad := failed[e.Version]
	if !bad || (pin != nil && pinnedSince(pin, f)) {
		return e, pin, nil
	}
	if running != "" {
		if r, err := c.Get(ctx, name, running); err == nil {
			return r, pin, nil
		}
	}
	if h := highestNotFailed(mustVersions(c.Versions(ctx, name)), failed); h != nil {
		return h, pin, nil
	}
	return e, pin, nil
}

// pinnedSince reports whether pin was made after f was recorded: by store
// revision (the two are written by different nodes, whose clocks differ),
// by At only when a revision is unknown.
func pinnedSince(pin *Pin, f Failure) bool {
	if pin.ModRevision > 0 && f.ModRevision > 0 {
		return pin.ModRevision > f.ModRevision
	}
	return pin.At.After(f.At)
}

// Unpinned returns the version node runs once the plugin is unpinned: the
// highest registered version that has not failed on node, else the highest.
func (c *Catalog) Unpinned(ctx context.Context, node, name string) (*Entry, error) {
	vs, err := c.Versions(ctx, name)
	if err != nil {
		return nil, err
	}
	if len(vs) == 0 {
		return nil, fmt.Errorf("plugin %q: %w", name, ErrUnknownPlugin)
	}
	failed, err := c.Failures(ctx, node, name)
	if err != nil {
		return nil, err
	}
	if h := highestNotFailed(vs, failed); h != nil {
		return h, nil
	}
	return vs[len(vs)-1], nil
}

func mustVersions(vs []*Entry, err error) []*Entry {
	if err != nil {
		return nil
	}
	return vs
}

func highestNotFailed(vs []*Entry, failed map[string]Failure) *Entry {
	for i := len(vs) - 1; i >= 0; i-- {
		if _, bad := failed[vs[i].Version]; !bad {
			return vs[i]
		}
	}
	return nil
}

// LastHealthyBefore finds the version that served before current, from the
// swaps recorded in the history: the version rollback returns to.
func (c *Catalog) LastHealthyBefore(ctx context.Context, name, current string) (string, error) {
	recs, err := c.History(ctx, name)
	if err != nil {
		return "", err
	}
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		if r.Action == "swap" && r.Outcome == "done" && r.To == current && r.From != "" && r.From != current {
			return r.From, nil
		}
	}
	return "", fmt.Errorf("plugin %q: no version served before %s: %w", name, current, ErrUnknownVersion)
}
