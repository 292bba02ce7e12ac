package cluster

import "sync"

// memberChanges fans membership changes out to MemberChanges's channels.
type memberChanges struct {
	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

// notify tells every subscriber, without waiting: a channel that holds a
// value already holds news of this change too.
func (m *memberChanges) notify() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// MemberChanges returns a channel that receives a value after members join,
// leave, fail, are reaped or change their tags; several changes in a row
// may come as one value. stop releases the channel.
func (c *Cluster) MemberChanges() (changes <-chan struct{}, stop func()) {
	ch := make(chan struct{}, 1)
	c.changes.mu.Lock()
	if c.changes.subs == nil {
		c.changes.subs = map[chan struct{}]struct{}{}
	}
	c.changes.subs[ch] = struct{}{}
	c.changes.mu.Unlock()
	return ch, func() {
		c.changes.mu.Lock()
		delete(c.changes.subs, ch)
		c.changes.mu.Unlock()
	}
}
