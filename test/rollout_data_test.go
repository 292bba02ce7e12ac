package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/fsm"
)

// TestRolloutRestoreData: the rollstate fixture keeps counters in its
// store namespace; its 2.0.0 rewrites them in a format 1.0.0 cannot read.
// Three agents in three upgrade domains run it on every node.
//
//   - Rolled 1.0.0 -> 2.0.0, the rollout snapshots the namespace before its
//     first domain (checksum of the data as it was); rolled back without
//     -restore-data, the data stays as 2.0.0 left it and 1.0.0 reports it
//     cannot read it.
//   - With new 1.0.0 data, rolled forward again and aborted mid-way with
//     'rollout abort -restore-data': once 1.0.0 serves again everywhere the
//     namespace is exactly the rollout's snapshot, and 1.0.0 reads it.
//   - Rolled forward to completion and back with 'plugin rollback
//     -restore-data': the namespace is the snapshot of the rollout it
//     undoes.
func TestRolloutRestoreData(t *testing.T) {
	agents := NewClusterEach(t, 3, func(i int) []string { return []string{"-upgrade-domain", fmt.Sprint("ud", i+1)} })
	const plugin = "rollstate"
	manual := map[string]any{"policy": "manual"}
	v1 := rolloutBundle(t, rolloutPlugin{Name: plugin, Version: "1.0.0", Fixture: "rollstate", Upgrade: manual})
	// 2.0.0's upgrade block paces the rollouts to it: each domain stays
	// 3 s in its gate, time to abort one mid-way.
	v2 := rolloutBundle(t, rolloutPlugin{Name: plugin, Version: "2.0.0", Fixture: "rollstate", MinHealthy: 3 * time.Second, Upgrade: manual})
	bundleAdd(t, agents[0], v1)
	nodes := nodeNames(agents)
	waitServingOnly(t, agents[0], plugin, "1.0.0", nodes, 90*time.Second)

	ctx := testenv.Context(t, 10*time.Minute)
	echo := map[string]echov1.EchoServiceClient{}
	for _, a := range agents {
		echo[a.Node] = echov1.NewEchoServiceClient(a.Conn())
	}
	ask := func(a *ClusterAgent, msg string) (string, string) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		resp, err := echo[a.Node].Echo(cctx, &echov1.EchoRequest{Message: msg})
		if err != nil {
			t.Fatalf("%q through %s: %v", msg, a.Node, err)
		}
		return resp.GetMessage(), resp.GetVersion()
	}
	for i, m := range []string{"set a 1", "set b 2", "set c 3"} {
		if got, _ := ask(agents[i], m); got != "ok" {
			t.Fatalf("%q through %s: %q", m, agents[i].Node, got)
		}
	}
	d1, sum1 := namespaceDump(t, agents[0], plugin)
	bundleAdd(t, agents[0], v2)

	// 1 -> 2, then back without -restore-data.
	pinDetached(t, agents[1], plugin, "2.0.0")
	r1 := waitRolloutDone(t, agents, plugin, 0, 2*time.Minute)
	logRollout(t, r1)
	if r1.State != intent.RolloutCompleted {
		t.Fatalf("rollout %s to 2.0.0 ended %s: %s", r1.ID, r1.State, r1.Failure)
	}
	if s := r1.Snapshot; s == nil || s.SHA256 != sum1 || s.Keys != 3 || s.Namespace != plugin {
		t.Fatalf("rollout %s's snapshot %+v; want the 3 keys as they were, SHA-256 %s", r1.ID, r1.Snapshot, sum1)
	}
	waitServingOnly(t, agents[0], plugin, "2.0.0", nodes, time.Minute)
	if got, v := ask(agents[2], "get b"); got != "b=2" || v != "2.0.0" {
		t.Fatalf("2.0.0 reads b as %q (version %s)", got, v)
	}
	d2, _ := namespaceDump(t, agents[0], plugin)
	if strings.Join(d2, " ") != `v2/count/a={"n":1} v2/count/b={"n":2} v2/count/c={"n":3}` {
		t.Fatalf("2.0.0 left %v, want its own format", d2)
	}
	rollbackDetached(t, agents[2], plugin)
	r2 := waitRolloutDone(t, agents, plugin, r1.Seq, 2*time.Minute)
	logRollout(t, r2)
	if r2.State != intent.RolloutCompleted || r2.To != "1.0.0" || r2.RestoreData || !r2.Restored.IsZero() {
		t.Fatalf("rollback %s: %s to %s, restore_data %v, restored %v", r2.ID, r2.State, r2.To, r2.RestoreData, r2.Restored)
	}
	waitServingOnly(t, agents[0], plugin, "1.0.0", nodes, time.Minute)
	if after, _ := namespaceDump(t, agents[1], plugin); strings.Join(after, " ") != strings.Join(d2, " ") {
		t.Fatalf("a rollback without -restore-data changed the data: %v, was %v", after, d2)
	}
	for _, a := range agents {
		if got, v := ask(a, "get a"); !strings.HasPrefix(got, "unreadable") || v != "1.0.0" {
			t.Fatalf("1.0.0 through %s reads a as %q (version %s), want unreadable", a.Node, got, v)
		}
	}
	t.Logf("rolled back without -restore-data: the data stays %v (it was %v); 1.0.0 cannot read it", d2, d1)

	// New 1.x data, as an operator puts it back; 1 -> 2 again, aborted
	// mid-way with -restore-data.
	resetNamespace(t, agents[0], plugin, map[string]string{"count/a": "10", "count/b": "20", "count/d": "40"})
	d3, sum3 := namespaceDump(t, agents[0], plugin)
	if got, _ := ask(agents[1], "get d"); got != "d=40" {
		t.Fatalf("1.0.0 reads the new d as %q", got)
	}
	pinDetached(t, agents[0], plugin, "2.0.0")
	r3 := waitRolloutOf(t, agents, plugin, r2.Seq, 2*time.Minute, "the first domain of the second rollout to 2.0.0 done", func(r intent.Rollout) error {
		if d, ok := rolloutDomain(r, "ud1"); r.State != intent.RolloutRunning || !ok || d.Phase != intent.DomainDone {
			return fmt.Errorf("rollout %s %s: %s", r.ID, r.State, domainPhases(r))
		}
		return nil
	})
	if s := r3.Snapshot; s == nil || s.SHA256 != sum3 || s.Keys != 3 {
		t.Fatalf("rollout %s's snapshot %+v; want the new data's, SHA-256 %s", r3.ID, r3.Snapshot, sum3)
	}
	if got, _ := namespaceDump(t, agents[0], plugin); !strings.HasPrefix(strings.Join(got, " "), "v2/") {
		t.Fatalf("2.0.0 on ud1 did not rewrite the data: %v", got)
	}
	if out, errOut, code := agents[2].CLI("rollout", "abort", "-restore-data", r3.ID); code != 0 {
		t.Fatalf("rollout abort -restore-data %s: exit %d\n%s%s", r3.ID, code, out, errOut)
	}
	r3 = waitRolloutDone(t, agents, plugin, r2.Seq, 2*time.Minute)
	logRollout(t, r3)
	if r3.State != intent.RolloutRolledBack || !r3.RestoreData || r3.Restored.IsZero() {
		t.Fatalf("rollout %s ended %s, restore_data %v, restored %v; want rolled back with its data restored (%s)",
			r3.ID, r3.State, r3.RestoreData, r3.Restored, r3.Failure)
	}
	waitServingOnly(t, agents[0], plugin, "1.0.0", nodes, time.Minute)
	got, sum := namespaceDump(t, agents[1], plugin)
	if sum != r3.Snapshot.SHA256 || strings.Join(got, " ") != strings.Join(d3, " ") {
		t.Fatalf("after the restore the namespace holds %v (SHA-256 %s); the snapshot holds %v (%s)", got, sum, d3, r3.Snapshot.SHA256)
	}
	for i, a := range agents {
		want := []string{"a=10", "b=20", "d=40"}[i]
		if got, v := ask(a, "get "+want[:1]); got != want || v != "1.0.0" {
			t.Fatalf("1.0.0 through %s reads %q (version %s), want %q", a.Node, got, v, want)
		}
	}
	t.Logf("rollout %s aborted with -restore-data: the namespace is its snapshot again, %v", r3.ID, got)

	// 1 -> 2 to completion, then 'plugin rollback -restore-data': the
	// data goes back to the snapshot of the rollout it undoes.
	if got, _ := ask(agents[0], "set a 11"); got != "ok" {
		t.Fatalf("set a 11: %q", got)
	}
	d4, sum4 := namespaceDump(t, agents[0], plugin)
	pinDetached(t, agents[2], plugin, "2.0.0")
	r4 := waitRolloutDone(t, agents, plugin, r3.Seq, 2*time.Minute)
	logRollout(t, r4)
	if r4.State != intent.RolloutCompleted || r4.Snapshot == nil || r4.Snapshot.SHA256 != sum4 {
		t.Fatalf("rollout %s to 2.0.0 ended %s (%s), snapshot %+v; want completed with the snapshot of %v", r4.ID, r4.State, r4.Failure, r4.Snapshot, d4)
	}
	if got, _ := ask(agents[1], "get a"); got != "a=11" {
		t.Fatalf("2.0.0 reads a as %q", got)
	}
	if out, errOut, code := agents[1].CLI("plugin", "rollback", "-restore-data", plugin); code != 0 {
		t.Fatalf("plugin rollback -restore-data %s: exit %d\n%s%s", plugin, code, out, errOut)
	}
	r5 := waitRolloutDone(t, agents, plugin, r4.Seq, 2*time.Minute)
	logRollout(t, r5)
	if r5.State != intent.RolloutCompleted || r5.To != "1.0.0" || !r5.RestoreData || r5.Restored.IsZero() {
		t.Fatalf("rollback %s: %s to %s, restore_data %v, restored %v (%s)", r5.ID, r5.State, r5.To, r5.RestoreData, r5.Restored, r5.Failure)
	}
	if got, sum := namespaceDump(t, agents[2], plugin); sum != sum4 {
		t.Fatalf("after 'plugin rollback -restore-data' the namespace holds %v; the snapshot of %s holds %v", got, r4.ID, d4)
	}
	for _, a := range agents {
		if got, v := ask(a, "get a"); got != "a=11" || v != "1.0.0" {
			t.Fatalf("1.0.0 through %s reads a as %q (version %s), want a=11", a.Node, got, v)
		}
	}
	t.Logf("'plugin rollback -restore-data' after %s: the namespace is that rollout's snapshot again, %v", r4.ID, d4)
}

