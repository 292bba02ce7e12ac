package main

import (
	"bytes"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plughost/plughost/host/acl"
)

// The CLI sends a dev agent's recorded token to that agent's loopback
// address only: with the agent on 0.0.0.0:PORT, -addr HOST:PORT of
// another host gets no token, and the loopback address gets it.
func TestCLISendsDevTokenOnlyToLoopbackAgent(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	for _, k := range []string{"PLUGHOST_TOKEN", "PLUGHOST_TOKEN_FILE"} {
		t.Setenv(k, "")
	}
	l, err := net.Listen("tcp4", "0.0.0.0:0") // this test is the agent
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	tokenFile := filepath.Join(t.TempDir(), acl.TokenFileName)
	if err := acl.WriteTokenFile(tokenFile, "local-management-secret"); err != nil {
		t.Fatal(err)
	}
	if _, err := acl.RecordTokenFile("0.0.0.0:"+port, tokenFile); err != nil {
		t.Fatal(err)
	}

	var warn bytes.Buffer
	tf := tokenFlags{warn: &warn}
	for _, addr := range []string{"prod.example.com:" + port, "192.0.2.7:" + port} {
		if s, err := tf.secret(addr); s != "" || err != nil {
			t.Errorf("secret(%s) = %q, %v: the local agent's token would go to a remote host", addr, s, err)
		}
	}
	if s, err := tf.secret("127.0.0.1:" + port); s != "local-management-secret" || err != nil {
		t.Errorf("secret(127.0.0.1) = %q, %v; want the dev agent's token", s, err)
	}
	if warn.Len() != 0 {
		t.Errorf("warnings: %s", warn.String())
	}

	// Once the agent no longer listens there, no token, and the CLI says
	// why.
	l.Close()
	if s, _ := tf.secret("127.0.0.1:" + port); s != "" {
		t.Errorf("secret with no agent listening = %q", s)
	}
	if !strings.Contains(warn.String(), "no token sent") {
		t.Errorf("no warning saying why the record was not used: %q", warn.String())
	}
}
