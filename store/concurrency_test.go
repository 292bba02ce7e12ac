package store

import (
	"time"

	"context"
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// incrementByPut adds one to the counter at key with a read and a CAS put,
// retrying on conflict. It returns how many attempts it took.
func incrementByPut(ctx context.Context, s *Store, key string) (int, error) {
	for attempt := 1; ; attempt++ {
		resp, err := s.Get(ctx, &storev1.GetRequest{Namespace: "app", Key: []byte(key)})
		if err != nil {
			return attempt, err
		}
		n, _ := strconv.Atoi(string(resp.GetKv().GetValue()))
		_, err = s.Put(ctx, &storev1.PutRequest{
			Namespace:           "app",
			Key:                 []byte(key),
			Value:               []byte(strconv.Itoa(n + 1)),
			ExpectedModRevision: rev(resp.GetKv().GetModRevision()),
		})
		if errors.Is(err, ErrCASFailed) {
			continue
		}
		return attempt, err
	}
}

// incrementByTxn does the same in transactions: the failure branch reads the
// current value, so a retry needs no separate read.
func incrementByTxn(ctx context.Context, s *Store, key string) (int, error) {
	var cur *storev1.KeyValue
	for attempt := 1; ; attempt++ {
		n, _ := strconv.Atoi(string(cur.GetValue()))
		resp, err := s.Txn(ctx, &storev1.TxnRequest{
			Namespace: "app",
			Compares: []*storev1.Compare{{
				Key:    []byte(key),
				Target: &storev1.Compare_ModRevision{ModRevision: cur.GetModRevision()},
			}},
			Success: []*storev1.TxnOp{putTxnOp(key, strconv.Itoa(n+1), 0)},
			Failure: []*storev1.TxnOp{getTxnOp(key)},
		})
		if err != nil {
			return attempt, err
		}
		if resp.GetSucceeded() {
			return attempt, nil
		}
		cur = resp.GetResults()[0].GetKv()
	}
}

func TestConcurrentIncrementsStayExact(t *testing.T) {
	s := newMemStore(t)
	const workers, each = 16, 25
	for name, inc := range map[string]func(context.Context, *Store, string) (int, error){
		"put": incrementByPut,
		"txn": incrementByTxn,
	} {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			var mu sync.Mutex
			attempts := 0
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range each {
						n, err := inc(testenv.Context(t, 20*time.Second), s, name)
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						attempts += n
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			kv := get(t, s, "app", name)
			if string(kv.GetValue()) != strconv.Itoa(workers*each) || kv.GetVersion() != workers*each {
				t.Fatalf("counter = %q at version %d after %d increments", kv.GetValue(), kv.GetVersion(), workers*each)
			}
			if attempts == workers*each {
				t.Logf("no conflicts at all in %d increments: the test did not exercise CAS retries", attempts)
			}
		})
	}
}
