// Package loopback hands out free loopback addresses for servers that
// bind them later: the agents a test or a bench starts.
package loopback

import (
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

// FreeAddr returns a 127.0.0.1 address whose port is free, for TCP and
// UDP (serf gossips on both), for a server to bind later. The port is
// below Linux's ephemeral range (32768-60999), so no outgoing connection
// takes it as its source port between now and then, as happens to ports
// from 127.0.0.1:0 on a busy machine; a port handed out once in this
// process is not handed out again.
func FreeAddr() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if used[port] {
			continue
		}
		used[port] = true
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken by something else
		}
		l.Close()
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			continue
		}
		u.Close()
		return addr, nil
	}
	return "", errors.New("no free loopback port in 20000-31999")
}

var (
	mu   sync.Mutex
	used = map[int]bool{}
)
