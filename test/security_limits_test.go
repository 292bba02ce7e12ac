package test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	rv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// Issue 14, findings 8 and 9: a client that holds connections, or sends
// the store more than it should, must not stop the agent or take its
// memory, and other clients' calls go on.

// dialFrom opens a TCP connection to addr from the loopback address src
// (127.0.0.0/8 all reaches the agent), so a test can be several clients.
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	return d.Dial("tcp", addr)
}

// closedByAgent waits up to within for the agent to close c, and reports
// whether it did (EOF or a reset) rather than the wait ending.
func closedByAgent(c net.Conn, within time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue // the agent's SETTINGS, a GOAWAY
		}
		return err == io.EOF || errors.Is(err, syscall.ECONNRESET)
	}
}

// procCPU is the user and system CPU time process pid has used.
func procCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command's closing parenthesis; utime and stime are
	// the 14th and 15th of the line, in clock ticks (100 a second).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// selfCPU is the user and system CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatus reads a field in kB of /proc/<pid>/status, in bytes.
func procStatus(t testing.TB, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// storeClient is a store client of a's on a connection of its own, with
// a's token, that sends up to 64 MiB, as the CLI does.
func storeClient(t testing.TB, a *Agent) (storev1.StoreServiceClient, *grpc.ClientConn) {
	t.Helper()
	cc, err := grpc.NewClient(a.API, grpc.WithTransportCredentials(insecure.NewCredentials()), a.TokenOption(),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20), grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return storev1.NewStoreServiceClient(cc), cc
}

// caller makes store calls on its own connection until stopped, and
// records their latencies and failures.
type caller struct {
	mu    sync.Mutex
	lat   []time.Duration
	fails []error
	stop  chan struct{}
	done  chan struct{}
}

func startCaller(t testing.TB, a *Agent) *caller {
	t.Helper()
	client, _ := storeClient(t, a)
	c := &caller{stop: make(chan struct{}), done: make(chan struct{})}
	put := func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := client.Put(ctx, &storev1.PutRequest{Namespace: "caller", Key: []byte(strconv.Itoa(i % 100)), Value: []byte("v")})
		return err
	}
	if err := put(0); err != nil {
		t.Fatalf("caller's first put: %v", err)
	}
	go func() {
		defer close(c.done)
		for i := 0; ; i++ {
			select {
			case <-c.stop:
				return
			default:
			}
			start := time.Now()
			err := put(i)
			c.mu.Lock()
			c.lat = append(c.lat, time.Since(start))
			if err != nil {
				c.fails = append(c.fails, err)
			}
			c.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	t.Cleanup(c.end)
	return c
}

// end stops the caller and returns its calls' latencies, sorted, and
// failures.
func (c *caller) end() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

func (c *caller) results() (lat []time.Duration, fails []error) {
	c.end()
	c.mu.Lock()
	defer c.mu.Unlock()
	lat = slices.Clone(c.lat)
	slices.Sort(lat)
	return lat, slices.Clone(c.fails)
}

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	return lat[min(len(lat)-1, int(float64(len(lat))*p))]
}

// TestAgentOutOfFileDescriptorsKeepsServing: connections past the agent's
// open-file limit used to end the agent (its accept loop returned on
// EMFILE). Now it waits them out, says which limit it hit, and serves new
// connections once they close.
func TestAgentOutOfFileDescriptorsKeepsServing(t *testing.T) {
	t.Parallel()
	// No connection limits, so the descriptors run out first.
	a := NewAgent(t, AgentOptions{Config: `{"max_conns": 0, "max_conns_per_client": 0, "first_call_timeout": "60s"}`})
	pid := a.cmd.Process.Pid
	client, _ := storeClient(t, a)
	ctx := testenv.Context(t, 2*time.Minute)
	if _, err := client.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("before"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}

	fds, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	if err != nil {
		t.Fatal(err)
	}
	var old unix.Rlimit
	limit := uint64(len(fds) + 40)
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: limit}, &old); err != nil {
		t.Fatalf("lowering the agent's open-file limit: %v", err)
	}
	t.Cleanup(func() { _ = unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil) })
	t.Logf("agent has %d descriptors open; its limit is now %d", len(fds), limit)

	// 200 connections that never send a thing: the agent accepts until
	// its descriptors run out.
	var held []net.Conn
	for range 200 {
		c, err := dialFrom("127.0.0.2", a.API)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	testenv.WaitFor(t, 30*time.Second, "the agent to run out of descriptors and say so", func() error {
		if !strings.Contains(a.Log(), "cannot accept connections") {
			return errors.New("no warning yet")
		}
		return nil
	})
	select {
	case <-a.exited:
		t.Fatalf("the agent exited when its descriptors ran out: %v\n%s", a.exitErr, a.Log())
	default:
	}
	log := a.Log()
	if !strings.Contains(log, fmt.Sprintf("all %d file descriptors", limit)) || !strings.Contains(log, "ulimit -n") {
		t.Errorf("the warning does not name the limit:\n%s", log)
	}
	// A connection the agent already has keeps working meanwhile.
	if _, err := client.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("during"), Value: []byte("v")}); err != nil {
		t.Errorf("put on an open connection while descriptors ran out: %v", err)
	}

	for _, c := range held {
		c.Close()
	}
	fresh, _ := storeClient(t, a)
	testenv.WaitFor(t, 30*time.Second, "a new connection to be served", func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := fresh.Get(cctx, &storev1.GetRequest{Namespace: "app", Key: []byte("during")})
		return err
	})
	if !strings.Contains(a.Log(), "accepting connections again") {
		t.Errorf("the agent did not say it accepts again:\n%s", a.Log())
	}
}

