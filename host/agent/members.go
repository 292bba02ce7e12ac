package agent

import (
	"context"

	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// ListMembers lists the cluster's members as this node sees them.
func (o *operator) ListMembers(context.Context, *operatorv1.ListMembersRequest) (*operatorv1.ListMembersResponse, error) {
	resp := &operatorv1.ListMembersResponse{}
	resp.Leader, _ = o.a.store.Leader()
	for _, m := range o.a.cluster.Members() {
		resp.Members = append(resp.Members, &operatorv1.Member{
			Name: m.Name, Address: m.Addr, Status: m.Status, RaftRole: m.RaftRole,
			ApiAddress: m.APIAddr, RpcAddress: m.RPCAddr, Tags: m.Tags,
		})
	}
	return resp, nil
}
