package testenv

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// FreeAddr returns a loopback address with a free port, TCP and UDP, for a
// server to bind later, maybe again after a restart. The port is below
// Linux's ephemeral range (32768-60999), so no outgoing connection of a
// parallel test takes it as its source port between now and then, as
// happened to ports from 127.0.0.1:0; a port handed out once in this test
// binary is not handed out again.
func FreeAddr(t testing.TB) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if portsUsed[port] {
			continue
		}
		portsUsed[port] = true
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken by something else
		}
		l.Close()
		u, err := net.ListenPacket("udp", addr) // serf gossips on UDP too
		if err != nil {
			continue
		}
		u.Close()
		return addr
	}
	t.Fatal("no free loopback port in 20000-31999")
	return ""
}

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)