// idleFlood opens n connections to addr that never make a call, from 20
// loopback addresses, a third each sending nothing, half the client
// preface, or the preface and half a SETTINGS frame, and waits for the
// agent to close each. It returns how long after the last was open all
// were closed, and how many the agent did not close within wait.
func idleFlood(t testing.TB, addr string, n int, wait time.Duration) (closedAfter time.Duration, open int) {
	return flood(t, addr, n, wait, func(i int, c net.Conn) net.Conn {
		switch i % 3 {
		case 1:
			_, _ = c.Write([]byte(http2.ClientPreface[:16]))
		case 2:
			_, _ = c.Write(append([]byte(http2.ClientPreface), 0, 0, 6, byte(http2.FrameSettings), 0))
		}
		return c
	})
}

// flood opens n connections to addr from 20 loopback addresses, each
// readied by prepare (which returns the connection to wait on), and waits
// for the agent to close each, as idleFlood says.
func flood(t testing.TB, addr string, n int, wait time.Duration, prepare func(i int, c net.Conn) net.Conn) (closedAfter time.Duration, open int) {
	t.Helper()
	var wg sync.WaitGroup
	var stillOpen atomic.Int64
	var lastClose atomic.Int64
	conns := make(chan net.Conn, n)
	sem := make(chan struct{}, 64)
	start := time.Now()
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialFrom(fmt.Sprintf("127.0.0.%d", 2+i%20), addr)
			if errors.Is(err, syscall.ECONNRESET) {
				// Refused as soon as accepted, before the dial returned.
				lastClose.Store(max(lastClose.Load(), int64(time.Since(start))))
				return
			}
			if err != nil {
				t.Errorf("dial %d: %v", i, err)
				return
			}
			conns <- prepare(i, c)
		}()
	}
	wg.Wait()
	close(conns)
	allOpen := time.Now()
	lastClose.Store(max(0, lastClose.Load()-int64(allOpen.Sub(start))))
	var readers sync.WaitGroup
	for c := range conns {
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer c.Close()
			if closedByAgent(c, wait) {
				lastClose.Store(max(lastClose.Load(), int64(time.Since(allOpen))))
			} else {
				stillOpen.Add(1)
			}
		}()
	}
	readers.Wait()
	return time.Duration(lastClose.Load()), int(stillOpen.Load())
}

