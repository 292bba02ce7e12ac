package supervisor

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/router"
	"github.com/plughost/plughost/internal/testenv"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

func memStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func obsOf(plugin, state string, restarts int) intent.Observation {
	return intent.Observation{Plugin: plugin, Version: "1.0.0", State: state, Healthy: state == "running",
		Since: time.Now().UTC(), Restarts: restarts, Services: []string{"echo.v1.EchoService"}}
}

// readObs reads node's observation of plugin; found is false without one.
func readObs(t *testing.T, st *store.Store, node, plugin string) (intent.Observation, bool) {
	t.Helper()
	ob, found, err := tryObs(st, node, plugin)
	if err != nil {
		t.Fatalf("reading %s/%s: %v", node, plugin, err)
	}
	return ob, found
}

func tryObs(st *store.Store, node, plugin string) (intent.Observation, bool, error) {
	it, found, err := intent.Get[intent.Observation](context.Background(), intent.New(st), intent.ObserveKey(node, plugin))
	return it.Value, found, err
}

func runObserver(t *testing.T, o *observer, keep func(string) bool) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		o.run(ctx, keep)
	}()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("the observer did not stop")
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestObserverWritesPrunesAndRemoves: the observer writes a plugin's
// latest state, removes this node's records of plugins the node does not
// run (and only this node's), removes a record on remove, and removes what
// it wrote when it stops.
func TestObserverWritesPrunesAndRemoves(t *testing.T) {
	st := memStore(t)
	db := intent.New(st)
	ctx := context.Background()
	for _, ob := range []intent.Observation{
		{Node: "n1", Plugin: "gone", Version: "0.9.0", State: "running", Healthy: true},
		{Node: "n1", Plugin: "echo", Version: "0.9.0", State: "running", Healthy: true},
		{Node: "n2", Plugin: "gone", Version: "0.9.0", State: "running", Healthy: true},
	} {
		if _, err := db.Put(ctx, &ob); err != nil {
			t.Fatal(err)
		}
	}
	o := newObserver(st, "n1", hclog.NewNullLogger())
	stop := runObserver(t, o, func(p string) bool { return p == "echo" || p == "counter" })
	o.set(obsOf("echo", "starting", 0))
	o.set(obsOf("counter", "running", 2))

	testenv.WaitFor(t, 10*time.Second, "n1's records to be what runs", func() error {
		if _, found := readObs(t, st, "n1", "gone"); found {
			return fmt.Errorf("n1/gone is still there")
		}
		if ob, _ := readObs(t, st, "n1", "echo"); ob.State != "starting" || ob.Version != "1.0.0" {
			return fmt.Errorf("n1/echo is %+v", ob)
		}
		if ob, _ := readObs(t, st, "n1", "counter"); ob.Restarts != 2 || !ob.Healthy || ob.Node != "n1" {
			return fmt.Errorf("n1/counter is %+v", ob)
		}
		return nil
	})
	if _, found := readObs(t, st, "n2", "gone"); !found {
		t.Fatal("n1's observer removed n2's record")
	}

	o.remove("counter")
	testenv.WaitFor(t, 10*time.Second, "n1/counter to be removed", func() error {
		if _, found := readObs(t, st, "n1", "counter"); found {
			return fmt.Errorf("still there")
		}
		return nil
	})

	stop()
	if _, found := readObs(t, st, "n1", "echo"); found {
		t.Fatal("n1/echo is still there after the observer stopped")
	}
	if _, found := readObs(t, st, "n2", "gone"); !found {
		t.Fatal("n1's observer removed n2's record as it stopped")
	}
}

// TestObserverCoalesces: a burst of changes is written as few records, the
// last one being the latest state.
func TestObserverCoalesces(t *testing.T) {
	st := memStore(t)
	writes := make(chan int64, 1000)
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	from := st.Revision() + 1
	go func() {
		_ = st.Watch(wctx, &storev1.WatchRequest{Namespace: store.SystemNamespace, Prefix: []byte(intent.ObserveKey("n1", "echo")), StartRevision: from},
			func(resp *storev1.WatchResponse) error {
				for range resp.GetEvents() {
					writes <- resp.GetRevision()
				}
				return nil
			})
	}()

	o := newObserver(st, "n1", hclog.NewNullLogger())
	runObserver(t, o, func(string) bool { return true })
	const changes = 200
	began := time.Now()
	for i := 1; i <= changes; i++ {
		o.set(obsOf("echo", "backoff", i))
	}
	took := time.Since(began)
	testenv.WaitFor(t, 10*time.Second, "the latest state to be written", func() error {
		if ob, _ := readObs(t, st, "n1", "echo"); ob.Restarts != changes {
			return fmt.Errorf("restarts %d, want %d", ob.Restarts, changes)
		}
		return nil
	})
	// At most one write per observeInterval while the burst lasted, and
	// the one after it.
	if n, most := len(writes), 2+int(took/observeInterval); n > most {
		t.Fatalf("%d changes in %s made %d writes, want at most %d", changes, took, n, most)
	}
}

