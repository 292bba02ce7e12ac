package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// TestReadPeersFile: peers.json is read strictly, and this server must be
// in it as a voter.
func TestReadPeersFile(t *testing.T) {
	for _, tc := range []struct {
		name, body, wantErr string
		servers             int
	}{
		{"self alone", `[{"id": "n1", "address": "127.0.0.1:7401", "non_voter": false}]`, "", 1},
		{"with a non-voter", `[{"id": "n1", "address": "127.0.0.1:7401"}, {"id": "n2", "address": "127.0.0.1:7411", "non_voter": true}]`, "", 2},
		{"a typo in a key", `[{"id": "n1", "address": "127.0.0.1:7401", "nonvoter": true}]`, "unknown field", 0},
		{"self a non-voter", `[{"id": "n1", "address": "127.0.0.1:7401", "non_voter": true}]`, "non-voter", 0},
		{"without self", `[{"id": "n2", "address": "127.0.0.1:7411"}]`, "does not list this server", 0},
		{"no address", `[{"id": "n1"}]`, "an id and an address", 0},
		{"a bad address", `[{"id": "n1", "address": "nowhere"}]`, "address", 0},
		{"twice", `[{"id": "n1", "address": "127.0.0.1:7401"}, {"id": "n1", "address": "127.0.0.1:7402"}]`, "listed twice", 0},
		{"not JSON", `n1 127.0.0.1:7401`, "invalid character", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), PeersFile)
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			conf, err := readPeersFile(path, raft.ServerID("n1"))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(conf.Servers) != tc.servers {
				t.Fatalf("%d servers, want %d: %v", len(conf.Servers), tc.servers, conf.Servers)
			}
		})
	}
}