// TestIdleFloodLeavesRoomForNewClients: 1,000 connections from 20
// addresses that never make a call, as many as max_conns, used to hold
// every place until first_call_timeout (here a minute), so no new client
// got in. Now they hold at most max_pending_conns, a new connection closes
// the oldest of them, and a new client's calls are answered while the
// flood stays open; the agent's metrics show the evictions.
func TestIdleFloodLeavesRoomForNewClients(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{Config: `{"first_call_timeout": "60s", "max_conns": 1000}`})
	established := startCaller(t, a)
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for i := range 1000 {
		c, err := dialFrom(fmt.Sprintf("127.0.0.%d", 2+i%20), a.API)
		if err == nil {
			held = append(held, c)
		}
	}
	client, _ := storeClient(t, a)
	ctx := testenv.Context(t, 20*time.Second)
	if _, err := client.Put(ctx, &storev1.PutRequest{Namespace: "caller", Key: []byte("new"), Value: []byte("v")}); err != nil {
		t.Fatalf("a new client's put while 1000 idle connections were held (max_conns 1000): %v", err)
	}
	if _, fails := established.results(); len(fails) > 0 {
		t.Errorf("the established client's puts failed during the flood: %d, first %v", len(fails), fails[0])
	}
	series, err := scrape(a)
	if err != nil {
		t.Fatal(err)
	}
	evicted := series[`plughost_listener_pending_evicted_total{limit="max_pending_conns",listener="api"}`]
	pending := series[`plughost_listener_pending_connections{listener="api"}`]
	t.Logf("api listener: %v pending, %v evicted", pending, evicted)
	if evicted < 1000-256 || pending > 256 {
		t.Errorf("api listener: %v pending, %v evicted; want at most max_pending_conns 256 held and the rest of 1000 evicted", pending, evicted)
	}
}

// TestIdleConnectionsAfterTheirFirstCallAreClosed: a connection whose
// calls have all ended used to stay open for as long as its client kept
// it, bounded only by the connection limits. Now, after conn_idle_timeout
// without a call open, the agent sends GOAWAY and closes it, on its own
// server (a store client) and on the relay (a reflection client) alike; a
// connection with a watch open stays, and the clients call again on new
// connections.
func TestIdleConnectionsAfterTheirFirstCallAreClosed(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{Config: `{"conn_idle_timeout": "2s"}`})
	ctx := testenv.Context(t, time.Minute)
	store, native := storeClient(t, a)
	put := func(what string) *storev1.PutResponse {
		t.Helper()
		resp, err := store.Put(ctx, &storev1.PutRequest{Namespace: "idle", Key: []byte(what), Value: []byte("v")})
		if err != nil {
			t.Fatalf("put %s: %v", what, err)
		}
		return resp
	}
	rev := put("first").GetRevision()
	relayed := relayedConnAs(t, a, a.Token())
	_, watching := storeClient(t, a)
	w, err := storev1.NewStoreServiceClient(watching).Watch(ctx, &storev1.WatchRequest{Namespace: "idle", StartRevision: rev})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatalf("watch: %v", err)
	}
	testenv.WaitFor(t, 30*time.Second, "the idle connections to be closed", func() error {
		for name, cc := range map[string]*grpc.ClientConn{"the store client's": native, "the relayed client's": relayed} {
			if st := cc.GetState(); st == connectivity.Ready {
				return fmt.Errorf("%s connection is still %v", name, st)
			}
		}
		return nil
	})
	if st := watching.GetState(); st != connectivity.Ready {
		t.Errorf("the connection with a watch open is %v, want it kept open", st)
	}
	put("again")
	if _, err := w.Recv(); err != nil {
		t.Errorf("the watch after the others were closed: %v", err)
	}
	relayedConnAs(t, a, a.Token()) // a relayed call on a new connection
}

// TestIdleConnectionsAreClosed: 5,000 connections that never make a call
// (nothing sent, half a preface, half a SETTINGS frame) are each closed
// after first_call_timeout, while another client's calls go on.
func TestIdleConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{Config: `{"first_call_timeout": "1s", "max_conns": 8000}`})
	c := startCaller(t, a)
	closedAfter, open := idleFlood(t, a.API, 5000, 30*time.Second)
	lat, fails := c.results()
	t.Logf("5000 idle connections closed %v after the last opened; caller: %d calls, p50 %v, p99 %v, %d failed",
		closedAfter.Round(time.Millisecond), len(lat), percentile(lat, .5), percentile(lat, .99), len(fails))
	if open > 0 {
		t.Errorf("%d of 5000 idle connections were still open after 30 s (first_call_timeout 1s)", open)
	}
	if len(fails) > 0 {
		t.Errorf("%d of the caller's calls failed during the flood, the first: %v", len(fails), fails[0])
	}
}

