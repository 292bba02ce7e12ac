package agent

import "testing"

func TestLoopbackOnly(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7480": true,
		"127.0.0.2:7480": true,
		"[::1]:7480":     true,
		"localhost:7480": true,
		"0.0.0.0:7480":   false,
		"[::]:7480":      false,
		":7480":          false,
		"10.0.0.5:7480":  false,
		"node1:7480":     false,
		"garbage":        false,
	} {
		if got := loopbackOnly(addr); got != want {
			t.Errorf("loopbackOnly(%q) = %v, want %v", addr, got, want)
		}
	}
}
