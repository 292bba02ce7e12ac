package install

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/intent"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

func TestKeeperRemovesOldUnusedVersionsAndRecordsWhatStays(t *testing.T) {
	w := newWorld(t)
	n := w.node("n1", 1)
	versions := []string{"1.0.0", "1.1.0", "1.2.0", "1.10.0", "2.0.0", "2.1.0"}
	for _, v := range versions {
		w.installOn(n, "greeter", v)
	}
	w.installOn(n, "other", "0.1.0")
	var events []string
	k := NewKeeper(KeeperConfig{
		Node: "n1", PluginsDir: n.plugins, DB: intent.New(w.st), Catalog: w.cat, Keep: 3,
		// 1.0.0 runs (or is pinned): it stays, old as it is.
		InUse: func(context.Context) (map[string]bool, error) {
			return map[string]bool{"greeter@1.0.0": true}, nil
		},
		Event: func(plugin, version, kind, reason string) { events = append(events, plugin+" "+version+" "+kind) },
	})
	ctx := context.Background()
	if err := k.collect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := k.publish(ctx); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, v := range versions {
		if _, err := os.Stat(filepath.Join(n.plugins, "greeter", v)); err == nil {
			left = append(left, v)
		}
	}
	// Newest three by semver (2.1.0, 2.0.0, 1.10.0) and the one in use.
	if want := []string{"1.0.0", "1.10.0", "2.0.0", "2.1.0"}; !slices.Equal(left, want) {
		t.Fatalf("left on disk %v, want %v", left, want)
	}
	if !slices.Equal(events, []string{"greeter 1.2.0 bundle-removed", "greeter 1.1.0 bundle-removed"}) {
		t.Fatalf("events %q", events)
	}
	// Catalog records stay.
	if vs, err := w.cat.Versions(ctx, "greeter"); err != nil || len(vs) != len(versions) {
		t.Fatalf("catalog has %d versions (%v), want %d", len(vs), err, len(versions))
	}
	resp, err := w.st.Get(ctx, &storev1.GetRequest{Namespace: store.SystemNamespace, Key: []byte(intent.HeldKey("n1"))})
	if err != nil {
		t.Fatal(err)
	}
	var h intent.Held
	if err := json.Unmarshal(resp.GetKv().GetValue(), &h); err != nil {
		t.Fatal(err)
	}
	want := "greeter@1.0.0 greeter@1.10.0 greeter@2.0.0 greeter@2.1.0 other@0.1.0"
	if got := strings.Join(h.Bundles, " "); got != want || h.Node != "n1" {
		t.Fatalf("bundles/n1 = %+v, want %s", h, want)
	}
}

func TestHeldRecordsAreChecked(t *testing.T) {
	decode := func(key, value string) (intent.Item[intent.Held], error) {
		return intent.Decode[intent.Held](&storev1.KeyValue{Key: []byte(key), Value: []byte(value)})
	}
	for _, tc := range []struct{ key, value string }{
		{"bundles/n1", `{"node":"n2","bundles":[]}`},
		{"bundles/n1", `{"node":"n1","bundles":["../x@1.0.0"]}`},
		{"bundles/n1", `{"node":"n1","bundles":["a@1.2"]}`},
		{"bundles/n1", `{"node":"n1","bundles":["a@1.0.0","a@1.0.0"]}`},
		{"bundles/n1", `{"node":"n1","bundles":["b@1.0.0","a@1.0.0"]}`},
	} {
		if _, err := decode(tc.key, tc.value); err == nil {
			t.Errorf("%s = %s accepted", tc.key, tc.value)
		}
	}
	it, err := decode("bundles/n1", `{"node":"n1","bundles":["a@1.0.0","b@2.0.0-rc.1"]}`)
	if err != nil || !it.Value.Has("b", "2.0.0-rc.1") || it.Value.Has("a", "2.0.0") {
		t.Fatalf("valid record: %+v %v", it, err)
	}
}

func TestKeeperFetchesTargetVersionsOtherNodesHold(t *testing.T) {
	w := newWorld(t)
	n1 := w.node("n1", 2)
	w.installOn(n1, "greeter", "1.2.0")
	w.bundle("lonely", "1.0.0") // held by no node: not asked for
	ctx := context.Background()
	db := intent.New(w.st)
	for _, it := range []*intent.Intent{{Plugin: "greeter", Version: "1.2.0"}, {Plugin: "lonely", Version: "1.0.0"}} {
		it.Placement.Mode = "every-node"
		if _, err := db.Put(ctx, it); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.PutHeld(ctx, &intent.Held{Node: "n1", Bundles: []string{"greeter@1.2.0"}}); err != nil {
		t.Fatal(err)
	}
	var events []string
	plugins := filepath.Join(t.TempDir(), "plugins")
	f := w.fetcher("n3", plugins, &events)
	defer f.Close()
	var asked []string
	k := NewKeeper(KeeperConfig{Node: "n3", PluginsDir: plugins, DB: db, Catalog: w.cat,
		Fetch: func(ctx context.Context, e *catalog.Entry) error {
			asked = append(asked, intent.HeldRef(e.Name, e.Version))
			return f.Fetch(ctx, e, nil)
		}})
	k.prefetch(ctx)
	if _, err := w.entry("greeter", "1.2.0").ExecutableIn(plugins); err != nil {
		t.Fatalf("greeter 1.2.0 not fetched ahead of need: %v", err)
	}
	if !slices.Equal(asked, []string{"greeter@1.2.0"}) {
		t.Fatalf("fetched %v, want only greeter@1.2.0", asked)
	}
	// Installed now: not fetched again.
	k.prefetch(ctx)
	if len(asked) != 1 {
		t.Fatalf("fetched %v after it was installed", asked)
	}
}

// TestKeeperBacksOffAFailingPrefetch: the keeper looks again at every
// observation change in the cluster (several a second); a target version
// it cannot fetch is not asked for again at each look, but after a
// doubling wait.
func TestKeeperBacksOffAFailingPrefetch(t *testing.T) {
	w := newWorld(t)
	w.bundle("greeter", "1.2.0")
	ctx := context.Background()
	db := intent.New(w.st)
	in := &intent.Intent{Plugin: "greeter", Version: "1.2.0"}
	in.Placement.Mode = "every-node"
	if _, err := db.Put(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := db.PutHeld(ctx, &intent.Held{Node: "n1", Bundles: []string{"greeter@1.2.0"}}); err != nil {
		t.Fatal(err)
	}
	asked := 0
	k := NewKeeper(KeeperConfig{Node: "n3", PluginsDir: filepath.Join(t.TempDir(), "plugins"), DB: db, Catalog: w.cat,
		Fetch: func(ctx context.Context, e *catalog.Entry) error {
			asked++
			return errors.New("every peer served a corrupted copy")
		}})
	for range 10 {
		k.prefetch(ctx)
	}
	if asked != 1 {
		t.Fatalf("a failing fetch was tried %d times in 10 looks in a row, want 1 (then again after a wait)", asked)
	}
	// Due again: tried once more, and the wait doubles.
	ref := intent.HeldRef("greeter", "1.2.0")
	first := k.failed[ref].wait
	k.failed[ref].next = time.Now()
	k.prefetch(ctx)
	if asked != 2 || k.failed[ref].wait != 2*first {
		t.Fatalf("once due: tried %d times, wait %v (was %v)", asked, k.failed[ref].wait, first)
	}
}