// pinDetached pins plugin at version through a, detached: the rollout goes on
// without the call.
func pinDetached(t *testing.T, a *ClusterAgent, plugin, version string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := a.Operator().PinVersion(ctx, &operatorv1.PinVersionRequest{Name: plugin, Version: version, Detach: true})
	if err == nil {
		for err == nil {
			_, err = stream.Recv()
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("pin %s %s through %s: %v", plugin, version, a.Node, err)
	}
}

// rollbackDetached rolls plugin back through a, detached, without -restore-data.
func rollbackDetached(t *testing.T, a *ClusterAgent, plugin string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := a.Operator().RollbackPlugin(ctx, &operatorv1.RollbackPluginRequest{Name: plugin, Detach: true})
	if err == nil {
		for err == nil {
			_, err = stream.Recv()
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("rollback %s through %s: %v", plugin, a.Node, err)
	}
}

// namespaceDump reads ns through a's store API: its keys as key=value, in
// order, and the SHA-256 of their canonical dump, as a rollout snapshot
// records it.
func namespaceDump(t *testing.T, a *ClusterAgent, ns string) ([]string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := a.Store().List(ctx, &storev1.ListRequest{Namespace: ns, Limit: 10000})
	if err != nil {
		t.Fatalf("listing %s through %s: %v", ns, a.Node, err)
	}
	var kvs []string
	var entries []fsm.DumpEntry
	for _, kv := range resp.GetKvs() {
		kvs = append(kvs, fmt.Sprintf("%s=%s", kv.GetKey(), kv.GetValue()))
		entries = append(entries, fsm.DumpEntry{Key: kv.GetKey(), Value: kv.GetValue(), ExpiresAtMs: kv.GetExpiresAtUnixMs()})
	}
	sum := sha256.Sum256(fsm.EncodeDump(ns, entries))
	return kvs, hex.EncodeToString(sum[:])
}

// resetNamespace replaces everything in ns with kv through a's store API,
// as an operator would.
func resetNamespace(t *testing.T, a *ClusterAgent, ns string, kv map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := a.Store().List(ctx, &storev1.ListRequest{Namespace: ns, KeysOnly: true, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	txn := &storev1.TxnRequest{Namespace: ns}
	for _, old := range resp.GetKvs() {
		if _, keep := kv[string(old.GetKey())]; !keep {
			txn.Success = append(txn.Success, &storev1.TxnOp{Op: &storev1.TxnOp_Delete{Delete: &storev1.TxnDelete{Key: old.GetKey()}}})
		}
	}
	for k, v := range kv {
		txn.Success = append(txn.Success, &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: []byte(k), Value: []byte(v)}}})
	}
	if _, err := a.Store().Txn(ctx, txn); err != nil {
		t.Fatalf("rewriting %s through %s: %v", ns, a.Node, err)
	}
}
