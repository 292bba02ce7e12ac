package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

func readIntent(t *testing.T, c *Catalog, name string) (intent.Intent, bool) {
	t.Helper()
	it, found, err := intent.New(c.st).Intent(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return it.Value, found
}

func wantIntent(t *testing.T, c *Catalog, name, version string, pinned bool) {
	t.Helper()
	in, found := readIntent(t, c, name)
	if !found || in.Version != version || in.Pinned != pinned || in.Placement.Mode == "" {
		t.Errorf("intent of %s = %+v (found %v), want version %s pinned %v", name, in, found, version, pinned)
	}
}

func TestCatalogChangesWriteTheIntent(t *testing.T) {
	c := newCatalog(t)
	ctx := testenv.Context(t, 30*time.Second)
	if _, found := readIntent(t, c, "echo"); found {
		t.Fatal("an intent before any bundle")
	}
	register(t, c, "1.0.0")
	wantIntent(t, c, "echo", "1.0.0", false)
	register(t, c, "1.2.0", "1.1.0")
	wantIntent(t, c, "echo", "1.2.0", false)

	if err := c.SetPin(ctx, "echo", "1.1.0", "op"); err != nil {
		t.Fatal(err)
	}
	wantIntent(t, c, "echo", "1.1.0", true)
	register(t, c, "2.0.0") // a pin holds against a newer version
	wantIntent(t, c, "echo", "1.1.0", true)
	if err := c.ClearPin(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	wantIntent(t, c, "echo", "2.0.0", false)

	// The intent carries the target version's placement.
	m := manifest("solo", "1.0.0", "cd")
	m.Placement.Mode = bundle.PlacementSingleton
	if _, err := c.Register(ctx, m, "test"); err != nil {
		t.Fatal(err)
	}
	if in, _ := readIntent(t, c, "solo"); in.Placement.Mode != bundle.PlacementSingleton {
		t.Errorf("solo's intent has placement %+v", in.Placement)
	}
}

// Concurrent registrations of one plugin leave the intent at the highest
// version: each txn is conditioned on the intent it read.
func TestConcurrentRegistrationsAgreeOnTheIntent(t *testing.T) {
	c := newCatalog(t)
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Register(context.Background(), manifest("echo", fmt.Sprintf("1.%d.0", i), "ab"), "test")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	wantIntent(t, c, "echo", "1.11.0", false)
}

// KeepIntents, the leader's task, repairs an intent that is missing, stale
// or invalid, and follows catalog records written without the catalog.
func TestKeepIntentsRepairs(t *testing.T) {
	c := newCatalog(t)
	register(t, c, "1.0.0")
	ctx := testenv.Context(t, 30*time.Second)
	put := func(key string, val []byte) {
		t.Helper()
		if _, err := c.st.Put(ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(key), Value: val}); err != nil {
			t.Fatal(err)
		}
	}
	put(intent.IntentKey("echo"), []byte(`{"plugin":"echo","version":"0.0.1"}`)) // invalid: no placement
	put(intent.IntentKey("gone"), []byte(`{"plugin":"gone","version":"1.0.0","placement":{"mode":"every-node"}}`))

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.KeepIntents(runCtx, nil) }()
	defer func() {
		cancel()
		<-done
	}()
	db := intent.New(c.st)
	testenv.Eventually(t, 10*time.Second, "echo's intent repaired, gone's removed", func() bool {
		in, found, err := db.Intent(ctx, "echo")
		_, gone, _ := db.Intent(ctx, "gone")
		return err == nil && found && in.Value.Version == "1.0.0" && !gone
	})

	// A catalog record written straight into the store.
	m := manifest("echo", "3.0.0", "ab")
	val, _ := json.Marshal(Entry{Name: m.Name, Version: m.Version, SHA256: m.SHA256, Manifest: m})
	put(string(catalogKey("echo", "3.0.0")), val)
	testenv.Eventually(t, 10*time.Second, "echo's intent follows the raw record", func() bool {
		in, _ := readIntent(t, c, "echo")
		return in.Version == "3.0.0"
	})
	before, _, _ := intent.New(c.st).Intent(ctx, "echo")
	if err := c.SyncIntent(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	after, _, _ := intent.New(c.st).Intent(ctx, "echo")
	if after.ModRevision != before.ModRevision {
		t.Errorf("SyncIntent rewrote a right intent: revision %d -> %d", before.ModRevision, after.ModRevision)
	}
}
