package intent_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func openDB(t *testing.T) (*intent.DB, *store.Store) {
	t.Helper()
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return intent.New(st), st
}

func putRaw(t *testing.T, st *store.Store, key, value string) {
	t.Helper()
	if _, err := st.Put(context.Background(), &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(key), Value: []byte(value)}); err != nil {
		t.Fatal(err)
	}
}

func TestPutGetListRoundTrip(t *testing.T) {
	db, _ := openDB(t)
	ctx := testenv.Context(t, 30*time.Second)
	in := &intent.Intent{Plugin: "counter", Version: "1.2.0", Placement: bundle.Placement{Mode: bundle.PlacementSingleton}, Pinned: true}
	rev, err := db.Put(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	got, found, err := db.Intent(ctx, "counter")
	if err != nil || !found {
		t.Fatalf("Intent: found=%v err=%v", found, err)
	}
	if got.Value != *in || got.ModRevision != rev {
		t.Errorf("read %+v at %d, wrote %+v at %d", got.Value, got.ModRevision, *in, rev)
	}
	if _, found, err := db.Intent(ctx, "other"); found || err != nil {
		t.Errorf("missing intent: found=%v err=%v", found, err)
	}

	for _, a := range []*intent.Assignment{
		{Node: "n2", Plugin: "echo", Version: "1.0.0"},
		{Node: "n1", Plugin: "echo", Version: "1.0.0"},
		{Node: "n1", Plugin: "counter", Version: "1.2.0", Role: intent.RoleActive, Epoch: 7},
	} {
		if _, err := db.Put(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	all, refused, err := db.Assignments(ctx)
	if err != nil || len(refused) != 0 {
		t.Fatalf("Assignments: %v %v", refused, err)
	}
	var keys []string
	for _, a := range all {
		keys = append(keys, a.Value.Key())
	}
	if want := []string{"assign/n1/counter", "assign/n1/echo", "assign/n2/echo"}; !equal(keys, want) {
		t.Errorf("assignments %v, want %v", keys, want)
	}
	n2, _, err := db.NodeAssignments(ctx, "n2")
	if err != nil || len(n2) != 1 || n2[0].Value.Node != "n2" {
		t.Errorf("NodeAssignments(n2) = %+v, %v", n2, err)
	}
	if _, err := db.Delete(ctx, intent.AssignKey("n2", "echo")); err != nil {
		t.Fatal(err)
	}
	if n2, _, _ := db.NodeAssignments(ctx, "n2"); len(n2) != 0 {
		t.Errorf("after delete: %+v", n2)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Records are input from other nodes: whatever fails its checks is
// reported with its key, never returned as a record.
func TestHostileRecordsAreRefused(t *testing.T) {
	db, st := openDB(t)
	ctx := testenv.Context(t, 30*time.Second)
	putRaw(t, st, "assign/n1/good", `{"node":"n1","plugin":"good","version":"1.0.0"}`)
	bad := map[string]string{
		"assign/n1/notjson":   `{"node":`,
		"assign/n1/elsewhere": `{"node":"n1","plugin":"other","version":"1.0.0"}`,
		"assign/n2/badver":    `{"node":"n2","plugin":"badver","version":"latest"}`,
		"assign/n2/badrole":   `{"node":"n2","plugin":"badrole","version":"1.0.0","role":"leader"}`,
		"assign/n2/epoch":     `{"node":"n2","plugin":"epoch","version":"1.0.0","epoch":4}`,
		"assign/n2/negepoch":  `{"node":"n2","plugin":"negepoch","version":"1.0.0","role":"active","epoch":-1}`,
		"assign/../x/y":       `{"node":"..","plugin":"y","version":"1.0.0"}`,
	}
	for k, v := range bad {
		putRaw(t, st, k, v)
	}
	items, refused, err := db.Assignments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Value.Plugin != "good" {
		t.Errorf("valid items: %+v", items)
	}
	if len(refused) != len(bad) {
		t.Fatalf("refused %d records, want %d: %v", len(refused), len(bad), refused)
	}
	for _, err := range refused {
		var re *intent.RecordError
		if !errors.As(err, &re) || !errors.Is(err, intent.ErrInvalidRecord) {
			t.Errorf("refusal %v is not a *RecordError", err)
			continue
		}
		if _, ok := bad[re.Key]; !ok {
			t.Errorf("refusal names key %q, not one of the bad ones", re.Key)
		}
	}
	if _, found, err := intent.Get[intent.Assignment](ctx, db, "assign/n1/elsewhere"); found || !errors.Is(err, intent.ErrInvalidRecord) {
		t.Errorf("Get of a misplaced record: found=%v err=%v", found, err)
	}

	putRaw(t, st, "singleton/s", `{"plugin":"s","active":"n1","standby":"n1"}`)
	putRaw(t, st, "observe/n1/p", `{"node":"n1","plugin":"p","version":"1.0.0","state":"running","restarts":-3}`)
	putRaw(t, st, "observe/n1/q", `{"node":"n1","plugin":"q","version":"1.0.0","state":"running","services":["echo.v1.Echo","../../agent"]}`)
	putRaw(t, st, "placement/p", `{"plugin":"p","severity":"fatal","wanted":1}`)
	putRaw(t, st, "intent/p", `{"plugin":"p","version":"1.0.0"}`)
	for _, f := range []func() error{
		func() error { _, _, err := db.Singleton(ctx, "s"); return err },
		func() error { _, _, err := intent.Get[intent.Observation](ctx, db, "observe/n1/p"); return err },
		func() error { _, _, err := intent.Get[intent.Observation](ctx, db, "observe/n1/q"); return err },
		func() error { _, _, err := db.Placement(ctx, "p"); return err },
		func() error { _, _, err := db.Intent(ctx, "p"); return err },
	} {
		if err := f(); !errors.Is(err, intent.ErrInvalidRecord) {
			t.Errorf("got %v, want a refusal", err)
		}
	}
}

func TestPutRefusesAnInvalidRecord(t *testing.T) {
	db, _ := openDB(t)
	ctx := testenv.Context(t, 30*time.Second)
	if _, err := db.Put(ctx, &intent.Assignment{Node: "n1", Plugin: "Bad Name", Version: "1.0.0"}); err == nil {
		t.Error("an assignment with an invalid plugin name was written")
	}
	var txn intent.Txn
	txn.Put(&intent.Singleton{Plugin: "s", Active: "n1", Standby: "n1"})
	if _, _, err := db.Commit(ctx, &txn); err == nil {
		t.Error("a txn holding an invalid record was committed")
	}
}

// The singleton record and its assignments change in one txn; the txn's
// revision is the record's mod revision, which is the epoch.
func TestTxnWritesTogetherOrNotAtAll(t *testing.T) {
	db, _ := openDB(t)
	ctx := testenv.Context(t, 30*time.Second)
	var txn intent.Txn
	txn.IfModRevision(intent.SingletonKey("counter"), 0).
		Put(&intent.Singleton{Plugin: "counter", Active: "n1", Standby: "n2"}).
		Put(&intent.Assignment{Node: "n1", Plugin: "counter", Version: "1.0.0", Role: intent.RoleActive}).
		Put(&intent.Assignment{Node: "n2", Plugin: "counter", Version: "1.0.0", Role: intent.RoleStandby})
	rev, ok, err := db.Commit(ctx, &txn)
	if err != nil || !ok {
		t.Fatalf("Commit: ok=%v err=%v", ok, err)
	}
	s, _, err := db.Singleton(ctx, "counter")
	if err != nil || s.ModRevision != rev {
		t.Fatalf("singleton at %d (err %v), txn at %d", s.ModRevision, err, rev)
	}

	// The same condition again no longer holds: nothing is written.
	var again intent.Txn
	again.IfModRevision(intent.SingletonKey("counter"), 0).
		Put(&intent.Singleton{Plugin: "counter", Active: "n3"}).
		Delete(intent.AssignKey("n1", "counter"))
	if _, ok, err := db.Commit(ctx, &again); err != nil || ok {
		t.Fatalf("stale Commit: ok=%v err=%v", ok, err)
	}
	if s, _, _ := db.Singleton(ctx, "counter"); s.Value.Active != "n1" {
		t.Errorf("active is %q after a refused txn", s.Value.Active)
	}
	if as, _, _ := db.NodeAssignments(ctx, "n1"); len(as) != 1 {
		t.Errorf("n1's assignment went with a refused txn: %+v", as)
	}

	var big intent.Txn
	for i := 0; i <= intent.MaxTxnOps; i++ {
		big.Delete(intent.AssignKey("n1", "counter"))
	}
	if _, _, err := db.Commit(ctx, &big); !errors.Is(err, intent.ErrTxnTooLarge) {
		t.Errorf("oversized txn: %v", err)
	}
}

func TestWatchSeesChangesUnderItsPrefixesOnly(t *testing.T) {
	db, st := openDB(t)
	ctx, cancel := context.WithCancel(testenv.Context(t, 30*time.Second))
	defer cancel()
	var mu sync.Mutex
	var seen []intent.Change
	done := make(chan error, 1)
	from := st.Revision() + 1
	go func() {
		done <- db.Watch(ctx, from, []string{intent.PrefixAssign, intent.PrefixIntent}, nil, func(c intent.Change) {
			mu.Lock()
			seen = append(seen, c)
			mu.Unlock()
		})
	}()
	if _, err := db.Put(ctx, &intent.Assignment{Node: "n1", Plugin: "echo", Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Put(ctx, &intent.Observation{Node: "n1", Plugin: "echo", Version: "1.0.0", State: "running"}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Put(ctx, &intent.Intent{Plugin: "echo", Version: "1.0.0", Placement: bundle.Placement{Mode: bundle.PlacementEveryNode}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Delete(ctx, intent.AssignKey("n1", "echo")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "three changes seen", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= 3
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 {
		t.Fatalf("seen %d changes, want 3: %+v", len(seen), seen)
	}
	if seen[0].Key != "assign/n1/echo" || seen[0].Deleted || seen[0].KV == nil {
		t.Errorf("first change %+v", seen[0])
	}
	a, err := intent.Decode[intent.Assignment](seen[0].KV)
	if err != nil || a.Value.Plugin != "echo" {
		t.Errorf("decoding the change: %+v %v", a, err)
	}
	if seen[1].Key != "intent/echo" || seen[2].Key != "assign/n1/echo" || !seen[2].Deleted {
		t.Errorf("changes %+v", seen)
	}
}

// An intent's placement is checked as a manifest's is: a hostile one
// (a count out of range, a constraint that does not compile) is refused.
func TestIntentPlacementIsChecked(t *testing.T) {
	for _, p := range []bundle.Placement{
		{Mode: bundle.PlacementCount, Count: 0},
		{Mode: bundle.PlacementCount, Count: 1 << 30},
		{Mode: bundle.PlacementEveryNode, Standby: 1},
		{Mode: bundle.PlacementSingleton, Constraint: `role ==`},
		{Mode: "everywhere"},
	} {
		in := intent.Intent{Plugin: "p", Version: "1.0.0", Placement: p}
		if err := in.Validate(); err == nil {
			t.Errorf("placement %+v accepted", p)
		}
	}
	ok := intent.Intent{Plugin: "p", Version: "1.0.0", Placement: bundle.Placement{Mode: bundle.PlacementCount, Count: 3, Constraint: `role == "edge"`}}
	if err := ok.Validate(); err != nil {
		t.Errorf("a valid placement refused: %v", err)
	}
}