// TestTLSHandshakesAreTimedOut: on an -api-tls agent, connections that
// stall before or inside the TLS handshake, or finish it and make no call,
// are closed after first_call_timeout too, while a TLS client's calls go on.
func TestTLSHandshakesAreTimedOut(t *testing.T) {
	t.Parallel()
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(tlsDir(t), "plughost-agent-ca.pem"))
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("the test CA: %v", err)
	}
	clientTLS := &tls.Config{RootCAs: pool}
	a := NewAgent(t, AgentOptions{Args: append(nodeTLSArgs(t, "n1"), "-api-tls"), ClientTLS: clientTLS,
		Config: `{"first_call_timeout": "1s"}`})
	ctx := testenv.Context(t, time.Minute)
	store := storev1.NewStoreServiceClient(a.Conn())
	if _, err := store.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	var handshakes atomic.Int64
	closedAfter, open := flood(t, a.API, 300, 30*time.Second, func(i int, c net.Conn) net.Conn {
		switch i % 3 {
		case 1: // the first bytes of a ClientHello record
			_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})
		case 2: // a whole handshake, then nothing
			cfg := clientTLS.Clone()
			cfg.ServerName = "127.0.0.1"
			tc := tls.Client(c, cfg)
			if err := tc.HandshakeContext(ctx); err == nil {
				handshakes.Add(1)
			}
			return tc
		}
		return c
	})
	t.Logf("300 stalled TLS connections closed %v after the last opened (%d completed a handshake)", closedAfter.Round(time.Millisecond), handshakes.Load())
	if open > 0 {
		t.Errorf("%d of 300 stalled TLS connections were still open after 30 s (first_call_timeout 1s)", open)
	}
	if handshakes.Load() == 0 {
		t.Error("no handshake completed: the test did not reach the case after one")
	}
	if _, err := store.Get(ctx, &storev1.GetRequest{Namespace: "app", Key: []byte("k")}); err != nil {
		t.Fatalf("the TLS client's call after the flood: %v", err)
	}
}

// TestConnectionsPerClientAreLimited: past max_conns_per_client, a
// client's connections are closed at once (not at first_call_timeout)
// and counted; other clients are not affected, and the client is served
// again once its connections close.
func TestConnectionsPerClientAreLimited(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{Config: `{"max_conns_per_client": 20, "first_call_timeout": "60s"}`})
	var held []net.Conn
	for range 20 {
		c, err := dialFrom("127.0.0.2", a.API)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	testenv.WaitFor(t, 10*time.Second, "the 20 connections to be open", func() error {
		if v := metricValue(t, a, `plughost_listener_connections{listener="api"}`); v < 20 {
			return fmt.Errorf("%v open", v)
		}
		return nil
	})
	for i := range 10 {
		c, err := dialFrom("127.0.0.2", a.API)
		if err != nil {
			continue // reset before the dial returned: refused too
		}
		if !closedByAgent(c, 10*time.Second) {
			t.Fatalf("connection %d past the limit was not closed at once", 21+i)
		}
		c.Close()
	}
	if v := metricValue(t, a, `plughost_listener_refused_total{limit="max_conns_per_client",listener="api"}`); v != 10 {
		t.Errorf("refused per client = %v, want 10", v)
	}
	for _, c := range held[:10] {
		if closedByAgent(c, 100*time.Millisecond) {
			t.Fatal("a connection within the limit was closed")
		}
	}
	// Another client is served meanwhile.
	ctx := testenv.Context(t, time.Minute)
	if _, err := clientFrom(t, "127.0.0.3", a).Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	// Once its connections close, the limited client is served again.
	for _, c := range held {
		c.Close()
	}
	limited := clientFrom(t, "127.0.0.2", a)
	testenv.WaitFor(t, 20*time.Second, "the limited client to be served again", func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := limited.Get(cctx, &storev1.GetRequest{Namespace: "app", Key: []byte("k")})
		return err
	})
}

// clientFrom is a store client of a's, with its token, whose connection
// comes from src.
func clientFrom(t testing.TB, src string, a *Agent) storev1.StoreServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(a.API, grpc.WithTransportCredentials(insecure.NewCredentials()), a.TokenOption(),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dialFrom(src, addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return storev1.NewStoreServiceClient(cc)
}

// metricValue reads one series of the agent's /metrics, or -1.
func metricValue(t testing.TB, a *Agent, series string) float64 {
	t.Helper()
	m, err := scrape(a)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := m[series]; ok {
		return v
	}
	return -1
}

// errorInfo is the store's ErrorInfo in err: its reason and limit.
func errorInfo(err error) (reason, limit string) {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == storev1.ErrorDomain {
			return info.GetReason(), info.GetMetadata()[storev1.MetadataLimit]
		}
	}
	return "", ""
}

