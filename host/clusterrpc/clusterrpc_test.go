package clusterrpc

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/plughost/plughost/host/tlsutil"
	"github.com/plughost/plughost/internal/netlimit"
)

// nodeTLS makes a server certificate for node under ca and loads it.
func nodeTLS(t *testing.T, ca tlsutil.PEM, node string) *tlsutil.Config {
	t.Helper()
	p, err := tlsutil.CreateCert(tlsutil.CertRequest{Node: node, Days: 1, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := tlsutil.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "c.pem"), Key: filepath.Join(dir, "k.pem")}
	if err := os.WriteFile(f.CA, ca.Cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tlsutil.WriteFiles(p, f.Cert, f.Key); err != nil {
		t.Fatal(err)
	}
	c, err := tlsutil.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func listen(t *testing.T, tc *tlsutil.Config) *Mux {
	t.Helper()
	m, err := Listen("127.0.0.1:0", tc, Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func newCA(t *testing.T) tlsutil.PEM {
	t.Helper()
	ca, err := tlsutil.CreateCA(1)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// accepted is the first byte of data read from the next connection ln
// hands out (a raft stream passes on only raft requests: see raftid.go).
func accepted(t *testing.T, ln net.Listener) string {
	t.Helper()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDialExpectsTheNode: a dial reaches node X only if X's certificate
// from the cluster CA answers; another node's certificate, another CA's and
// plaintext are refused, and nothing of theirs reaches raft or gRPC.
func TestDialExpectsTheNode(t *testing.T) {
	ca := newCA(t)
	n1, n2 := listen(t, nodeTLS(t, ca, "n1")), listen(t, nodeTLS(t, ca, "n2"))
	rogue := listen(t, nodeTLS(t, newCA(t), "n2"))
	plain := listen(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := n2.Addr().String()

	if err := n1.Verify(ctx, "n2", addr); err != nil {
		t.Fatalf("n1 verifying n2: %v", err)
	}
	for _, tc := range []struct {
		name       string
		from       *Mux
		node, addr string
	}{
		{"n2's certificate where n3 is expected", n1, "n3", addr},
		{"another CA's n2", n1, "n2", rogue.Addr().String()},
		{"dialing from another CA", rogue, "n2", addr},
		{"a plaintext node", n1, "n2", plain.Addr().String()},
	} {
		if err := tc.from.Verify(ctx, tc.node, tc.addr); err == nil {
			t.Errorf("%s: verified", tc.name)
		}
		if c, err := tc.from.DialRaft(ctx, tc.addr, tc.node); err == nil {
			c.Write([]byte("evil"))
			c.Close()
		}
	}
	// A plaintext dial to a TLS port, as a stranger's raft would send.
	if c, err := plain.DialRaft(ctx, addr, "n2"); err == nil {
		c.Write([]byte("evil"))
		c.Close()
	}

	// What reaches n2's raft, gRPC and relay listeners is only n1's.
	for _, k := range []struct {
		dial func(context.Context, string, string) (net.Conn, error)
		ln   net.Listener
	}{{n1.DialRaft, n2.Raft()}, {n1.DialGRPC, n2.GRPC()}, {n1.DialRelay, n2.Relay()}} {
		c, err := k.dial(ctx, addr, "n2")
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("good"))
		if got := accepted(t, k.ln); got != "g" {
			t.Fatalf("the listener handed out %q first", got)
		}
		c.Close()
	}
}

func TestListenRefusesAnUnspecifiedAddress(t *testing.T) {
	if _, err := Listen("0.0.0.0:0", nil, Limits{}, nil); err == nil {
		t.Fatal("0.0.0.0 was taken as an address other nodes can dial")
	}
}

// TestHalfDoneHandshakesLeaveRoom: 2,048 connections from ten addresses
// that never finish a TLS handshake (the port's whole connection budget,
// within its 256 per address) no longer hold every slot: a node's
// connection still gets in and is verified while they stay open.
func TestHalfDoneHandshakesLeaveRoom(t *testing.T) {
	ca := newCA(t)
	n1, n2 := listen(t, nodeTLS(t, ca, "n1")), listen(t, nodeTLS(t, ca, "n2"))
	addr := n2.Addr().String()
	var wg sync.WaitGroup
	conns := make(chan net.Conn, maxConns)
	for i := range maxConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%10))}, Timeout: 10 * time.Second}
			if c, err := d.Dial("tcp", addr); err == nil {
				conns <- c
			}
		}()
	}
	wg.Wait()
	close(conns)
	defer func() {
		for c := range conns {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n1.Verify(ctx, "n2", addr); err != nil {
		t.Fatalf("n1 verifying n2 while %d half-done handshakes were open: %v", maxConns, err)
	}
	st := n2.ln.(*netlimit.Listener).Stats()
	t.Logf("n2's port: %+v", st)
	if st.Pending > DefaultMaxHandshakes {
		t.Errorf("%d half-done handshakes held, past rpc_max_handshakes %d", st.Pending, DefaultMaxHandshakes)
	}
}
