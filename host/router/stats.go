package router

import (
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Stats is a snapshot of the router's counters. Counters only grow, for the
// life of the Router, so they map onto Prometheus counters.
type Stats struct {
	// Plugins has one entry per plugin the router ever knew, by name.
	Plugins []PluginStats
	// UnknownService counts calls to services no plugin declared.
	UnknownService uint64
}

// PluginStats counts the calls routed to one plugin.
type PluginStats struct {
	Plugin string
	// Calls counts every call to one of the plugin's services, whatever
	// its outcome.
	Calls uint64
	// Failures counts the calls that ended with a status other than OK, by
	// code; codes with no failure are absent.
	Failures map[codes.Code]uint64
	// Held counts the calls held while the plugin had no serving instance,
	// and HeldTime adds up how long they waited.
	Held     uint64
	HeldTime time.Duration
}

// numCodes is the number of gRPC status codes, OK through Unauthenticated.
const numCodes = int(codes.Unauthenticated) + 1

// counters is one plugin's counters, updated with atomics on every call.
type counters struct {
	calls     atomic.Uint64
	failures  [numCodes]atomic.Uint64
	held      atomic.Uint64
	heldNanos atomic.Int64
}

// recordHeld counts one call held for d.
func (c *counters) recordHeld(d time.Duration) {
	c.held.Add(1)
	c.heldNanos.Add(int64(d))
}

// record counts one call that ended with err.
func (c *counters) record(err error) { c.recordCode(status.Code(err)) }

// recordCode counts one call that ended with code.
func (c *counters) recordCode(code codes.Code) {
	c.calls.Add(1)
	if code == codes.OK {
		return
	}
	if int(code) >= numCodes {
		code = codes.Unknown
	}
	c.failures[code].Add(1)
}

// Stats returns the router's counters.
func (r *Router) Stats() Stats {
	r.mu.Lock()
	ps := make([]*plugin, 0, len(r.plugins))
	for _, p := range r.plugins {
		ps = append(ps, p)
	}
	r.mu.Unlock()
	slices.SortFunc(ps, func(a, b *plugin) int { return strings.Compare(a.name, b.name) })

	out := Stats{UnknownService: r.unknown.Load(), Plugins: make([]PluginStats, 0, len(ps))}
	for _, p := range ps {
		s := PluginStats{Plugin: p.name, Calls: p.stats.calls.Load(), Held: p.stats.held.Load(), HeldTime: time.Duration(p.stats.heldNanos.Load())}
		for c := range p.stats.failures {
			if n := p.stats.failures[c].Load(); n > 0 {
				if s.Failures == nil {
					s.Failures = make(map[codes.Code]uint64)
				}
				s.Failures[codes.Code(c)] = n
			}
		}
		out.Plugins = append(out.Plugins, s)
	}
	return out
}