// wantLimit fails unless err is RESOURCE_EXHAUSTED with reason, naming
// the config key limit in its message and its ErrorInfo.
func wantLimit(t testing.TB, err error, reason, limit string) {
	t.Helper()
	gotReason, gotLimit := errorInfo(err)
	if status.Code(err) != codes.ResourceExhausted || gotReason != reason || gotLimit != limit || !strings.Contains(status.Convert(err).Message(), limit) {
		t.Fatalf("got %v (reason %q, limit %q); want RESOURCE_EXHAUSTED, reason %s, naming %s", err, gotReason, gotLimit, reason, limit)
	}
}

// bigTxn is a transaction of n puts of 500 KiB values, each within
// max_value_bytes.
func bigTxn(n int) *storev1.TxnRequest {
	value := make([]byte, 500<<10)
	req := &storev1.TxnRequest{Namespace: "big"}
	for i := range n {
		req.Success = append(req.Success, &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: []byte(strconv.Itoa(i)), Value: value}}})
	}
	return req
}

// TestLargeTransactionsAreRefused: four 63 MiB transactions at once
// (126 values each within max_value_bytes) took an agent from 231 MB to
// 1.6 GB. Now each is refused from its length prefix, naming the limit,
// the agent's memory stays where it was, and other writes go on; one just
// over max_txn_bytes is refused by the store, naming the key.
func TestLargeTransactionsAreRefused(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	pid := a.cmd.Process.Pid
	ctx := testenv.Context(t, 2*time.Minute)
	c := startCaller(t, a)
	before := procStatus(t, pid, "VmRSS")

	big := bigTxn(126)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	took := make([]time.Duration, 4)
	for i := range errs {
		client, _ := storeClient(t, a)
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			_, errs[i] = client.Txn(ctx, big)
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	lat, fails := c.results()
	peak := procStatus(t, pid, "VmHWM")
	after := procStatus(t, pid, "VmRSS")
	t.Logf("four 63 MiB txns refused in %v; agent RSS %d MiB before, %d MiB after, peak %d MiB; caller p50 %v p99 %v over %d calls",
		took, before>>20, after>>20, peak>>20, percentile(lat, .5), percentile(lat, .99), len(lat))
	// gRPC refuses it from the message's length prefix and says so itself;
	// the CLI adds which config key sets the limit (ExplainMessageSize).
	limit := strconv.Itoa(4<<20 + 64<<10)
	for _, err := range errs {
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "larger than max") || !strings.Contains(err.Error(), limit) {
			t.Errorf("63 MiB txn: got %v, want RESOURCE_EXHAUSTED naming the %s-byte limit", err, limit)
		}
		if explained := store.ExplainMessageSize(err); !strings.Contains(explained.Error(), "max_txn_bytes") {
			t.Errorf("explained: %v", explained)
		}
	}
	if len(fails) > 0 {
		t.Errorf("%d of another client's puts failed meanwhile, the first: %v", len(fails), fails[0])
	}
	if bound := before + 128<<20; peak > bound {
		t.Errorf("agent peak RSS %d MiB, past %d MiB before plus 128 MiB", peak>>20, before>>20)
	}

	// One just over max_txn_bytes (4 MiB) fits a message, and the store
	// refuses it by its size.
	client, _ := storeClient(t, a)
	over := bigTxn(8) // 4,096,000 bytes of values
	over.Success = append(over.Success, &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: []byte("more"), Value: make([]byte, 110<<10)}}})
	_, err := client.Txn(ctx, over)
	wantLimit(t, err, storev1.ReasonTxnTooLarge, "max_txn_bytes")
	if _, err := client.Txn(ctx, bigTxn(8)); err != nil {
		t.Fatalf("a 4 MB transaction: %v", err)
	}
}

