package routefeed

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/cluster"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/router"
	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

func TestRemotes(t *testing.T) {
	members := []cluster.Member{
		{Name: "n1", Status: "alive", RPCAddr: "10.0.0.1:7401"},
		{Name: "n2", Status: "alive", RPCAddr: "10.0.0.2:7401"},
		{Name: "n3", Status: "failed", RPCAddr: "10.0.0.3:7401"},
		{Name: "n4", Status: "left", RPCAddr: "10.0.0.4:7401"},
		{Name: "n5", Status: "alive"},
	}
	ob := func(node, plugin string, healthy bool, role string, svcs ...string) intent.Item[intent.Observation] {
		return intent.Item[intent.Observation]{Value: intent.Observation{Node: node, Plugin: plugin, Version: "1.0.0",
			Healthy: healthy, Role: role, Services: svcs}}
	}
	for _, tc := range []struct {
		name string
		obs  intent.Item[intent.Observation]
		want *router.Remote // nil: left out
	}{
		{"own node left to the supervisor", ob("n1", "echo", true, "", "e.v1.S"), nil},
		{"healthy on an alive node", ob("n2", "echo", true, "", "e.v1.S"),
			&router.Remote{Node: "n2", RPCAddr: "10.0.0.2:7401", Plugin: "echo", Version: "1.0.0", Services: []string{"e.v1.S"}, Healthy: true}},
		{"observed unhealthy", ob("n2", "echo", false, "", "e.v1.S"),
			&router.Remote{Node: "n2", RPCAddr: "10.0.0.2:7401", Plugin: "echo", Version: "1.0.0", Services: []string{"e.v1.S"}}},
		{"a singleton's standby is not routed to", ob("n2", "counter", true, intent.RoleStandby, "c.v1.S"),
			&router.Remote{Node: "n2", RPCAddr: "10.0.0.2:7401", Plugin: "counter", Version: "1.0.0", Services: []string{"c.v1.S"}}},
		{"a singleton's active is", ob("n2", "counter", true, intent.RoleActive, "c.v1.S"),
			&router.Remote{Node: "n2", RPCAddr: "10.0.0.2:7401", Plugin: "counter", Version: "1.0.0", Services: []string{"c.v1.S"}, Healthy: true}},
		{"failed node: stale healthy observation not routed to", ob("n3", "echo", true, "", "e.v1.S"),
			&router.Remote{Node: "n3", RPCAddr: "10.0.0.3:7401", Plugin: "echo", Version: "1.0.0", Services: []string{"e.v1.S"}}},
		{"node that left", ob("n4", "echo", true, "", "e.v1.S"), nil},
		{"node gossip does not know", ob("n9", "echo", true, "", "e.v1.S"), nil},
		{"node without an RPC address", ob("n5", "echo", true, "", "e.v1.S"),
			&router.Remote{Node: "n5", Plugin: "echo", Version: "1.0.0", Services: []string{"e.v1.S"}}},
		{"no services yet", ob("n2", "echo", true, ""), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := remotes("n1", []intent.Item[intent.Observation]{tc.obs}, members)
			rem, ok := got[key{tc.obs.Value.Node, tc.obs.Value.Plugin}]
			switch {
			case tc.want == nil && len(got) != 0:
				t.Fatalf("got %+v, want it left out", got)
			case tc.want != nil && (!ok || !equal(rem, *tc.want)):
				t.Fatalf("got %+v, want %+v", rem, *tc.want)
			}
		})
	}
}

// fakeTable is a route table that keeps what it is set.
type fakeTable struct {
	set        map[key]router.Remote
	registered map[string][]string
	notes      map[string]string
}

func (t *fakeTable) SetRegistered(plugins map[string][]string) { t.registered = plugins }

func (t *fakeTable) RoutesKnown() {}

func (t *fakeTable) SetFailover(plugin, note string) {
	if t.notes == nil {
		t.notes = map[string]string{}
	}
	t.notes[plugin] = note
}

func (t *fakeTable) SetRemote(r router.Remote) error {
	if r.Plugin == "odd" {
		return errors.New("the table refuses it")
	}
	t.set[key{r.Node, r.Plugin}] = r
	return nil
}
func (t *fakeTable) RemoveRemote(node, plugin string) { delete(t.set, key{node, plugin}) }

type fakeMembers []cluster.Member

func (m fakeMembers) Members() []cluster.Member { return m }
func (m fakeMembers) MemberChanges() (<-chan struct{}, func()) {
	return make(chan struct{}), func() {}
}

