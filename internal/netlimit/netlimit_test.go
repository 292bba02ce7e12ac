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
