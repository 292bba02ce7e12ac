// Package loadgen drives a fixed number of concurrent callers at an
// operation and summarizes throughput and latency, for plughost bench and
// the benchmarks in test/.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Config says how much load to drive. The run ends after Total operations,
// or after Duration, whichever is set (Total wins when both are).
type Config struct {
	Clients  int
	Total    int
	Duration time.Duration
	// Warmup runs before measuring, at the same concurrency.
	Warmup time.Duration
}

// Result summarizes a run.
type Result struct {
	Clients   int           `json:"clients"`
	Ops       int           `json:"ops"`
	Errors    int           `json:"errors"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	OpsPerSec float64       `json:"ops_per_sec"`
	Avg       time.Duration `json:"avg_ns"`
	P50       time.Duration `json:"p50_ns"`
	P90       time.Duration `json:"p90_ns"`
	P99       time.Duration `json:"p99_ns"`
	Max       time.Duration `json:"max_ns"`
	// FirstError is the first error an operation returned, for the report.
	FirstError string `json:"first_error,omitempty"`
}

// Op is one operation; client numbers the caller (0..Clients-1).
type Op func(ctx context.Context, client int) error

// Run drives op with cfg.Clients concurrent callers.
func Run(ctx context.Context, cfg Config, op Op) (Result, error) {
	if cfg.Clients <= 0 {
		return Result{}, errors.New("loadgen: clients must be at least 1")
	}
	if cfg.Total <= 0 && cfg.Duration <= 0 {
		return Result{}, errors.New("loadgen: give a total or a duration")
	}
	if cfg.Warmup > 0 {
		_ = drive(ctx, Config{Clients: cfg.Clients, Duration: cfg.Warmup}, op)
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
	}
	return drive(ctx, cfg, op).result(cfg.Clients), ctx.Err()
}

// Interleave measures ops side by side: after each op's warm-up it runs
// them in turns of cfg.Duration/rounds each, ABAB then BABA alternately,
// until each has run for cfg.Duration, and summarizes each op over all its
// turns. A change in the machine's speed during the run (another tenant,
// frequency scaling) then weighs on every op alike, where runs one after
// the other would charge it to whichever ran at the time: use it to
// compare two ways of doing the same thing. Only Duration is used, not
// Total.
func Interleave(ctx context.Context, cfg Config, rounds int, ops ...Op) ([]Result, error) {
	if cfg.Clients <= 0 {
		return nil, errors.New("loadgen: clients must be at least 1")
	}
	if cfg.Duration <= 0 || rounds <= 0 {
		return nil, errors.New("loadgen: interleaving needs a duration and at least one round")
	}
	turn := Config{Clients: cfg.Clients, Duration: cfg.Duration / time.Duration(rounds)}
	if cfg.Warmup > 0 {
		for _, op := range ops {
			_ = drive(ctx, Config{Clients: cfg.Clients, Duration: cfg.Warmup}, op)
		}
	}
	all := make([]samples, len(ops))
	for r := range rounds {
		for k := range ops {
			i := k
			if r%2 == 1 {
				i = len(ops) - 1 - k
			}
			all[i].add(drive(ctx, turn, ops[i]))
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
	}
	out := make([]Result, len(ops))
	for i := range all {
		out[i] = all[i].result(cfg.Clients)
	}
	return out, nil
}

func drive(ctx context.Context, cfg Config, op Op) samples {
	var (
		remaining atomic.Int64
		errs      atomic.Int64
		firstErr  atomic.Value
		wg        sync.WaitGroup
	)
	remaining.Store(int64(cfg.Total))
	lat := make([][]time.Duration, cfg.Clients)
	start := time.Now()
	// A timed run stops starting operations at end; those in flight finish
	// normally, so the end of the run is never counted as a failure.
	end := start.Add(cfg.Duration)
	for c := 0; c < cfg.Clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 1024)
			for ctx.Err() == nil {
				if cfg.Total > 0 {
					if remaining.Add(-1) < 0 {
						break
					}
				} else if !time.Now().Before(end) {
					break
				}
				t0 := time.Now()
				err := op(ctx, c)
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					if errs.Add(1) == 1 {
						firstErr.Store(err.Error())
					}
					continue
				}
				mine = append(mine, d)
			}
			lat[c] = mine
		}()
	}
	wg.Wait()
	s := samples{lat: slices.Concat(lat...), errors: int(errs.Load()), elapsed: time.Since(start)}
	s.firstErr, _ = firstErr.Load().(string)
	return s
}

// samples are the latencies of one op's successful calls over one or more
// runs, with the runs' errors and time.
type samples struct {
	lat      []time.Duration
	errors   int
	firstErr string
	elapsed  time.Duration
}

func (s *samples) add(o samples) {
	s.lat = append(s.lat, o.lat...)
	s.errors += o.errors
	if s.firstErr == "" {
		s.firstErr = o.firstErr
	}
	s.elapsed += o.elapsed
}

func (s samples) result(clients int) Result {
	all := s.lat
	slices.Sort(all)
	r := Result{Clients: clients, Ops: len(all), Errors: s.errors, Elapsed: s.elapsed, FirstError: s.firstErr}
	if len(all) == 0 {
		return r
	}
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	r.OpsPerSec = float64(len(all)) / s.elapsed.Seconds()
	r.Avg = sum / time.Duration(len(all))
	r.P50, r.P90, r.P99 = Percentile(all, 50), Percentile(all, 90), Percentile(all, 99)
	r.Max = all[len(all)-1]
	return r
}

// Percentile returns the p-th percentile of sorted durations.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

// String is a one-line summary.
func (r Result) String() string {
	return fmt.Sprintf("%d clients: %d ops in %s, %.0f ops/s, avg %s, p50 %s, p99 %s, max %s, %d errors",
		r.Clients, r.Ops, r.Elapsed.Round(time.Millisecond), r.OpsPerSec, us(r.Avg), us(r.P50), us(r.P99), us(r.Max), r.Errors)
}

func us(d time.Duration) string { return d.Round(time.Microsecond).String() }
