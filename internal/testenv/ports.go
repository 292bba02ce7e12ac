package testenv

import (
	"testing"

	"github.com/plughost/plughost/internal/loopback"
)

// FreeAddr returns a loopback address with a free port, TCP and UDP, for a
// server to bind later, maybe again after a restart. The port is below
// Linux's ephemeral range (32768-60999), so no outgoing connection of a
// parallel test takes it as its source port between now and then, as
// happened to ports from 127.0.0.1:0; a port handed out once in this test
// binary is not handed out again.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := loopback.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
