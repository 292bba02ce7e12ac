package fence

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
	"github.com/plughost/plughost/store/fsm"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The key the store fences by is the record the controller writes.
func TestSingletonKeyIsTheStoresFence(t *testing.T) {
	if got, want := intent.SingletonKey("counter"), string(fsm.SingletonKey("counter")); got != want || fsm.SingletonNamespace != store.SystemNamespace {
		t.Fatalf("intent key %q, the store fences by %q in %s", got, want, fsm.SingletonNamespace)
	}
}

// TestTrackerFollowsRecordsAndLease: the tracker's role for this node
// follows the singleton record; a silent leader fences the active (with an
// event) until its singleton is assigned anew.
func TestTrackerFollowsRecordsAndLease(t *testing.T) {
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(testenv.Context(t, 30*time.Second))
	defer cancel()
	put := func(active string) int64 {
		t.Helper()
		r, err := st.Put(ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(intent.SingletonKey("counter")),
			Value: []byte(`{"plugin":"counter","active":"` + active + `"}`)})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetRevision()
	}
	epoch := put("n1")

	var silentSince atomic.Int64 // unix nanos; 0: the leader talks now
	var mu sync.Mutex
	var events []string
	changed := make(chan string, 100)
	tr := New(Config{
		Node: "n1", DB: intent.New(st), Lease: 200 * time.Millisecond,
		Contact: func() time.Time {
			if s := silentSince.Load(); s != 0 {
				return time.Unix(0, s)
			}
			return time.Now()
		},
		Events: func(plugin, kind, msg string) {
			mu.Lock()
			events = append(events, plugin+" "+kind+": "+msg)
			mu.Unlock()
		},
	})
	tr.OnChange(func(p string) { changed <- p })
	if r := tr.Role("counter"); r.Kind != store.RoleNone {
		t.Fatalf("role before the records were read: %+v", r)
	}
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	wantRole := func(what string, want store.Role) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, what, func() bool {
			r := tr.Role("counter")
			return r.Kind == want.Kind && r.Epoch == want.Epoch && strings.Contains(r.Why, want.Why)
		})
	}
	wantRole("active at the record's revision", store.Role{Kind: store.RoleActive, Epoch: epoch})
	if r := tr.Role("echo"); r.Kind != store.RoleNone {
		t.Errorf("a plugin with no singleton record: %+v", r)
	}

	put("n2")
	wantRole("standby once n2 is the active", store.Role{Kind: store.RoleStandby, Why: "the active is n2"})
	epoch = put("n1")
	wantRole("active again at the new epoch", store.Role{Kind: store.RoleActive, Epoch: epoch})

	silentSince.Store(time.Now().Add(-time.Second).UnixNano())
	wantRole("fenced when the leader is silent", store.Role{Kind: store.RoleFenced, Why: "has not heard from a raft leader"})
	mu.Lock()
	if len(events) != 1 || !strings.HasPrefix(events[0], "counter fenced: stopping the active") {
		t.Errorf("events %q", events)
	}
	mu.Unlock()
	if n, why := tr.Stops("counter"); n != 1 || !strings.Contains(why, "has not heard from a raft leader") {
		t.Errorf("stops %d (%q), want 1", n, why)
	}
	silentSince.Store(0)
	// Heard from the leader again, the stopped active stays fenced until
	// the singleton is assigned anew; others' roles follow their records.
	if _, err := st.Put(ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(intent.SingletonKey("echo")),
		Value: []byte(`{"plugin":"echo","active":"n2"}`)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "echo's record read", func() bool { return tr.Role("echo").Kind == store.RoleStandby })
	wantRole("still fenced with the same record", store.Role{Kind: store.RoleFenced, Why: "has not heard from a raft leader"})
	epoch = put("n1")
	wantRole("active again once assigned anew", store.Role{Kind: store.RoleActive, Epoch: epoch})

	if _, err := st.Delete(ctx, &storev1.DeleteRequest{Namespace: store.SystemNamespace, Key: []byte(intent.SingletonKey("counter"))}); err != nil {
		t.Fatal(err)
	}
	wantRole("no role once the record is gone", store.Role{})
	cancel()
	<-done
	seen := map[string]bool{}
	for len(changed) > 0 {
		seen[<-changed] = true
	}
	if !seen["counter"] {
		t.Errorf("subscribers were not told of counter's changes")
	}
}
