package netlimit

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/internal/testenv"
)

// serve accepts on l until it fails, keeping every connection open, and
// returns a channel of them.
func serve(t *testing.T, l net.Listener) <-chan net.Conn {
	t.Helper()
	ch := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(ch)
				return
			}
			ch <- c
		}
	}()
	t.Cleanup(func() { l.Close() })
	return ch
}

// closedWithin reports whether the server closed c without a word within d.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err == io.EOF || errors.Is(err, syscall.ECONNRESET)
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func listen(t *testing.T, cfg Config) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return Wrap(ln, cfg)
}

func TestLimits(t *testing.T) {
	for _, tc := range []struct {
		name        string
		cfg         Config
		refusedWant func(Stats) uint64
	}{
		{"per client", Config{MaxConnsPerClient: 2}, func(s Stats) uint64 { return s.RefusedPerClient }},
		{"in all", Config{MaxConns: 2}, func(s Stats) uint64 { return s.RefusedMaxConns }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := listen(t, tc.cfg)
			accepted := serve(t, l)
			addr := l.Addr().String()
			a, b := dial(t, addr), dial(t, addr)
			first := <-accepted
			<-accepted
			// The reset may come before the dial returns.
			if c, err := net.Dial("tcp", addr); err == nil {
				defer c.Close()
				if !closedWithin(t, c, 10*time.Second) {
					t.Fatal("a third connection was not closed")
				}
			} else if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatal(err)
			}
			if closedWithin(t, a, 100*time.Millisecond) || closedWithin(t, b, 100*time.Millisecond) {
				t.Fatal("an admitted connection was closed")
			}
			st := l.Stats()
			if st.Open != 2 || tc.refusedWant(st) != 1 {
				t.Fatalf("stats %+v: want 2 open and 1 refused", st)
			}
			// Closing one (server side, as a server does) frees its place.
			first.Close()
			first.Close() // counted once
			d := dial(t, addr)
			select {
			case <-accepted:
			case <-time.After(5 * time.Second):
				t.Fatal("a connection after one closed was not admitted")
			}
			if closedWithin(t, d, 100*time.Millisecond) {
				t.Fatal("a connection after one closed was refused")
			}
			if st := l.Stats(); st.Open != 2 {
				t.Fatalf("open %d, want 2", st.Open)
			}
		})
	}
}

// shortListener fails its first n accepts with err, then accepts from ln.
type shortListener struct {
	net.Listener
	n   int
	err error
}

func (s *shortListener) Accept() (net.Conn, error) {
	if s.n > 0 {
		s.n--
		return nil, s.err
	}
	return s.Listener.Accept()
}

func TestShortageBacksOffAndGoesOn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept", syscall.EMFILE)}
	var logs testenv.SyncBuffer
	l := Wrap(&shortListener{Listener: ln, n: 4, err: emfile}, Config{Name: "api", Logger: hclog.New(&hclog.LoggerOptions{Output: &logs})})
	defer l.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			defer c.Close()
			time.Sleep(2 * time.Second)
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept after EMFILE: %v", err)
	}
	c.Close()
	if got := l.Stats().AcceptShortages; got != 4 {
		t.Errorf("AcceptShortages = %d, want 4", got)
	}
	out := logs.String()
	if n := strings.Count(out, "cannot accept connections"); n != 1 {
		t.Errorf("%d shortage warnings, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "file descriptors") || !strings.Contains(out, "ulimit -n") || !strings.Contains(out, "accepting connections again") {
		t.Errorf("log does not name the limit and the recovery:\n%s", out)
	}
}

func TestCloseEndsBackoff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	enfile := os.NewSyscallError("accept", syscall.ENFILE)
	l := Wrap(&shortListener{Listener: ln, n: 1 << 30, err: enfile}, Config{})
	errc := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	l.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
}

func TestOtherErrorsReturn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	l := Wrap(&shortListener{Listener: ln, n: 1, err: boom}, Config{})
	defer l.Close()
	if _, err := l.Accept(); !errors.Is(err, boom) {
		t.Fatalf("Accept = %v, want boom", err)
	}
}

// wrapped is a connection wrapping another, as *tls.Conn does.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

// TestPendingBudget: past MaxPending, a new connection closes the oldest
// that has not made its first call, so a flood of idle connections cannot
// keep a new client out; established connections are never closed, and
// every place is given back once.
func TestPendingBudget(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		evicted func(Stats) uint64
	}{
		{"in all", Config{MaxConns: 10, MaxPending: 2}, func(s Stats) uint64 { return s.EvictedPending }},
		{"per client", Config{MaxConns: 10, MaxPendingPerClient: 2}, func(s Stats) uint64 { return s.EvictedPendingPerClient }},
	} {
		t.Run(tc.name, func(t *testing.T) { testPendingBudget(t, tc.cfg, tc.evicted) })
	}
}

func testPendingBudget(t *testing.T, cfg Config, evicted func(Stats) uint64) {
	l := listen(t, cfg)
	accepted := serve(t, l)
	addr := l.Addr().String()
	a, b := dial(t, addr), dial(t, addr)
	first, second := <-accepted, <-accepted
	Established(wrapped{first})
	Established(wrapped{first}) // counted once
	if st := l.Stats(); st.Open != 2 || st.Pending != 1 {
		t.Fatalf("stats %+v: want 2 open, 1 pending", st)
	}
	c := dial(t, addr)
	third := <-accepted
	if closedWithin(t, c, 100*time.Millisecond) || closedWithin(t, b, 100*time.Millisecond) {
		t.Fatal("a connection was closed with two pending of MaxPending 2")
	}
	// A third pending one: the oldest pending (b) is closed, the new one
	// and the established one stay.
	d := dial(t, addr)
	fourth := <-accepted
	if !closedWithin(t, b, 10*time.Second) {
		t.Fatal("the oldest pending connection was not closed past MaxPending")
	}
	if closedWithin(t, a, 100*time.Millisecond) || closedWithin(t, c, 100*time.Millisecond) || closedWithin(t, d, 100*time.Millisecond) {
		t.Fatal("the established or a newer pending connection was closed")
	}
	if st := l.Stats(); st.Open != 4 || st.Pending != 2 || evicted(st) != 1 {
		t.Fatalf("stats %+v: want 4 open (the evicted one until its owner closes it), 2 pending, 1 evicted", st)
	}
	second.Close() // its owner sees it fail and closes it
	first.Close()
	Established(third)
	if st := l.Stats(); st.Open != 2 || st.Pending != 1 {
		t.Fatalf("stats %+v: want 2 open, 1 pending", st)
	}
	third.Close()
	fourth.Close()
	if st := l.Stats(); st.Open != 0 || st.Pending != 0 {
		t.Fatalf("stats %+v after all closed: want none open", st)
	}
}

// TestAcceptRate: past its burst, Accept takes no connection sooner than
// the rate allows (they wait in the kernel's queue), and Close ends the
// wait.
func TestAcceptRate(t *testing.T) {
	l := listen(t, Config{AcceptRate: 0.01, AcceptBurst: 2})
	accepted := serve(t, l)
	addr := l.Addr().String()
	for range 3 {
		dial(t, addr)
	}
	<-accepted
	<-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted within a burst of 2 at 0.01/s")
	case <-time.After(300 * time.Millisecond):
	}
	l.Close()
	select {
	case _, ok := <-accepted:
		if ok {
			t.Fatal("Accept took a connection after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still waited for the rate after Close")
	}
}
