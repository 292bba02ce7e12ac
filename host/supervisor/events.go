package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// eventTTL bounds how long events are kept in the store.
const eventTTL = 7 * 24 * time.Hour

// Event is one transition of a plugin on a node, with its reason.
type Event struct {
	At       time.Time `json:"at"`
	Node     string    `json:"node"`
	Plugin   string    `json:"plugin"`
	Version  string    `json:"version,omitempty"`
	Instance string    `json:"instance,omitempty"`
	// Type is started, exited, oom-killed, unhealthy, start-failed, backoff,
	// failed, restart, stopped, swap-started, swapped, fell-back or role (a
	// singleton instance became active or standby); and of bundles that
	// travel (area fetch): fetch-failed, fetch-refused, bundle-removed.
	Type   string `json:"type"`
	Reason string `json:"reason"`
}

// Events keeps plugin events in the store's _sys namespace, where every
// node can read them.
type Events struct {
	st   *store.Store
	node string
}

func eventPrefix(plugin string) string { return "events/" + plugin + "/" }

// EventKey is where an event of plugin, at at on node, is kept; keys sort
// by time. Other writers of plugin events (the rollout controller) use it,
// with EventTTL.
func EventKey(plugin string, at time.Time, node string) string {
	return fmt.Sprintf("%s%020d-%s", eventPrefix(plugin), at.UnixNano(), node)
}

// EventTTL is how long an event is kept.
const EventTTL = eventTTL

// Record stores an event without holding up supervision: a store that
// cannot take the write (no quorum) delays only the record.
func (e *Events) Record(plugin, version, instance, typ, reason string) {
	ev := Event{At: time.Now().UTC(), Node: e.node, Plugin: plugin, Version: version, Instance: instance, Type: typ, Reason: reason}
	val, err := json.Marshal(ev)
	if err != nil {
		return
	}
	key := EventKey(plugin, ev.At, e.node)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = e.st.Put(ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(key), Value: val, TtlMs: eventTTL.Milliseconds()})
	}()
}

// List returns a plugin's events, oldest first, at most the last limit.
func (e *Events) List(ctx context.Context, plugin string, limit int) ([]Event, error) {
	var out []Event
	var token []byte
	for {
		resp, err := e.st.List(ctx, &storev1.ListRequest{Namespace: store.SystemNamespace, Prefix: []byte(eventPrefix(plugin)), PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, kv := range resp.GetKvs() {
			var ev Event
			if json.Unmarshal(kv.GetValue(), &ev) == nil {
				out = append(out, ev)
			}
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}
