package agent

import (
	"context"

	"github.com/plughost/plughost/host/cluster"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// ListMembers lists the cluster's members as this node sees them. Tags are
// the operator's; those plughost gossips for itself are shown in their own
// fields (raft role, API and RPC address) or not at all.
func (o *operator) ListMembers(context.Context, *operatorv1.ListMembersRequest) (*operatorv1.ListMembersResponse, error) {
	resp := &operatorv1.ListMembersResponse{}
	resp.Leader, _ = o.a.store.Leader()
	for _, m := range o.a.cluster.Members() {
		resp.Members = append(resp.Members, &operatorv1.Member{
			Name: m.Name, Address: m.Addr, Status: m.Status, RaftRole: m.RaftRole,
			ApiAddress: m.APIAddr, RpcAddress: m.RPCAddr, Tags: operatorTags(m.Tags),
		})
	}
	return resp, nil
}

// operatorTags drops the tags plughost sets for its own use from a
// member's serf tags.
func operatorTags(tags map[string]string) map[string]string {
	out := make(map[string]string, len(tags))
	for k, v := range tags {
		if !cluster.ReservedTag(k) {
			out[k] = v
		}
	}
	return out
}