// relayedConn returns a connection whose first call is to the agent's
// reflection: the relay carries it, and passes its calls to the agent's
// TestQuotaAndWatchLimits: the default quota and the watch limits refuse
// with RESOURCE_EXHAUSTED naming their config keys. Watches count per ACL
// token, on all its connections together (the relay's in-memory ones
// too), so that one token on many connections cannot take the node's
// watches; plugin_watch_reserve keeps some for plugins from all others.
func TestQuotaAndWatchLimits(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{Config: `{"default_quota": {"max_keys": 20}, "max_watches_per_client": 3, "max_watches": 9, "plugin_watch_reserve": 3}`})
	ctx := testenv.Context(t, time.Minute)
	client, _ := storeClient(t, a)
	for i := range 20 {
		if _, err := client.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte(strconv.Itoa(i)), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := client.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: []byte("20"), Value: []byte("v")})
	wantLimit(t, err, storev1.ReasonQuotaExceeded, "default_quota.max_keys")

	var watches []storev1.StoreService_WatchClient
	// watch opens a watch on cc with secret; a refused one fails its
	// first Recv.
	watch := func(cc *grpc.ClientConn, secret string) (storev1.StoreService_WatchClient, error) {
		// A watch from a put's revision: one that runs sends it.
		put, err := client.Put(ctx, &storev1.PutRequest{Namespace: "w", Key: []byte("k"), Value: []byte("v")})
		if err != nil {
			t.Fatal(err)
		}
		w, err := storev1.NewStoreServiceClient(cc).Watch(withToken(ctx, secret), &storev1.WatchRequest{Namespace: "w", StartRevision: put.GetRevision()})
		if err != nil {
			return nil, err
		}
		if _, err := w.Recv(); err != nil {
			return nil, err
		}
		watches = append(watches, w)
		return w, nil
	}
	reader, _ := createToken(t, a, "reader", "read-only")
	other, _ := createToken(t, a, "other reader", "read-only")
	// The reader's 3 watches on one connection, then on others (one the
	// relay carries): each past the 3rd is refused.
	for i, cc := range []*grpc.ClientConn{plainConn(t, a), plainConn(t, a), relayedConnAs(t, a, reader)} {
		n := 3
		if i > 0 {
			n = 0
		}
		for j := range n {
			if _, err := watch(cc, reader); err != nil {
				t.Fatalf("connection %d watch %d: %v", i, j, err)
			}
		}
		_, err := watch(cc, reader)
		wantLimit(t, err, storev1.ReasonTooManyWatches, "max_watches_per_client")
	}
	// The agent's token takes 3 more: 6, all max_watches less the
	// plugins' reserve allows clients.
	for j := range 3 {
		if _, err := watch(relayedConnAs(t, a, a.Token()), a.Token()); err != nil {
			t.Fatalf("management token's watch %d: %v", j, err)
		}
	}
	_, err = watch(plainConn(t, a), other)
	wantLimit(t, err, storev1.ReasonTooManyWatches, "max_watches")
	if !strings.Contains(status.Convert(err).Message(), "plugin_watch_reserve") {
		t.Fatalf("the refusal does not name the plugins' reserve: %v", err)
	}
}

