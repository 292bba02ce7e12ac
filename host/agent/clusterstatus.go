package agent

import (
	"context"
	"sort"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plughost/plughost/host/intent"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// clusterView is what the nodes report of each plugin (their observations)
// and what the placement controller could not place, by plugin.
type clusterView struct {
	instances map[string][]*operatorv1.NodeInstance
	placement map[string]*operatorv1.PlacementDiagnostic
}

// readClusterView reads every node's observations and the placement
// diagnostics from db. Records that fail their checks are input from
// another node: they are logged and left out.
func (o *operator) readClusterView(ctx context.Context, db *intent.DB) (clusterView, error) {
	v := clusterView{instances: map[string][]*operatorv1.NodeInstance{}, placement: map[string]*operatorv1.PlacementDiagnostic{}}
	obs, refused, err := intent.List[intent.Observation](ctx, db, intent.PrefixObserve)
	if err != nil {
		return v, err
	}
	status := map[string]string{}
	for _, m := range o.a.cluster.Members() {
		status[m.Name] = m.Status
	}
	for _, it := range obs {
		ob := it.Value
		v.instances[ob.Plugin] = append(v.instances[ob.Plugin], &operatorv1.NodeInstance{
			Node: ob.Node, Version: ob.Version, Role: ob.Role, Epoch: ob.Epoch, State: stateOf(ob.State),
			Healthy: ob.Healthy, Since: timestamppb.New(ob.Since), Restarts: int32(ob.Restarts), LastError: ob.LastError,
			NodeStatus: status[ob.Node],
		})
	}
	for _, list := range v.instances {
		sort.Slice(list, func(i, j int) bool { return list[i].GetNode() < list[j].GetNode() })
	}
	diags, refusedDiags, err := intent.List[intent.PlacementStatus](ctx, db, intent.PrefixPlacement)
	if err != nil {
		return v, err
	}
	for _, it := range diags {
		d := it.Value
		v.placement[d.Plugin] = &operatorv1.PlacementDiagnostic{Severity: d.Severity, Wanted: int32(d.Wanted), Placed: int32(d.Placed),
			Message: d.Message, Since: timestamppb.New(d.Since)}
	}
	for _, r := range append(refused, refusedDiags...) {
		o.a.log.Warn("a cluster status record is not valid; left out", "error", r)
	}
	return v, nil
}

// stateOf maps an observation's state word ("running") to its enum;
// unknown words are INSTANCE_STATE_UNSPECIFIED.
func stateOf(word string) operatorv1.InstanceState {
	if v, ok := operatorv1.InstanceState_value["INSTANCE_STATE_"+strings.ToUpper(word)]; ok {
		return operatorv1.InstanceState(v)
	}
	return operatorv1.InstanceState_INSTANCE_STATE_UNSPECIFIED
}
