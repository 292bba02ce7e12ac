package supervisor

import (
	"time"

	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// Progress is one step of a plugin's version swap on this node.
type Progress struct {
	Phase    operatorv1.SwapPhase
	From, To string
	Message  string
	TimeLeft time.Duration
	InFlight int64
	CutOff   int64
	Elapsed  time.Duration
}

// Subscribe streams the plugin's swap progress on this node until cancel is
// called. A slow reader misses intermediate steps, never the last one of a
// swap (done or fell back), which is kept for it.
func (s *Supervisor) Subscribe(name string) (<-chan Progress, func()) {
	s.mu.Lock()
	m, ok := s.plugins[name]
	if !ok {
		// Not assigned here (yet): its assignment may be on the way.
		m = s.startManaged(name)
	}
	s.mu.Unlock()
	ch := make(chan Progress, 64)
	if m == nil {
		close(ch)
		return ch, func() {}
	}
	m.mu.Lock()
	m.nextSub++
	id := m.nextSub
	if m.subs == nil {
		m.subs = map[int]chan Progress{}
	}
	m.subs[id] = ch
	m.mu.Unlock()
	return ch, func() {
		m.mu.Lock()
		delete(m.subs, id)
		m.mu.Unlock()
	}
}

// emit sends p to every subscriber without blocking supervision.
func (m *managed) emit(p Progress) {
	m.mu.Lock()
	defer m.mu.Unlock()
	final := p.Phase == operatorv1.SwapPhase_SWAP_PHASE_DONE || p.Phase == operatorv1.SwapPhase_SWAP_PHASE_FELL_BACK
	for _, ch := range m.subs {
		select {
		case ch <- p:
		default:
			if final {
				// Make room for the outcome: drop the oldest step.
				select {
				case <-ch:
				default:
				}
				select {
				case ch <- p:
				default:
				}
			}
		}
	}
}
