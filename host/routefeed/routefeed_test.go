package routefeed

import (
	"testing"

	"github.com/plughost/plughost/host/cluster"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/host/router"
)

func TestRemotes(t *testing.T) {
	members := []cluster.Member{
		{Name: "n1", Status: "alive", RPCAddr: "10.0.0.1:7401"},
		{Name: "n2", Status: "alive", RPCAddr: "10.0.0.2:7401"},
		{Name: "n3", Status: "failed", RPCAddr: "10.0.0.3:7401"},
		{Name: "n4", Status: "left", RPCAddr: "10.0.0.4:7401"},
		{Name: "n5", Status: "alive"},
	}
	ob := func(node, plugin string, healthy bool, role string, svcs ...string) intent.Item[intent.Observation] {
		return intent.Item[intent.Observation]{Value: intent.Observation{Node: node, Plugin: plugin, Version: "1.0.0",
			Healthy: healthy, Role: role, Services: svcs}}
	}
	for _, tc := range []struct {
		name string
		obs  intent.Item[intent.Observation]
		want *router.Remote // nil: left out
	}{
		{"own node left to the supervisor", ob("n1", "echo", true, "", "e.v1.S"), nil},
		{"healthy on an alive node", ob("n2", "echo", true, "", "e.v1.S"),
			&router.Remote{Node: "n2", RPCAddr: "10.0.0.2:7401", Plugin: "echo", Version: "1.0.0", Services: []string{"e.v1.S"}, Healthy: true}},
		{"observed unhealthy", ob("n2", "echo", false, "", "e.v1.S"),
			&router.Remote{Node: "n2", RPCAddr: "10.0.0.2:7401", Plugin: "echo", Version: "1.0.0", Services: []string{"e.v1.S"}}},
		{"a singleton's standby is not routed to", ob("n2", "counter", true, intent.RoleStandby, "c.v1.S"),
			&router.Remote{Node: "n2", RPCAddr: "10.0.0.2:7401", Plugin: "counter", Version: "1.0.0", Services: []string{"c.v1.S"}}},
		{"a singleton's active is", ob("n2", "counter", true, intent.RoleActive, "c.v1.S"),
			&router.Remote{Node: "n2", RPCAddr: "10.0.0.2:7401", Plugin: "counter", Version: "1.0.0", Services: []string{"c.v1.S"}, Healthy: true}},
		{"failed node: stale healthy observation not routed to", ob("n3", "echo", true, "", "e.v1.S"),
			&router.Remote{Node: "n3", RPCAddr: "10.0.0.3:7401", Plugin: "echo", Version: "1.0.0", Services: []string{"e.v1.S"}}},
		{"node that left", ob("n4", "echo", true, "", "e.v1.S"), nil},
		{"node gossip does not know", ob("n9", "echo", true, "", "e.v1.S"), nil},
		{"node without an RPC address", ob("n5", "echo", true, "", "e.v1.S"),
			&router.Remote{Node: "n5", Plugin: "echo", Version: "1.0.0", Services: []string{"e.v1.S"}}},
		{"no services yet", ob("n2", "echo", true, ""), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := remotes("n1", []intent.Item[intent.Observation]{tc.obs}, members)
			rem, ok := got[key{tc.obs.Value.Node, tc.obs.Value.Plugin}]
			switch {
			case tc.want == nil && len(got) != 0:
				t.Fatalf("got %+v, want it left out", got)
			case tc.want != nil && (!ok || !equal(rem, *tc.want)):
				t.Fatalf("got %+v, want %+v", rem, *tc.want)
			}
		})
	}
}
