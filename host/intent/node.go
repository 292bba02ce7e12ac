package intent

import (
	"context"
	"errors"
	"time"
)

// PrefixNode is the key prefix of the operator's node records (area:
// nodes): node/<node>, written by `plughost node drain|eligible`.
const PrefixNode = "node/"

// NodeState is the operator's word on a node: a drained node (Eligible
// false) is given no instances, and the placement controller moves those it
// runs elsewhere. A node with no record is eligible.
type NodeState struct {
	Node     string    `json:"node"`
	Eligible bool      `json:"eligible"`
	Since    time.Time `json:"since"`
	Actor    string    `json:"actor"`
}

// NodeKey is the key of a node's record.
func NodeKey(node string) string { return PrefixNode + node }

// Key is where the node record is kept.
func (r *NodeState) Key() string { return NodeKey(r.Node) }

// Validate checks the node record.
func (r *NodeState) Validate() error {
	return errors.Join(checkNode(r.Node), checkText("actor", r.Actor))
}

// NodeState reads a node's record; found is false when there is none, and
// the node is then eligible.
func (db *DB) NodeState(ctx context.Context, node string) (Item[NodeState], bool, error) {
	return Get[NodeState](ctx, db, NodeKey(node))
}

// NodeStates reads every node record, by node name.
func (db *DB) NodeStates(ctx context.Context) ([]Item[NodeState], []error, error) {
	return List[NodeState](ctx, db, PrefixNode)
}

// Drained is the nodes the records make ineligible, by name.
func Drained(states []Item[NodeState]) map[string]NodeState {
	out := map[string]NodeState{}
	for _, it := range states {
		if !it.Value.Eligible {
			out[it.Value.Node] = it.Value
		}
	}
	return out
}
