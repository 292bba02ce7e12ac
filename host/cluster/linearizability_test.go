package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// kvInput and kvOutput are one operation of the history porcupine checks.
type kvInput struct {
	op       int // opGet, opPut, opCAS
	key      string
	value    string // put, cas: the new value
	expected string // cas: the value compared
}

type kvOutput struct {
	value   string // get
	ok      bool   // cas: the compare held
	unknown bool   // put, cas: failed ambiguously, may or may not have happened
}

const (
	opGet = iota
	opPut
	opCAS
)

// kvModel is a register per key with get, put and compare-and-set. A write
// that failed may or may not have happened, so the model is
// nondeterministic for those.
var kvModel = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(kvInput).key
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() []any { return []any{"0"} },
	Step: func(state, input, output any) []any {
		st, in, out := state.(string), input.(kvInput), output.(kvOutput)
		switch in.op {
		case opGet:
			if out.value == st {
				return []any{st}
			}
			return nil
		case opPut:
			if out.unknown {
				return []any{st, in.value}
			}
			return []any{in.value}
		default:
			switch {
			case out.unknown && st == in.expected:
				return []any{st, in.value}
			case out.unknown:
				return []any{st}
			case out.ok && st == in.expected:
				return []any{in.value}
			case !out.ok && st != in.expected:
				return []any{st}
			}
			return nil
		}
	},
	Equal: func(a, b any) bool { return a.(string) == b.(string) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		switch in.op {
		case opGet:
			return fmt.Sprintf("get(%s) -> %q", in.key, out.value)
		case opPut:
			return fmt.Sprintf("put(%s, %s) unknown=%v", in.key, in.value, out.unknown)
		}
		return fmt.Sprintf("cas(%s, %s -> %s) ok=%v unknown=%v", in.key, in.expected, in.value, out.ok, out.unknown)
	},
}

// TestLinearizableAcrossLeaderRestart records concurrent get/put/CAS
// histories through every node (followers forward) while the leader is
// killed and restarted, and checks them with porcupine.
func TestLinearizableAcrossLeaderRestart(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	keys := []string{"a", "b", "c"}
	for _, k := range keys {
		put(t, leaderOf(t, nodes), k, "0")
	}

	var nmu sync.Mutex
	pick := func(r *rand.Rand) *testNode {
		nmu.Lock()
		defer nmu.Unlock()
		var live []*testNode
		for _, n := range nodes {
			if !n.isDown() {
				live = append(live, n)
			}
		}
		return live[r.IntN(len(live))]
	}

	t0 := time.Now()
	now := func() int64 { return int64(time.Since(t0)) }
	const clients = 6
	var (
		hmu     sync.Mutex
		history []porcupine.Operation
		seq     int
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// Runs before the nodes close, also when the test fails early.
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 7))
			for ctx.Err() == nil {
				n := pick(r)
				hmu.Lock()
				seq++
				cur := seq
				hmu.Unlock()
				in := kvInput{op: r.IntN(3), key: keys[r.IntN(len(keys))], value: strconv.Itoa(cur), expected: strconv.Itoa(r.IntN(cur + 1))}
				var out kvOutput
				cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
				call := now()
				var err error
				switch in.op {
				case opGet:
					var resp *storev1.GetResponse
					resp, err = n.st.Get(cctx, &storev1.GetRequest{Namespace: "app", Key: []byte(in.key)})
					out.value = string(resp.GetKv().GetValue())
				case opPut:
					_, err = n.st.Put(cctx, &storev1.PutRequest{Namespace: "app", Key: []byte(in.key), Value: []byte(in.value)})
				default:
					var resp *storev1.TxnResponse
					resp, err = n.st.Txn(cctx, &storev1.TxnRequest{Namespace: "app",
						Compares: []*storev1.Compare{{Key: []byte(in.key), Operator: storev1.CompareOperator_COMPARE_OPERATOR_EQUAL, Target: &storev1.Compare_Value{Value: []byte(in.expected)}}},
						Success:  []*storev1.TxnOp{{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: []byte(in.key), Value: []byte(in.value)}}}},
					})
					out.ok = resp.GetSucceeded()
				}
				ret := now()
				ccancel()
				if err != nil {
					if in.op == opGet {
						continue // a failed read changes nothing
					}
					// Ambiguous: it may take effect any time after the call.
					out = kvOutput{unknown: true}
					ret = int64(time.Hour)
				}
				hmu.Lock()
				history = append(history, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret})
				hmu.Unlock()
			}
		}()
	}

	countOps := func() int {
		hmu.Lock()
		defer hmu.Unlock()
		return len(history)
	}
	testenv.WaitFor(t, 20*time.Second, "a first stretch of history", func() error {
		if n := countOps(); n < 300 {
			return fmt.Errorf("%d ops", n)
		}
		return nil
	})
	old := leaderOf(t, nodes)
	old.kill()
	before := countOps()
	testenv.WaitFor(t, 20*time.Second, "operations under the new leader", func() error {
		if n := countOps(); n < before+300 {
			return fmt.Errorf("%d ops since the kill", n-before)
		}
		return nil
	})
	var join string
	for _, n := range nodes {
		if n != old {
			join = n.c.Addr()
		}
	}
	back := old.restart(join)
	nmu.Lock()
	for i, n := range nodes {
		if n == old {
			nodes[i] = back
		}
	}
	nmu.Unlock()
	before = countOps()
	testenv.WaitFor(t, 20*time.Second, "operations after the restart", func() error {
		if n := countOps(); n < before+300 {
			return fmt.Errorf("%d ops since the restart", n-before)
		}
		return nil
	})
	cancel()
	wg.Wait()

	hmu.Lock()
	defer hmu.Unlock()
	unknown := 0
	for _, op := range history {
		if op.Output.(kvOutput).unknown {
			unknown++
		}
	}
	t.Logf("checking %d operations (%d ambiguous)", len(history), unknown)
	res, info := porcupine.CheckOperationsVerbose(kvModel.ToModel(), history, 60*time.Second)
	switch res {
	case porcupine.Illegal:
		path := t.TempDir() + "/history.html"
		if err := porcupine.VisualizePath(kvModel.ToModel(), info, path); err == nil {
			t.Logf("visualization: %s", path)
		}
		t.Fatal("the history is not linearizable")
	case porcupine.Unknown:
		t.Fatal("porcupine timed out checking the history")
	}
}
