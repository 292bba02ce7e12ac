package cluster

import (
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/plughost/plughost/internal/testenv"
)

func TestValidateTags(t *testing.T) {
	long := strings.Repeat("v", 64)
	many := map[string]string{}
	for i := range 17 {
		many["k"+string(rune('a'+i))] = "v"
	}
	big := map[string]string{}
	for i := range 5 {
		big["key"+string(rune('a'+i))] = long
	}
	cases := []struct {
		name string
		tags map[string]string
		want string // "" valid
	}{
		{"none", nil, ""},
		{"ordinary", map[string]string{"disk": "ssd", "zone": "eu-west-1a", "rack_id": "r1", "owner": "ops@example.com"}, ""},
		{"reserved role", map[string]string{"role": "edge"}, `tag "role" is reserved for plughost`},
		{"reserved fault domain", map[string]string{"fault_domain": "fd1"}, `tag "fault_domain" is reserved`},
		{"key with a dot", map[string]string{"a.b": "v"}, `tag key "a.b"`},
		{"key starting with a digit", map[string]string{"1a": "v"}, `tag key "1a"`},
		{"empty value", map[string]string{"disk": ""}, `tag disk=""`},
		{"value with a space", map[string]string{"disk": "fast ssd"}, `tag disk="fast ssd"`},
		{"value with a quote", map[string]string{"disk": `a"b`}, `tag disk="a\"b"`},
		{"value with a newline", map[string]string{"disk": "a\nb"}, `tag disk="a\nb"`},
		{"value too long", map[string]string{"disk": long + "v"}, "a value is 1 to 64"},
		{"too many", many, "17 tags: a node has at most 16"},
		{"too big", big, "tags take 340 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateTags(tc.tags)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestValidateDomain(t *testing.T) {
	for _, ok := range []string{"fd1", "rack-7", "fd:/dc1/r1", "eu-west-1a", "UD.2"} {
		if err := ValidateDomain("-fault-domain", ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-fd", "/fd", "fd 1", "fd\x00", "é", strings.Repeat("a", 65)} {
		err := ValidateDomain("-fault-domain", bad)
		if err == nil || !strings.Contains(err.Error(), "-fault-domain") {
			t.Errorf("%q: got %v, want a refusal naming -fault-domain", bad, err)
		}
	}
}

// TestNodeOfPeerTags: a peer's serf tags are hostile input. Domains it does
// not gossip are its name; plughost's own tags are not operator tags; a
// peer gossiping invalid domains or tags keeps no identity and says why.
func TestNodeOfPeerTags(t *testing.T) {
	n := nodeOf("n1", "alive", map[string]string{TagRole: RoleServer, TagAPI: "127.0.0.1:7400", TagRPC: "127.0.0.1:7401",
		TagRaftState: "1", TagFaultDomain: "fd1", TagUpgradeDomain: "ud1", "disk": "ssd"})
	if n.Invalid != "" || n.FaultDomain != "fd1" || n.UpgradeDomain != "ud1" || len(n.Tags) != 1 || n.Tags["disk"] != "ssd" ||
		n.APIAddr != "127.0.0.1:7400" || n.RPCAddr != "127.0.0.1:7401" || !n.Alive() {
		t.Fatalf("valid peer: %+v", n)
	}
	n = nodeOf("n2", "failed", map[string]string{TagRole: RoleServer})
	if n.Invalid != "" || n.FaultDomain != "n2" || n.UpgradeDomain != "n2" || len(n.Tags) != 0 || n.Alive() {
		t.Fatalf("peer without domains: %+v", n)
	}
	n = nodeOf("n3", "alive", map[string]string{TagAPI: "not an address", TagFaultDomain: "fd 1\n", "disk": "ssd"})
	if !strings.Contains(n.Invalid, `fault_domain "fd 1\n"`) || n.FaultDomain != "" || len(n.Tags) != 0 || n.APIAddr != "" {
		t.Fatalf("peer with a bad domain: %+v", n)
	}
	n = nodeOf("n4", "alive", map[string]string{"bad key!": "v"})
	if !strings.Contains(n.Invalid, `tag key "bad key!"`) || n.FaultDomain != "" || len(n.Tags) != 0 {
		t.Fatalf("peer with a bad tag: %+v", n)
	}
}

// TestNodesCarryIdentity: every node lists every other with the domains
// and tags it was started with; a node given no domain is its own.
func TestNodesCarryIdentity(t *testing.T) {
	base := t.TempDir()
	n0 := startNode(t, "n0", filepath.Join(base, "n0"), nodeOptions{Expect: 3, FaultDomain: "fd1", UpgradeDomain: "ud1", Tags: map[string]string{"disk": "ssd"}})
	n1 := startNode(t, "n1", filepath.Join(base, "n1"), nodeOptions{Expect: 3, Join: []string{n0.c.Addr()}, FaultDomain: "fd2", Tags: map[string]string{"disk": "hdd", "gpu": "a100"}})
	n2 := startNode(t, "n2", filepath.Join(base, "n2"), nodeOptions{Expect: 3, Join: []string{n0.c.Addr()}})
	want := []Node{
		{Name: "n0", FaultDomain: "fd1", UpgradeDomain: "ud1", Tags: map[string]string{"disk": "ssd"}, Status: "alive", APIAddr: n0.apiAddr, RPCAddr: n0.st.RaftAddr()},
		{Name: "n1", FaultDomain: "fd2", UpgradeDomain: "n1", Tags: map[string]string{"disk": "hdd", "gpu": "a100"}, Status: "alive", APIAddr: n1.apiAddr, RPCAddr: n1.st.RaftAddr()},
		{Name: "n2", FaultDomain: "n2", UpgradeDomain: "n2", Tags: map[string]string{}, Status: "alive", APIAddr: n2.apiAddr, RPCAddr: n2.st.RaftAddr()},
	}
	for _, n := range []*testNode{n0, n1, n2} {
		testenv.WaitFor(t, 15*time.Second, n.name+" to list every node with its identity", func() error {
			if got := n.c.Nodes(); !reflect.DeepEqual(got, want) {
				return fmt.Errorf("got %+v", got)
			}
			return nil
		})
	}
}

// TestMemberOfPeerTags: Members lists a peer's tags as they are, but the
// API and cluster RPC addresses other nodes dial only when they are
// host:port.
func TestMemberOfPeerTags(t *testing.T) {
	m := memberOf(serf.Member{Name: "n2", Addr: net.IPv4(127, 0, 0, 1), Port: 7402, Status: serf.StatusAlive,
		Tags: map[string]string{TagAPI: "127.0.0.1:7400", TagRPC: "/etc/passwd", "zone": "a"}}, RaftNone)
	if m.APIAddr != "127.0.0.1:7400" || m.RPCAddr != "" {
		t.Fatalf("addresses %q and %q, want the API's kept and the bad RPC address dropped", m.APIAddr, m.RPCAddr)
	}
	if m.Tags[TagRPC] != "/etc/passwd" || m.Tags["zone"] != "a" || m.Addr != "127.0.0.1:7402" || m.Status != "alive" {
		t.Fatalf("member %+v: the tags, gossip address and status must be listed as they are", m)
	}
}
