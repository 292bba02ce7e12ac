package test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plughost/plughost/host/fence"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// TestSingletonFencing: three agents run the fencer plugin as a singleton;
// its active writes its store every 50 ms. The active's node is stopped
// (SIGSTOP) and the leader's placement controller fails the singleton over
// to another node at a new epoch; once the old node runs again (SIGCONT),
// its agent stops its instance by itself for its lost lease with an event
// saying why, it does not become active again, and no write of its is
// applied at or after the new epoch (a write it makes in between is
// refused by the store for its old epoch, or by its agent once fenced).
func TestSingletonFencing(t *testing.T) {
	agents := NewCluster(t, 3)
	exe := fixture(t, "fencer", "fencer", "1.0.0")
	out := t.TempDir()
	if b, err := exec.Command(filepath.Join(binDir, "plughost"), "bundle", "build", "-o", out, exe).CombinedOutput(); err != nil {
		t.Fatalf("plughost bundle build: %v\n%s", err, b)
	}
	single := placedBundle(t, filepath.Join(out, "fencer-1.0.0.tar.gz"), map[string]any{"mode": "singleton"})
	// Every node holds the bundle: a node that takes the singleton over
	// must not need to fetch it from the stopped one.
	for _, a := range agents {
		if stdout, stderr, code := a.CLI("bundle", "add", single); code != 0 {
			t.Fatalf("bundle add on %s: %s %s", a.Node, stdout, stderr)
		}
	}
	byName := map[string]*ClusterAgent{}
	for _, a := range agents {
		byName[a.Node] = a
	}
	ctx := testenv.Context(t, 3*time.Minute)
	echo := map[*ClusterAgent]echov1.EchoServiceClient{} // one connection each
	for _, a := range agents {
		echo[a] = echov1.NewEchoServiceClient(a.Conn())
	}
	ask := func(a *ClusterAgent, msg string) (string, error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := echo[a].Echo(cctx, &echov1.EchoRequest{Message: msg})
		return resp.GetMessage(), err
	}
	// activeAt waits for the singleton record to name an active other
	// than not, and for that node's instance to be told it is the active
	// at the record's epoch.
	activeAt := func(via *ClusterAgent, within time.Duration, not string) (*ClusterAgent, int64) {
		t.Helper()
		var node string
		var epoch int64
		testenv.WaitFor(t, within, "fencer's active to run at its epoch", func() error {
			ss, err := sysRecords[intent.Singleton](t, via, intent.SingletonKey("fencer"))
			if err != nil {
				return err
			}
			s, ok := ss[intent.SingletonKey("fencer")]
			if !ok || s.Value.Active == "" || s.Value.Active == not || byName[s.Value.Active] == nil {
				return fmt.Errorf("singleton record %+v", s)
			}
			node, epoch = s.Value.Active, s.ModRevision
			want := fmt.Sprintf("%s active %d", node, epoch)
			if got, err := ask(byName[node], "role"); got != want {
				return fmt.Errorf("%s's instance says %q (%v), want %q", node, got, err, want)
			}
			return nil
		})
		return byName[node], epoch
	}

	old, e1 := activeAt(agents[0], 60*time.Second, "")
	if got, _ := ask(old, "put probe"); got != "ok" {
		t.Fatalf("the active's write: %q", got)
	}
	var via *ClusterAgent
	for _, a := range agents {
		if a != old {
			via = a
		}
	}

	stopped := time.Now()
	old.Signal(syscall.SIGSTOP)
	next, e2 := activeAt(via, 60*time.Second, old.Node)
	t.Logf("fencer failed over from %s (epoch %d) to %s (epoch %d) %s after SIGSTOP", old.Node, e1, next.Node, e2, time.Since(stopped).Round(time.Millisecond))
	// The old active stays stopped for longer than its lease.
	time.Sleep(time.Until(stopped.Add(fence.DefaultLease + 500*time.Millisecond)))
	logAt := len(old.Log())
	old.Signal(syscall.SIGCONT)

	// It stops itself for its lost lease, with an event saying why.
	testenv.WaitFor(t, 30*time.Second, "the old active to be stopped by its lease", func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := old.Operator().ListEvents(cctx, &operatorv1.ListEventsRequest{Name: "fencer"})
		if err != nil {
			return err
		}
		for _, ev := range resp.GetEvents() {
			if ev.GetNode() == old.Node && ev.GetType() == "stopped" && strings.Contains(ev.GetReason(), "fenced: this node's agent did not run for") {
				return nil
			}
		}
		return fmt.Errorf("no stopped event for the lease in %v", resp.GetEvents())
	})
	// A write it made after SIGCONT, if it made one before it was killed,
	// was refused: by the store, for the old epoch (its agent did not know
	// yet), or by its agent once the lease fenced it. Which comes first is
	// a race; that none was applied is checked below.
	stale := fmt.Sprintf("write from epoch %d refused: singleton fencer's current epoch is %d (active on %s)", e1, e2, next.Node)
	after := old.Log()[logAt:]
	switch {
	case strings.Contains(after, stale):
		t.Logf("the old active's write after SIGCONT was refused by the store: %s", stale)
	case strings.Contains(after, "write refused: "):
		i := strings.Index(after, "write refused: ")
		line, _, _ := strings.Cut(after[i:], "\n")
		t.Logf("the old active's write after SIGCONT failed: %s", line)
	default:
		t.Logf("the old active was stopped before it wrote again")
	}
	// It is not the active again: the record names another node.
	testenv.WaitFor(t, 30*time.Second, "calls through "+old.Node+" to reach no active of its own", func() error {
		got, err := ask(old, "role")
		if err != nil || strings.HasPrefix(got, old.Node+" active") {
			return fmt.Errorf("role %q, %v", got, err)
		}
		return nil
	})
	if _, e := activeAt(via, 30*time.Second, old.Node); e != e2 {
		t.Errorf("the epoch moved again, to %d, after %s came back", e, old.Node)
	}

	// No write of the old active's was applied at or after the new epoch.
	leader := leaderOf(t, agents)
	resp, err := leader.Store().List(ctx, &storev1.ListRequest{Namespace: "fencer", Prefix: []byte("w/" + old.Node + "/"), KeysOnly: true, Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetKvs()) == 0 {
		t.Fatalf("the old active wrote nothing before it was stopped")
	}
	for _, kv := range resp.GetKvs() {
		if kv.GetModRevision() >= e2 {
			t.Errorf("%s's write %s applied at revision %d, at or after epoch %d", old.Node, kv.GetKey(), kv.GetModRevision(), e2)
		}
	}
}