// plainConn is a connection to a's API that carries no token of its own.
func plainConn(t testing.TB, a *Agent) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(a.API, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// relayedConnAs is relayedConn without a token of its own: its first call
// (reflection) is made with secret.
func relayedConnAs(t testing.TB, a *Agent, secret string) *grpc.ClientConn {
	t.Helper()
	cc := plainConn(t, a)
	ctx := withToken(testenv.Context(t, 10*time.Second), secret)
	rs, err := rv1.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&rv1.ServerReflectionRequest{MessageRequest: &rv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Recv(); err != nil {
		t.Fatal(err)
	}
	_ = rs.CloseSend()
	return cc
}

// BenchmarkIdleConnectionFlood reports how long an agent takes to close
// 5,000 connections that never make a call (first_call_timeout 1s), the
// p50 and p99 of another client's store puts before and during, the CPU
// the agent and the flooding process (this one, with the caller) used,
// and the agent's RSS: without a budget for connections before their first
// call or an accept rate, with each alone, and with the defaults (both).
// Run: go test ./test -run '^$' -bench IdleConnectionFlood -benchtime 1x
func BenchmarkIdleConnectionFlood(b *testing.B) {
	for _, v := range []struct{ name, config string }{
		// No budget of their own for connections without a first call,
		// no accept rate: as before them.
		{"unbounded", `{"first_call_timeout": "1s", "max_conns": 8000, "max_pending_conns": 0, "max_pending_conns_per_client": 0, "accept_rate": 0}`},
		// The budget alone, no accept rate.
		{"pending-only", `{"first_call_timeout": "1s", "max_conns": 8000, "accept_rate": 0}`},
		// The accept rate alone, no budget.
		{"rate-only", `{"first_call_timeout": "1s", "max_conns": 8000, "max_pending_conns": 0, "max_pending_conns_per_client": 0}`},
		// max_pending_conns 256 (64 per address), accept_rate 500/s.
		{"defaults", `{"first_call_timeout": "1s", "max_conns": 8000}`},
	} {
		b.Run(v.name, func(b *testing.B) {
			for range b.N {
				idleFloodFigures(b, v.config)
			}
		})
	}
}

// idleFloodFigures measures a token holder's puts, quiet and while 5,000
// idle connections are opened to an agent with config, and how the agent
// closes them.
func idleFloodFigures(b *testing.B, config string) {
	a := NewAgent(b, AgentOptions{Config: config})
	pid := a.cmd.Process.Pid
	quiet := startCaller(b, a)
	time.Sleep(3 * time.Second)
	qlat, _ := quiet.results()
	rss0 := procStatus(b, pid, "VmRSS")

	c := startCaller(b, a)
	start := time.Now()
	cpu0, self0 := procCPU(b, pid), selfCPU()
	closedAfter, open := idleFlood(b, a.API, 5000, 30*time.Second)
	total := time.Since(start)
	lat, fails := c.results()
	b.ReportMetric(float64((procCPU(b, pid) - cpu0).Milliseconds()), "agent-CPU-ms-flood")
	b.ReportMetric(float64((selfCPU() - self0).Milliseconds()), "flooder-CPU-ms")
	b.ReportMetric(total.Seconds(), "s-open-and-close-5000")
	b.ReportMetric(closedAfter.Seconds(), "s-closed-after-last-open")
	b.ReportMetric(float64(open), "left-open")
	b.ReportMetric(float64(percentile(qlat, .5).Microseconds()), "put-p50-µs-quiet")
	b.ReportMetric(float64(percentile(qlat, .99).Microseconds()), "put-p99-µs-quiet")
	b.ReportMetric(float64(percentile(lat, .5).Microseconds()), "put-p50-µs-flood")
	b.ReportMetric(float64(percentile(lat, .99).Microseconds()), "put-p99-µs-flood")
	b.ReportMetric(float64(len(lat)), "puts-flood")
	b.ReportMetric(float64(len(fails)), "put-failures")
	b.ReportMetric(float64(rss0>>20), "agent-RSS-MiB-before")
	b.ReportMetric(float64(procStatus(b, pid, "VmHWM")>>20), "agent-peak-RSS-MiB")
	a.Stop()
}

// TestPluginStoreConnectionLimits: a plugin's own store connection is held
// to the same limits: a 63 MiB transaction is refused from its length
// prefix (it was taken at up to 64 MiB), and its watches past
// max_watches_per_client are refused, the plugin counting as one client.
func TestPluginStoreConnectionLimits(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{Config: `{"max_watches_per_client": 4}`})
	exe := fixture(t, "storehog", "storehog", "1.0.0")
	out := t.TempDir()
	if b, err := exec.Command(filepath.Join(binDir, "plughost"), "bundle", "build", "-o", out, exe).CombinedOutput(); err != nil {
		t.Fatalf("plughost bundle build: %v\n%s", err, b)
	}
	a.Drop(filepath.Join(out, "storehog-1.0.0.tar.gz"))
	a.WaitRunning("storehog", "1.0.0")
	hog := echov1.NewEchoServiceClient(a.Conn())
	ctx := testenv.Context(t, 2*time.Minute)
	ask := func(what string) string {
		t.Helper()
		resp, err := hog.Echo(ctx, &echov1.EchoRequest{Message: what})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return resp.GetMessage()
	}
	pid := a.cmd.Process.Pid
	before := procStatus(t, pid, "VmRSS")
	if got := ask("txn 126"); !strings.Contains(got, "larger than max") || !strings.Contains(got, strconv.Itoa(4<<20+64<<10)) {
		t.Errorf("a plugin's 63 MiB transaction: %q, want refused naming the %d-byte limit", got, 4<<20+64<<10)
	}
	if peak := procStatus(t, pid, "VmHWM"); peak > before+128<<20 {
		t.Errorf("agent peak RSS %d MiB after a plugin's 63 MiB transaction, past %d MiB before plus 128 MiB", peak>>20, before>>20)
	}
	if got := ask("txn 8"); got != "ok" {
		t.Errorf("a plugin's 4 MB transaction: %q", got)
	}
	if got := ask("watch 6"); !strings.HasPrefix(got, "2 refused") || !strings.Contains(got, "max_watches_per_client") {
		t.Errorf("a plugin's 6 watches with max_watches_per_client 4: %q, want 2 refused naming the key", got)
	}
}
