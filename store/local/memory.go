package local

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plughost/plughost/store/fsm"
)

// memoryExpiryScan is how often a Memory store expires keys.
const memoryExpiryScan = 20 * time.Millisecond

// Memory is a single-process store without raft: an Engine over a state
// machine whose log is a counter. Writes apply in order, one at a time,
// before they return, so every read is linearizable. It is what
// sdk/sdktest runs plugins against; the agent's store is package store.
type Memory struct {
	*Engine
	log    *memoryLog
	cancel context.CancelFunc
	done   chan struct{} // closed when the expiry loop ends

	closeOnce sync.Once
	closeErr  error
}

// OpenMemory opens an empty Memory store with the replicated store's
// default limits and no quotas.
func OpenMemory() (*Memory, error) {
	f, err := fsm.New(fsm.Config{WatchHistory: DefaultWatchHistory})
	if err != nil {
		return nil, err
	}
	log := &memoryLog{fsm: f}
	m := &Memory{
		Engine: New(f, log, Config{
			MaxValueBytes: DefaultMaxValueBytes,
			MaxTxnBytes:   DefaultMaxTxnBytes,
			Quota:         func(string) fsm.Quota { return fsm.Quota{} },
			Clock:         time.Now,
		}),
		log:  log,
		done: make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go m.expireLoop(ctx)
	return m, nil
}

// Revision is the last revision applied.
func (m *Memory) Revision() int64 { return m.fsm.Applied() }

// Close stops expiring keys, ends every watch and drops the data. It is
// safe to call more than once.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() {
		m.log.closed.Store(true)
		m.cancel()
		<-m.done
		m.log.mu.Lock()
		m.closeErr = m.fsm.Close()
		m.log.mu.Unlock()
	})
	return m.closeErr
}

// expireLoop expires keys whose time has come until ctx ends.
func (m *Memory) expireLoop(ctx context.Context) {
	defer close(m.done)
	tick := time.NewTicker(memoryExpiryScan)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			// A failed pass leaves the keys due; the next pass retries.
			_, _ = m.ExpirePass(ctx)
		}
	}
}

// memoryLog is Memory's log: proposals apply under one lock, in the order
// they take it, at revisions 1, 2, 3...
type memoryLog struct {
	fsm    *fsm.FSM
	closed atomic.Bool

	mu    sync.Mutex
	index uint64
}

var _ Log = (*memoryLog)(nil)

func (l *memoryLog) Propose(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	if l.closed.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data, err := cmd.Encode()
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Load() {
		return nil, ErrClosed
	}
	l.index++
	res := l.fsm.Apply(fsm.Entry{Index: l.index, Term: 1, Command: true, Data: data})[0]
	if errors.Is(res.Err, fsm.ErrClosed) {
		return nil, ErrClosed
	}
	return res, res.Err
}

// Linearize has nothing to wait for: a write is applied before it returns.
func (l *memoryLog) Linearize(context.Context) error {
	if l.closed.Load() {
		return ErrClosed
	}
	return nil
}

func (l *memoryLog) Closed() bool { return l.closed.Load() }
