package intent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

func TestNodeStateRoundTrip(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	db := New(st)

	if _, found, err := db.NodeState(ctx, "n1"); err != nil || found {
		t.Fatalf("no record: found=%v err=%v", found, err)
	}
	since := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for _, s := range []NodeState{{Node: "n1", Eligible: false, Since: since, Actor: "token:ab12"}, {Node: "n2", Eligible: true, Since: since, Actor: "api"}} {
		if _, err := db.Put(ctx, &s); err != nil {
			t.Fatal(err)
		}
	}
	it, found, err := db.NodeState(ctx, "n1")
	if err != nil || !found || it.Value.Eligible || !it.Value.Since.Equal(since) || it.Value.Actor != "token:ab12" {
		t.Fatalf("after drain: %+v found=%v err=%v", it, found, err)
	}
	states, refused, err := db.NodeStates(ctx)
	if err != nil || len(refused) != 0 || len(states) != 2 {
		t.Fatalf("list: %v refused=%v err=%v", states, refused, err)
	}
	if d := Drained(states); len(d) != 1 || d["n1"].Actor != "token:ab12" {
		t.Fatalf("drained: %v, want n1 alone", d)
	}
	if _, err := db.Put(ctx, &NodeState{Node: "../x"}); err == nil {
		t.Fatal("a record for an invalid node name was written")
	}
}

// TestNodeStateRecordsAreChecked: a record whose value names another node
// than its key, or is not a node record, is refused, and a listing leaves
// it out and says so.
func TestNodeStateRecordsAreChecked(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	db := New(st)
	put := func(key, val string) {
		t.Helper()
		if _, err := st.Put(ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(key), Value: []byte(val)}); err != nil {
			t.Fatal(err)
		}
	}
	put("node/n1", `{"node":"n2","eligible":true}`)
	put("node/n4", `not json`)
	put("node/bad name", `{"node":"bad name"}`)
	put("node/n5", `{"node":"n5","eligible":false,"since":"2026-12-02T10:00:00Z","actor":"a"}`)

	if _, _, err := db.NodeState(ctx, "n1"); !errors.Is(err, ErrInvalidRecord) || !strings.Contains(err.Error(), `belongs at key "node/n2"`) {
		t.Fatalf("record naming another node: %v", err)
	}
	states, refused, err := db.NodeStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 1 || states[0].Value.Node != "n5" || len(refused) != 3 {
		t.Fatalf("list: %v, refused %v; want only n5, and three refused", states, refused)
	}
}
