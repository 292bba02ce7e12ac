package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadPeers: the record of members is a hint read defensively: what is
// not a host:port is dropped, and at most maxRecordedPeers are tried.
func TestReadPeers(t *testing.T) {
	dir := t.TempDir()
	if got := readPeers(dir); got != nil {
		t.Fatalf("no file: %v", got)
	}
	write := func(body string) {
		if err := os.WriteFile(filepath.Join(dir, peersFile), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`["127.0.0.1:7402", "not an address", "", "[::1]:7412"]`)
	if got := readPeers(dir); strings.Join(got, " ") != "127.0.0.1:7402 [::1]:7412" {
		t.Fatalf("got %v", got)
	}
	write(`{"not": "a list"}`)
	if got := readPeers(dir); got != nil {
		t.Fatalf("not a list: %v", got)
	}
	var many []string
	for i := range 1000 {
		many = append(many, fmt.Sprintf("%q", fmt.Sprintf("127.0.0.1:%d", 10000+i)))
	}
	write("[" + strings.Join(many, ",") + "]")
	if got := readPeers(dir); len(got) != maxRecordedPeers {
		t.Fatalf("%d addresses tried, want at most %d", len(got), maxRecordedPeers)
	}
	if err := writePeers(dir, []string{"127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if got := readPeers(dir); len(got) != 1 {
		t.Fatalf("after writePeers: %v", got)
	}
}
