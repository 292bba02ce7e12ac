package main

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	counterv1 "github.com/plughost/plughost/plugins/counter/proto/counter/v1"
	"github.com/plughost/plughost/sdk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// keyPrefix is where counters live in the namespace: counters/<name>.
	keyPrefix = "counters/"
	// maxNameBytes bounds a counter's name.
	maxNameBytes = 256
	// maxAttempts bounds the compare-and-set loop of one Increment.
	maxAttempts = 64
	// maxBackoff caps the pause between two attempts.
	maxBackoff = 50 * time.Millisecond
)

// server implements counter.v1.CounterService over the plugin's store.
type server struct {
	counterv1.UnimplementedCounterServiceServer
	version string
	store   sdk.Store // set by Configure

	// locks serialises increments of one counter within this instance, so
	// that only instances on different nodes race each other's
	// compare-and-set. Exactness never depends on it.
	locks keyLocks
}

var (
	_ sdk.Plugin     = (*server)(nil)
	_ sdk.Configurer = (*server)(nil)
)

func newServer(version string) *server { return &server{version: version} }

// Register implements sdk.Plugin.
func (s *server) Register(r grpc.ServiceRegistrar) { counterv1.RegisterCounterServiceServer(r, s) }

// Configure implements sdk.Configurer. Counter takes no configuration.
func (s *server) Configure(_ context.Context, env *sdk.Env) error {
	var cfg struct{}
	if err := env.DecodeConfig(&cfg); err != nil {
		return err
	}
	s.store = env.Store
	return nil
}

// Increment adds delta (0 means 1) to a counter and returns the new value.
// It reads the counter, then writes the sum in a transaction that holds only
// if no one wrote the counter in between; when someone did, the failure
// branch reads the new value and it tries again.
func (s *server) Increment(ctx context.Context, req *counterv1.IncrementRequest) (*counterv1.IncrementResponse, error) {
	key, err := counterKey(req.GetName())
	if err != nil {
		return nil, err
	}
	delta := req.GetDelta()
	if delta == 0 {
		delta = 1
	}
	unlock := s.locks.lock(key)
	defer unlock()

	kv, err := s.store.Get(ctx, key)
	if err != nil && !errors.Is(err, sdk.ErrNotFound) {
		return nil, err
	}
	backoff := time.Millisecond
	for attempt := 1; ; attempt++ {
		cur, err := parseValue(kv)
		if err != nil {
			return nil, err
		}
		if (delta > 0 && cur > math.MaxInt64-delta) || (delta < 0 && cur < math.MinInt64-delta) {
			return nil, status.Errorf(codes.OutOfRange, "counter %q is %d: adding %d overflows int64", req.GetName(), cur, delta)
		}
		next := cur + delta
		res, err := s.store.Txn(ctx, sdk.Txn{
			If:   []sdk.Compare{sdk.ModRevisionEquals(key, kv.ModRevision)},
			Then: []sdk.Op{sdk.PutOp(key, []byte(strconv.FormatInt(next, 10)))},
			Else: []sdk.Op{sdk.GetOp(key)},
		})
		if err != nil {
			return nil, err
		}
		if res.Succeeded {
			return &counterv1.IncrementResponse{Value: next, Version: s.version}, nil
		}
		if attempt == maxAttempts {
			return nil, status.Errorf(codes.Aborted, "counter %q: gave up after %d conflicting writes from other nodes; retry", req.GetName(), attempt)
		}
		kv = res.Results[0].KV // the counter as the winner left it (zero if deleted)
		// Another node won the race: let it go ahead before trying again.
		if err := sleep(ctx, rand.N(backoff)+1); err != nil {
			return nil, err
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// Get reads a counter; a counter never incremented is 0.
func (s *server) Get(ctx context.Context, req *counterv1.GetRequest) (*counterv1.GetResponse, error) {
	key, err := counterKey(req.GetName())
	if err != nil {
		return nil, err
	}
	kv, err := s.store.Get(ctx, key)
	if err != nil && !errors.Is(err, sdk.ErrNotFound) {
		return nil, err
	}
	v, err := parseValue(kv)
	if err != nil {
		return nil, err
	}
	return &counterv1.GetResponse{Value: v, Version: s.version}, nil
}

// counterKey returns the store key of a counter name.
func counterKey(name string) (string, error) {
	if name == "" || len(name) > maxNameBytes || !utf8.ValidString(name) {
		return "", status.Errorf(codes.InvalidArgument, "counter name %q is invalid: use 1 to %d bytes of UTF-8", name, maxNameBytes)
	}
	return keyPrefix + name, nil
}

// parseValue reads a counter's decimal value; a missing key is 0.
func parseValue(kv sdk.KV) (int64, error) {
	if kv.ModRevision == 0 {
		return 0, nil
	}
	v, err := strconv.ParseInt(string(kv.Value), 10, 64)
	if err != nil {
		return 0, status.Errorf(codes.DataLoss, "counter key %s holds %q, not a decimal int64", kv.Key, kv.Value)
	}
	return v, nil
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-t.C:
		return nil
	}
}

// keyLocks is a set of mutexes by key that frees a key's mutex when no one
// holds or waits for it.
type keyLocks struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

// lock locks key and returns its unlock.
func (l *keyLocks) lock(key string) (unlock func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*keyLock{}
	}
	k := l.locks[key]
	if k == nil {
		k = &keyLock{}
		l.locks[key] = k
	}
	k.refs++
	l.mu.Unlock()

	k.mu.Lock()
	return func() {
		k.mu.Unlock()
		l.mu.Lock()
		if k.refs--; k.refs == 0 {
			delete(l.locks, key)
		}
		l.mu.Unlock()
	}
}
