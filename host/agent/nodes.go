package agent

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/cluster"
	"github.com/plughost/plughost/host/intent"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// ListNodes lists every node gossip knows with its identity, its
// eligibility from the operator's node records, and what it reports
// running (its observations). Without a raft leader the records are this
// node's copy, and the answer says so.
func (o *operator) ListNodes(ctx context.Context, _ *operatorv1.ListNodesRequest) (*operatorv1.ListNodesResponse, error) {
	resp := &operatorv1.ListNodesResponse{}
	stale, err := o.readCatalog(ctx, func(_ *catalog.Catalog, db *intent.DB) error {
		resp.Nodes = nil
		states, refused, err := db.NodeStates(ctx)
		if err != nil {
			return err
		}
		for _, r := range refused {
			o.a.log.Warn("a node record is not valid; left out (the node counts as eligible)", "error", r)
		}
		obs, refused, err := db.Observations(ctx)
		if err != nil {
			return err
		}
		for _, r := range refused {
			o.a.log.Warn("a cluster status record is not valid; left out", "error", r)
		}
		runs := map[string][]*operatorv1.NodePlugin{}
		for _, it := range obs { // by node then plugin
			ob := it.Value
			runs[ob.Node] = append(runs[ob.Node], &operatorv1.NodePlugin{Plugin: ob.Plugin, Version: ob.Version, Role: ob.Role,
				State: stateOf(ob.State), Healthy: ob.Healthy, Since: timestamppb.New(ob.Since)})
		}
		drained := intent.Drained(states)
		set := map[string]intent.NodeState{}
		for _, it := range states {
			set[it.Value.Node] = it.Value
		}
		for _, n := range o.a.cluster.Nodes() {
			_, isDrained := drained[n.Name]
			pn := &operatorv1.Node{
				Name: n.Name, Status: n.Status, FaultDomain: n.FaultDomain, UpgradeDomain: n.UpgradeDomain,
				Tags: n.Tags, Eligible: !isDrained, ApiAddress: n.APIAddr, RpcAddress: n.RPCAddr,
				Plugins: runs[n.Name], Invalid: n.Invalid,
			}
			if s, ok := set[n.Name]; ok {
				pn.EligibilitySince, pn.EligibilityActor = timestamppb.New(s.Since), s.Actor
			}
			resp.Nodes = append(resp.Nodes, pn)
		}
		return nil
	})
	if err != nil {
		return nil, toStatus(err)
	}
	resp.Stale = stale
	return resp, nil
}

// SetNodeEligibility writes the operator's node record: drained
// (eligible false) or eligible. Moving the node's instances is the
// placement controller's, which reads the record.
func (o *operator) SetNodeEligibility(ctx context.Context, req *operatorv1.SetNodeEligibilityRequest) (*operatorv1.SetNodeEligibilityResponse, error) {
	name := req.GetNode()
	if err := cluster.ValidateNodeName(name); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	db := intent.New(o.a.store)
	it, found, err := db.NodeState(ctx, name)
	if err != nil {
		return nil, toStatus(err)
	}
	cur := it.Value
	if !found && !o.isMember(name) {
		st := status.New(codes.NotFound, fmt.Sprintf("node %q is not a member of this cluster; `plughost nodes` lists those that are", name))
		if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: operatorv1.NodesErrorDomain, Reason: operatorv1.ReasonNodeUnknown,
			Metadata: map[string]string{"node": name}}); err == nil {
			st = d
		}
		return nil, st.Err()
	}
	if found && cur.Eligible == req.GetEligible() {
		return &operatorv1.SetNodeEligibilityResponse{Changed: false, Since: timestamppb.New(cur.Since), Actor: cur.Actor}, nil
	}
	if !found && req.GetEligible() {
		// No record is eligible already; write none.
		return &operatorv1.SetNodeEligibilityResponse{Changed: false}, nil
	}
	s := intent.NodeState{Node: name, Eligible: req.GetEligible(), Since: time.Now().UTC(), Actor: actorFrom(ctx)}
	if _, err := db.Put(ctx, &s); err != nil {
		return nil, toStatus(err)
	}
	o.a.log.Info("node eligibility set", "node", name, "eligible", s.Eligible, "actor", s.Actor)
	return &operatorv1.SetNodeEligibilityResponse{Changed: true, Since: timestamppb.New(s.Since), Actor: s.Actor}, nil
}

// isMember reports whether gossip knows node, whatever its status.
func (o *operator) isMember(node string) bool {
	for _, n := range o.a.cluster.Nodes() {
		if n.Name == node {
			return true
		}
	}
	return false
}
