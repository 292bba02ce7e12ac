package operatorv1

// NodesErrorDomain is the google.rpc.ErrorInfo domain of the reasons the
// node commands (ListNodes, SetNodeEligibility) attach to their errors.
const NodesErrorDomain = "plughost.operator.nodes"

// Reasons, in NodesErrorDomain.
const (
	// ReasonNodeUnknown: SetNodeEligibility named a node that is not a
	// member of the cluster (metadata "node" names it).
	ReasonNodeUnknown = "NODE_UNKNOWN"
)
