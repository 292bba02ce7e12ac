package test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/acl"
)

// TestDevTokenNotSentToPortSquatter: a dev agent killed with -9 leaves its
// token record behind; a process that binds the agent's API address
// afterwards (another local user could) is not sent the agent's token by
// the CLI, which removes the stale record.
func TestDevTokenNotSentToPortSquatter(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	if out, errOut, code := a.CLIEnv(nil, "members"); code != 0 {
		t.Fatalf("the CLI does not find the live dev agent's token: exit %d\n%s%s", code, out, errOut)
	}
	host, port, _ := net.SplitHostPort(a.API)
	record := filepath.Join(acl.RegistryDir(), "api_"+host+"_"+port)
	if _, err := os.Lstat(record); err != nil {
		t.Fatalf("the dev agent's record: %v", err)
	}

	a.Kill9()
	if _, err := os.Lstat(record); err != nil {
		t.Fatalf("the record should outlive a killed agent (that is the attack): %v", err)
	}
	l, err := net.Listen("tcp", a.API)
	if err != nil {
		t.Fatalf("squatting %s: %v", a.API, err)
	}
	var mu sync.Mutex
	var calls int
	var seen []string
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		md, _ := metadata.FromIncomingContext(stream.Context())
		mu.Lock()
		calls++
		seen = append(seen, md.Get("authorization")...)
		mu.Unlock()
		return status.Error(codes.Unauthenticated, "squatter")
	}))
	go srv.Serve(l)
	defer srv.Stop()

	_, errOut, code := a.CLIEnv(nil, "members")
	mu.Lock()
	defer mu.Unlock()
	if calls == 0 {
		t.Fatalf("the CLI never reached the squatter: exit %d, %s", code, errOut)
	}
	if len(seen) != 0 {
		t.Fatalf("the CLI sent the squatter on %s the dead agent's token: %q", a.API, seen)
	}
	if code == 0 || !strings.Contains(errOut, "squatter") {
		t.Errorf("CLI against the squatter: exit %d, %s", code, errOut)
	}
	if _, err := os.Lstat(record); !os.IsNotExist(err) {
		t.Errorf("the CLI left the dead agent's record %s (%v)", record, err)
	}
}
