package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/intent"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// Every change of a plugin's versions or pin writes the plugin's intent
// (intent/<plugin>: the target version and its placement) in the same txn,
// conditioned on the intent's mod revision read before the catalog: a
// concurrent change of the same plugin makes the txn fail and be made again
// from what is then in the store. So the intent is always what the catalog
// and the pin say, and each such txn rewrites it.

// maxIntentAttempts bounds the retries of a change that races others.
const maxIntentAttempts = 16

// change is a write to a plugin's catalog or pin, made with its intent.
type change struct {
	cmps    []*storev1.Compare
	ops     []*storev1.TxnOp
	failure []*storev1.TxnOp // read back when a compare fails, before the intent
	// after is the plugin's versions and pin once the change is made.
	after func(versions []*Entry, pin *Pin) ([]*Entry, *Pin)
}

// TargetIntent is the intent the catalog gives a plugin: its pinned
// version, else its highest registered version, with that version's
// placement. It is nil when there is none (no valid version, or a pin of
// a version that is not registered).
func TargetIntent(name string, versions []*Entry, pin *Pin) *intent.Intent {
	var target *Entry
	if pin != nil {
		for _, e := range versions {
			if e.Version == pin.Version {
				target = e
			}
		}
	} else if len(versions) > 0 {
		target = versions[0]
		for _, e := range versions[1:] {
			if Less(target.Version, e.Version) {
				target = e
			}
		}
	}
	if target == nil {
		return nil
	}
	return &intent.Intent{Plugin: name, Version: target.Version, Placement: target.Manifest.Placement, Pinned: pin != nil}
}

// commitWithIntent makes ch together with the write of name's intent. A
// failed compare of ch's own comes back as a response that did not
// succeed, with ch.failure's results first.
func (c *Catalog) commitWithIntent(ctx context.Context, name string, ch change) (*storev1.TxnResponse, error) {
	key := []byte(intent.IntentKey(name))
	for attempt := 0; attempt < maxIntentAttempts; attempt++ {
		cur, err := c.st.Get(ctx, &storev1.GetRequest{Namespace: store.SystemNamespace, Key: key})
		if err != nil {
			return nil, err
		}
		rev := cur.GetKv().GetModRevision()
		versions, err := c.Versions(ctx, name)
		if err != nil {
			return nil, err
		}
		pin, err := c.GetPin(ctx, name)
		if err != nil {
			return nil, err
		}
		if ch.after != nil {
			versions, pin = ch.after(versions, pin)
		}
		write := &storev1.TxnOp{Op: &storev1.TxnOp_Delete{Delete: &storev1.TxnDelete{Key: key}}}
		var val []byte
		if in := TargetIntent(name, versions, pin); in != nil {
			if val, err = intent.Encode(in); err != nil {
				return nil, err
			}
			write = &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: key, Value: val}}}
		}
		if len(ch.ops) == 0 && bytes.Equal(val, cur.GetKv().GetValue()) && (val != nil || cur.GetKv() == nil) {
			return &storev1.TxnResponse{Succeeded: true, Revision: cur.GetKv().GetModRevision()}, nil // nothing to repair
		}
		resp, err := c.st.Txn(ctx, &storev1.TxnRequest{
			Namespace: store.SystemNamespace,
			Compares: append(append([]*storev1.Compare(nil), ch.cmps...),
				&storev1.Compare{Key: key, Target: &storev1.Compare_ModRevision{ModRevision: rev}}),
			Success: append(append([]*storev1.TxnOp(nil), ch.ops...), write),
			Failure: append(append([]*storev1.TxnOp(nil), ch.failure...),
				&storev1.TxnOp{Op: &storev1.TxnOp_Get{Get: &storev1.TxnGet{Key: key}}}),
		})
		if err != nil {
			return nil, err
		}
		if resp.GetSucceeded() {
			return resp, nil
		}
		results := resp.GetResults()
		if results[len(results)-1].GetKv().GetModRevision() == rev {
			return resp, nil // one of ch's own compares failed
		}
	}
	return nil, fmt.Errorf("catalog: plugin %s changed %d times while this change was made; try again", name, maxIntentAttempts)
}

// SyncIntent writes name's intent if it is missing or not what the catalog
// and pin say (after a change made without the catalog, or lost with a
// node that failed between writes). Nothing is written when it is right.
func (c *Catalog) SyncIntent(ctx context.Context, name string) error {
	_, err := c.commitWithIntent(ctx, name, change{})
	if err != nil {
		return fmt.Errorf("catalog: intent of %s: %w", name, err)
	}
	return nil
}

// SyncIntents runs SyncIntent for every plugin with a catalog record or an
// intent, so intents of plugins no longer registered go too.
func (c *Catalog) SyncIntents(ctx context.Context) error {
	names, err := c.Names(ctx)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, n := range names {
		seen[n] = true
	}
	ins, refused, err := intent.New(c.st).Intents(ctx)
	if err != nil {
		return err
	}
	for _, it := range ins {
		if !seen[it.Value.Plugin] {
			names = append(names, it.Value.Plugin)
		}
	}
	for _, r := range refused { // an invalid intent is written again from the catalog
		var re *intent.RecordError
		if errors.As(r, &re) {
			if name := strings.TrimPrefix(re.Key, intent.PrefixIntent); !seen[name] && bundle.ValidName(name) {
				names = append(names, name)
			}
		}
	}
	var errs []error
	for _, n := range names {
		if err := c.SyncIntent(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// KeepIntents is a leader-only task (host/leader): it repairs every
// plugin's intent once, then again for each plugin whose catalog records
// or pin change, until ctx ends.
func (c *Catalog) KeepIntents(ctx context.Context, log hclog.Logger) error {
	from := c.st.Revision() + 1
	if err := c.SyncIntents(ctx); err != nil {
		return err
	}
	db := intent.New(c.st)
	return db.Watch(ctx, from, WatchPrefixes, log, func(ch intent.Change) {
		if ch.Resync {
			if err := c.SyncIntents(ctx); err != nil && ctx.Err() == nil {
				log.Warn("could not repair the plugins' intents", "error", err)
			}
			return
		}
		if name, ok := PluginOfKey([]byte(ch.Key)); ok {
			if err := c.SyncIntent(ctx, name); err != nil && ctx.Err() == nil {
				log.Warn("could not repair a plugin's intent", "plugin", name, "error", err)
			}
		}
	})
}
