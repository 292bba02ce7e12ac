package fsm

import (
	"errors"
	"strings"
	"testing"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// fenced is a put of key in ns that a plugin instance at epoch makes.
func fenced(ns, key string, epoch int64) *Command {
	c := txnPut(ns, key, "v", 0)
	c.Txn.Fence = &storev1.Fence{Epoch: epoch}
	return c
}

func TestFencedWrites(t *testing.T) {
	f := newFSM(t)
	// Index 5 makes counter a singleton active on n3: its epoch is 5.
	// Index 6 is an unrelated write to _sys.
	setup := []Entry{
		logOf(t, 1, txnPut("counter", "n", "0", 0)),
		logOf(t, 5, txnPut(SingletonNamespace, string(SingletonKey("counter")), `{"plugin":"counter","active":"n3","standby":"n2"}`, 0)),
		logOf(t, 6, txnPut(SingletonNamespace, "intent/counter", "{}", 0)),
	}
	for _, r := range f.Apply(setup...) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	tests := []struct {
		name    string
		cmd     *Command
		refused string // "" when applied; else the ErrorInfo reason
		msg     string
	}{
		{"current epoch", fenced("counter", "n", 5), "", ""},
		{"older epoch", fenced("counter", "n", 4), storev1.ReasonStaleEpoch,
			"write from epoch 4 refused: singleton counter's current epoch is 5 (active on n3)"},
		{"no epoch from an instance", fenced("counter", "n", 0), storev1.ReasonStaleEpoch,
			"write without a singleton epoch refused: singleton counter's current epoch is 5 (active on n3)"},
		{"newer epoch", fenced("counter", "n", 6), storev1.ReasonUnknownEpoch,
			"write from epoch 6 refused: singleton counter's current epoch is 5 (active on n3); epoch 6 was never its epoch"},
		{"unfenced (operator)", txnPut("counter", "n", "9", 0), "", ""},
		{"not a singleton", fenced("echo", "k", 0), "", ""},
		{"not a singleton, any epoch", fenced("echo", "k", 3), "", ""},
		{"the agent's namespace", fenced(SingletonNamespace, "x", 0), "", ""},
	}
	index := uint64(10)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			index++
			ns := tt.cmd.Txn.GetNamespace()
			key := tt.cmd.Txn.GetSuccess()[0].GetPut().GetKey()
			before := f.Usage(ns)
			kv0, _, _ := f.Get(ns, key)
			res := f.Apply(logOf(t, index, tt.cmd))[0]
			if tt.refused == "" {
				if res.Err != nil || res.Txn == nil || !res.Txn.GetSucceeded() {
					t.Fatalf("refused: %+v %v", res.Txn, res.Err)
				}
				return
			}
			var ee *EpochError
			if !errors.As(res.Err, &ee) || !errors.Is(res.Err, ErrStaleEpoch) {
				t.Fatalf("error %v, want an EpochError", res.Err)
			}
			if ee.Reason() != tt.refused || !strings.Contains(res.Err.Error(), tt.msg) {
				t.Errorf("reason %s, message %q; want %s, %q", ee.Reason(), res.Err, tt.refused, tt.msg)
			}
			// Nothing of a refused write is applied, but the index is.
			kv, rev, _ := f.Get(ns, key)
			if kv.GetModRevision() != kv0.GetModRevision() || f.Usage(ns) != before || rev != int64(index) {
				t.Errorf("after refusal: kv %v (before %v) usage %v (before %v) revision %d", kv, kv0, f.Usage(ns), before, rev)
			}
		})
	}
}

// TestFenceFollowsTheSingletonRecord: a new active makes the old epoch
// stale; deleting the record ends the fencing.
func TestFenceFollowsTheSingletonRecord(t *testing.T) {
	f := newFSM(t)
	key := string(SingletonKey("counter"))
	apply := func(index uint64, c *Command) error {
		t.Helper()
		return f.Apply(logOf(t, index, c))[0].Err
	}
	if err := apply(3, txnPut(SingletonNamespace, key, `{"active":"n1"}`, 0)); err != nil {
		t.Fatal(err)
	}
	if err := apply(4, fenced("counter", "k", 3)); err != nil {
		t.Fatalf("epoch 3 at epoch 3: %v", err)
	}
	if err := apply(7, txnPut(SingletonNamespace, key, `not json`, 0)); err != nil {
		t.Fatal(err)
	}
	err := apply(8, fenced("counter", "k", 3))
	if !errors.Is(err, ErrStaleEpoch) || !strings.Contains(err.Error(), "current epoch is 7 (it has no active)") {
		t.Fatalf("epoch 3 at epoch 7: %v", err)
	}
	if err := apply(9, fenced("counter", "k", 7)); err != nil {
		t.Fatalf("epoch 7 at epoch 7: %v", err)
	}
	del := &Command{Op: OpTxn, Txn: &storev1.TxnRequest{Namespace: SingletonNamespace, Success: []*storev1.TxnOp{
		{Op: &storev1.TxnOp_Delete{Delete: &storev1.TxnDelete{Key: []byte(key)}}},
	}}}
	if err := apply(10, del); err != nil {
		t.Fatal(err)
	}
	if err := apply(11, fenced("counter", "k", 0)); err != nil {
		t.Fatalf("no singleton record: %v", err)
	}
}

// BenchmarkApplyPut compares a plugin's put to a namespace that is no
// singleton's, unfenced and fenced, and a fenced put to a singleton's.
func BenchmarkApplyPut(b *testing.B) {
	for _, bc := range []struct {
		name  string
		ns    string
		fence *storev1.Fence
	}{
		{"unfenced", "echo", nil},
		{"fenced", "echo", &storev1.Fence{}},
		{"fenced-singleton", "counter", &storev1.Fence{Epoch: 1}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := newFSM(b)
			f.Apply(logOf(b, 1, txnPut(SingletonNamespace, string(SingletonKey("counter")), `{"active":"n1"}`, 0)))
			entries := make([]Entry, b.N)
			for i := range entries {
				c := txnPut(bc.ns, "key", "value", 0)
				c.Txn.Fence = bc.fence
				entries[i] = logOf(b, uint64(i+2), c)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range entries {
				if r := f.Apply(entries[i])[0]; r.Err != nil {
					b.Fatal(r.Err)
				}
			}
		})
	}
}