// TestRefusalsWarnedOnce: a malformed observation, and one the table
// refuses, are warned about once, not at every pass (a pass follows every
// observation write in the cluster).
func TestRefusalsWarnedOnce(t *testing.T) {
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := testenv.Context(t, 30*time.Second)
	db := intent.New(st)
	if _, err := st.Put(ctx, &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(intent.ObserveKey("n2", "junk")),
		Value: []byte(`{"node":"n3","plugin":"junk"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Put(ctx, &intent.Observation{Node: "n2", Plugin: "odd", Version: "1.0.0", Healthy: true, Services: []string{"o.v1.S"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Put(ctx, &intent.Observation{Node: "n2", Plugin: "echo", Version: "1.0.0", Healthy: true, Services: []string{"e.v1.S"}}); err != nil {
		t.Fatal(err)
	}
	var logs testenv.SyncBuffer
	tbl := &fakeTable{set: map[key]router.Remote{}}
	f := &feed{cfg: Config{Node: "n1", DB: db, Table: tbl, Logger: hclog.New(&hclog.LoggerOptions{Output: &logs}),
		Members: fakeMembers{{Name: "n1", Status: "alive", RPCAddr: "10.0.0.1:7401"}, {Name: "n2", Status: "alive", RPCAddr: "10.0.0.2:7401"}}},
		set: map[key]router.Remote{}}
	for range 5 {
		f.pass(ctx)
	}
	if _, ok := tbl.set[key{"n2", "echo"}]; !ok {
		t.Fatalf("the valid observation was not routed: %+v", tbl.set)
	}
	for _, what := range []string{"malformed", "cannot be routed"} {
		if n := strings.Count(logs.String(), what); n != 1 {
			t.Errorf("%q warned %d times over 5 passes, want once:\n%s", what, n, logs.String())
		}
	}
}

// fakeCatalog lists fixed entries.
type fakeCatalog map[string][]*catalog.Entry

func (c fakeCatalog) All(context.Context) (map[string][]*catalog.Entry, error) { return c, nil }

// TestRegisteredFromTheCatalog: every registered plugin goes to the table
// with the services of its newest version, run anywhere or not.
func TestRegisteredFromTheCatalog(t *testing.T) {
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	entry := func(version string, svcs ...string) *catalog.Entry {
		return &catalog.Entry{Name: "echo", Version: version, Manifest: &bundle.Manifest{Name: "echo", Version: version, Services: svcs}}
	}
	tbl := &fakeTable{set: map[key]router.Remote{}}
	f := &feed{cfg: Config{Node: "n1", DB: intent.New(st), Table: tbl, Logger: hclog.NewNullLogger(),
		Catalog: fakeCatalog{"echo": {entry("1.0.0", "e.v1.Old"), entry("2.0.0", "e.v1.S", "e.v1.T")}, "broken": nil},
		Members: fakeMembers{{Name: "n1", Status: "alive"}}}, set: map[key]router.Remote{}}
	f.pass(testenv.Context(t, 10*time.Second))
	if want := map[string][]string{"echo": {"e.v1.S", "e.v1.T"}}; !maps.EqualFunc(tbl.registered, want, slices.Equal) {
		t.Fatalf("registered %v, want %v", tbl.registered, want)
	}
}

// TestFailoverNotes: a singleton whose assigned active does not serve is
// failing over, from the node it last served on.
func TestFailoverNotes(t *testing.T) {
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := testenv.Context(t, 30*time.Second)
	db := intent.New(st)
	members := fakeMembers{{Name: "n1", Status: "alive"}, {Name: "n2", Status: "alive", RPCAddr: "a2"}, {Name: "n3", Status: "alive", RPCAddr: "a3"}}
	tbl := &fakeTable{set: map[key]router.Remote{}}
	f := &feed{cfg: Config{Node: "n1", DB: db, Table: tbl, Logger: hclog.NewNullLogger(), Members: members}, set: map[key]router.Remote{}}
	put := func(r intent.Record) {
		t.Helper()
		if _, err := db.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	step := func(want string) {
		t.Helper()
		f.pass(ctx)
		if got := tbl.notes["counter"]; got != want {
			t.Fatalf("note %q, want %q", got, want)
		}
	}
	put(&intent.Singleton{Plugin: "counter", Active: "n2"})
	step("singleton counter is starting on n2")
	put(&intent.Observation{Node: "n2", Plugin: "counter", Version: "1.0.0", Role: intent.RoleActive, Healthy: true, Services: []string{"c.v1.S"}})
	step("")
	// n2 fails; the controller moves the singleton to n3, not serving yet.
	members[1].Status = "failed"
	put(&intent.Singleton{Plugin: "counter", Active: "n3"})
	step("singleton counter is failing over from n2 to n3")
	put(&intent.Observation{Node: "n3", Plugin: "counter", Version: "1.0.0", Role: intent.RoleActive, Healthy: true, Services: []string{"c.v1.S"}})
	step("")
}
