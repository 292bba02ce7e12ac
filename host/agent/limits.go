package agent

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/plughost/plughost/internal/netlimit"
)

// listen opens the listener named by flag ("api", "http") on addr, with
// the connection limits of the agent's config: past max_conns, or
// max_conns_per_client from one address, or max_pending_conns(_per_client)
// of those without a first call, a connection is closed at once; new ones
// are taken at most accept_rate a second; and running out of file
// descriptors pauses accepting rather than stopping the agent.
func (a *Agent) listen(name, addr string) (*netlimit.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent: -%s %s: %w", name, addr, err)
	}
	return netlimit.Wrap(ln, netlimit.Config{
		Name:                name,
		MaxConns:            a.cfg.MaxConns,
		MaxConnsPerClient:   a.cfg.MaxConnsPerClient,
		MaxPending:          a.cfg.MaxPendingConns,
		MaxPendingPerClient: a.cfg.MaxPendingConnsPerClient,
		AcceptRate:          a.cfg.AcceptRate,
		AcceptBurst:         a.cfg.AcceptBurst,
		Logger:              a.log.Named(name),
	}), nil
}

// HTTP server timeouts: /v1/health and /metrics take GET requests with no
// body, so a client has 5 s to send its headers and 10 s for all of it,
// gets 30 s to read the answer, and a kept-alive connection is closed
// after a minute without a request.
const (
	httpReadHeaderTimeout = 5 * time.Second
	httpReadTimeout       = 10 * time.Second
	httpWriteTimeout      = 30 * time.Second
	httpIdleTimeout       = time.Minute
	httpMaxHeaderBytes    = 64 << 10
)

func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		// A connection's first request takes it out of the listener's
		// budget of connections without one.
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateActive {
				netlimit.Established(c)
			}
		},
		Handler:           h,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
	}
}

// idleTimeout is conn_idle_timeout as router.Config.IdleTimeout takes it:
// 0 (never) is negative there.
func idleTimeout(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
