package main

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/plughost/plughost/host/router"
)

// loadCall is one call of a cluster bench's steady load.
type loadCall struct {
	node       string
	start, end time.Time
	// held is how long the routers held the call (their held trailer).
	held time.Duration
	// version is the plugin version that answered, when the call says.
	version string
	err     error
}

// loadInvoke makes one call through a, passing opts to the gRPC call; it
// returns the version that answered, if it knows it.
type loadInvoke func(ctx context.Context, a *benchAgent, opts ...grpc.CallOption) (version string, err error)

// steadyLoad makes calls at a fixed rate, each through the agent that
// pick returns (none: that tick makes no call), from start until stop.
type steadyLoad struct {
	mu    sync.Mutex
	calls []loadCall
	wg    sync.WaitGroup
	quit  context.CancelFunc
}

// startLoad starts rate calls a second, each with its own timeout. pick
// gets the tick's number, from 0.
func startLoad(ctx context.Context, rate int, timeout time.Duration, pick func(i int) *benchAgent, invoke loadInvoke) *steadyLoad {
	l := &steadyLoad{}
	loadCtx, quit := context.WithCancel(ctx)
	l.quit = quit
	l.wg.Go(func() {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			a := pick(i)
			if a == nil {
				continue
			}
			l.wg.Go(func() {
				cctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				var trailer metadata.MD
				c := loadCall{node: a.node, start: time.Now()}
				c.version, c.err = invoke(cctx, a, grpc.Trailer(&trailer))
				c.end = time.Now()
				if v := trailer.Get(router.HeldTrailer); len(v) > 0 {
					ms, _ := strconv.ParseInt(v[0], 10, 64)
					c.held = time.Duration(ms) * time.Millisecond
				}
				l.mu.Lock()
				l.calls = append(l.calls, c)
				l.mu.Unlock()
			})
		}
	})
	return l
}

// stop stops making calls and waits for those in flight.
func (l *steadyLoad) stop() {
	l.quit()
	l.wg.Wait()
}

// ended returns the calls that have ended, by start.
func (l *steadyLoad) ended() []loadCall {
	l.mu.Lock()
	calls := slices.Clone(l.calls)
	l.mu.Unlock()
	slices.SortFunc(calls, func(a, b loadCall) int { return a.start.Compare(b.start) })
	return calls
}