// TestObserverRetriesWithTheLatestState: writes that fail while the store
// has no leader are made once it has one, with the state of then, and
// supervision never waits for them.
func TestObserverRetriesWithTheLatestState(t *testing.T) {
	cfg := store.DefaultConfig()
	cfg.InMemory = true
	cfg.NodeID = "n1"
	st, err := store.Open(cfg) // not bootstrapped: no leader until BootstrapCluster
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	o := newObserver(st, "n1", hclog.NewNullLogger())
	runObserver(t, o, func(string) bool { return true })
	setDone := make(chan struct{})
	go func() {
		defer close(setDone)
		o.set(obsOf("echo", "starting", 0))
		o.set(obsOf("echo", "running", 1))
	}()
	select {
	case <-setDone:
	case <-time.After(10 * time.Second):
		t.Fatal("set waited for a store without a leader")
	}

	if err := st.BootstrapCluster([]store.RaftServer{{ID: "n1", Address: st.RaftAddr(), Suffrage: store.Voter}}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 60*time.Second, "the observation to be written once there is a leader", func() error {
		ob, found, err := tryObs(st, "n1", "echo")
		if err != nil {
			return err
		}
		if !found || ob.State != "running" || ob.Restarts != 1 {
			return fmt.Errorf("found %v: %+v", found, ob)
		}
		return nil
	})
}

// TestAssignmentDrivesSupervision: the supervisor supervises what this
// node's assignment names and nothing else, reports it, and stops it
// (removing its observation) when the assignment goes.
func TestAssignmentDrivesSupervision(t *testing.T) {
	st := memStore(t)
	ctx := context.Background()
	cat := catalog.New(st)
	m := &bundle.Manifest{Name: "echo", Version: "1.0.0", APIVersions: []int{1}, Executable: "echo",
		SHA256: strings.Repeat("ab", 32), Services: []string{"echo.v1.EchoService"}}
	m.SetDefaults()
	if _, err := cat.Register(ctx, m, "test"); err != nil {
		t.Fatal(err)
	}
	s := New(Config{Node: &pluginv1.NodeInfo{Name: "n1"}, PluginsDir: t.TempDir(), Catalog: cat, Store: st, Router: router.New(router.Config{})})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(rctx) }()
	defer func() {
		cancel()
		<-done
	}()

	db := intent.New(st)
	// Another node's assignment is not this node's business.
	if _, err := db.Put(ctx, &intent.Assignment{Node: "n2", Plugin: "echo", Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Put(ctx, &intent.Assignment{Node: "n1", Plugin: "echo", Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "echo to be supervised on n1 and observed", func() error {
		stat, ok := s.Status("echo")
		if !ok || stat.Desired != "1.0.0" || !strings.Contains(stat.LastError, "not on this node") {
			return fmt.Errorf("status %v %+v", ok, stat)
		}
		ob, found, err := tryObs(st, "n1", "echo")
		if err != nil || !found || ob.Version != "1.0.0" || ob.State != "starting" || ob.Healthy {
			return fmt.Errorf("observation %v %+v %v", found, ob, err)
		}
		return nil
	})
	if _, err := db.Delete(ctx, intent.AssignKey("n1", "echo")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "echo to stop on n1 and its observation to go", func() error {
		if stat, _ := s.Status("echo"); stat.State != operatorv1.InstanceState_INSTANCE_STATE_STOPPED {
			return fmt.Errorf("state %s", stat.State)
		}
		if _, found, err := tryObs(st, "n1", "echo"); err != nil || found {
			return fmt.Errorf("observation still there (%v)", err)
		}
		return nil
	})
	if _, found, _ := tryObs(st, "n2", "echo"); found {
		t.Fatal("n1 wrote an observation for n2")
	}
}
