package store

import (
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// logCache keeps the most recent raft log entries in memory, in front of a
// log store, so that the leader replicates fresh entries without reading
// them back. It is raft.LogCache, except that an error from the store
// reaches raft as it is: raft hands a failed append's error to the writes
// in it, and ErrNoSpace must still match there.
type logCache struct {
	store raft.LogStore
	mu    sync.RWMutex
	ring  []*raft.Log // entry i at i % len(ring)
}

var (
	_ raft.LogStore          = (*logCache)(nil)
	_ raft.MonotonicLogStore = (*logCache)(nil)
)

func newLogCache(entries int, store raft.LogStore) *logCache {
	return &logCache{store: store, ring: make([]*raft.Log, entries)}
}

// IsMonotonic implements raft.MonotonicLogStore for the store beneath.
func (c *logCache) IsMonotonic() bool {
	m, ok := c.store.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// GetLog implements raft.LogStore.
func (c *logCache) GetLog(index uint64, log *raft.Log) error {
	c.mu.RLock()
	cached := c.ring[index%uint64(len(c.ring))]
	c.mu.RUnlock()
	if cached != nil && cached.Index == index {
		*log = *cached
		return nil
	}
	return c.store.GetLog(index, log)
}

// StoreLog implements raft.LogStore.
func (c *logCache) StoreLog(log *raft.Log) error { return c.StoreLogs([]*raft.Log{log}) }

// StoreLogs implements raft.LogStore; entries are cached once stored.
func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if err := c.store.StoreLogs(logs); err != nil {
		return err
	}
	c.mu.Lock()
	for _, l := range logs {
		c.ring[l.Index%uint64(len(c.ring))] = l
	}
	c.mu.Unlock()
	return nil
}

// FirstIndex implements raft.LogStore.
func (c *logCache) FirstIndex() (uint64, error) { return c.store.FirstIndex() }

// LastIndex implements raft.LogStore.
func (c *logCache) LastIndex() (uint64, error) { return c.store.LastIndex() }

// DeleteRange implements raft.LogStore; it empties the cache.
func (c *logCache) DeleteRange(lo, hi uint64) error {
	c.mu.Lock()
	clear(c.ring)
	c.mu.Unlock()
	if err := c.store.DeleteRange(lo, hi); err != nil {
		return fmt.Errorf("delete raft log entries %d to %d: %w", lo, hi, err)
	}
	return nil
}
