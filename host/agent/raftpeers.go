package agent

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/acl"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	"github.com/plughost/plughost/store"
)

// forwardedPeerKey marks a RemoveRaftPeer that a follower passed on to the
// leader, so it is not passed on again.
const forwardedPeerKey = "plughost-forwarded-peer-removal"

// ListRaftPeers lists the raft configuration as this node knows it, with
// gossip's word on each server. It needs no leader: it is how an operator
// sees which servers a cluster that lost its quorum still counts on.
func (o *operator) ListRaftPeers(context.Context, *operatorv1.ListRaftPeersRequest) (*operatorv1.ListRaftPeersResponse, error) {
	peers, leader, err := o.raftPeers()
	if err != nil {
		return nil, err
	}
	return &operatorv1.ListRaftPeersResponse{Peers: peers, Leader: leader}, nil
}

func (o *operator) raftPeers() ([]*operatorv1.RaftPeer, string, error) {
	conf, err := o.a.store.Configuration()
	if err != nil {
		return nil, "", status.Errorf(codes.Unavailable, "reading the raft configuration: %v", err)
	}
	serfStatus := map[string]string{}
	for _, m := range o.a.cluster.Members() {
		serfStatus[m.Name] = m.Status
	}
	leader, _ := o.a.store.Leader()
	peers := make([]*operatorv1.RaftPeer, 0, len(conf))
	for _, s := range conf {
		peers = append(peers, &operatorv1.RaftPeer{
			Id: s.ID, Address: s.Address, Voter: s.Suffrage == store.Voter,
			Leader: s.ID == leader, SerfStatus: serfStatus[s.ID],
		})
	}
	return peers, leader, nil
}

// RemoveRaftPeer removes a server from the raft configuration. Only the
// leader can change it, so a follower passes the request on to the leader.
func (o *operator) RemoveRaftPeer(ctx context.Context, req *operatorv1.RemoveRaftPeerRequest) (*operatorv1.RemoveRaftPeerResponse, error) {
	id := req.GetId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "give the raft ID of the server to remove (see 'plughost operator raft list-peers')")
	}
	if !o.a.store.IsLeader() {
		return o.removePeerAtLeader(ctx, req)
	}
	peers, _, err := o.raftPeers()
	if err != nil {
		return nil, err
	}
	var peer *operatorv1.RaftPeer
	for _, p := range peers {
		if p.GetId() == id {
			peer = p
		}
	}
	if peer == nil {
		return nil, status.Errorf(codes.NotFound, "server %s is not in the raft configuration (see 'plughost operator raft list-peers')", id)
	}
	if peer.GetSerfStatus() == "alive" && !req.GetForce() {
		return nil, status.Errorf(codes.FailedPrecondition,
			"server %s is alive in gossip, and the leader would add it back: stop its agent first, or give -force", id)
	}
	o.a.log.Warn("removing a raft server on an operator's request", "server", id, "address", peer.GetAddress(), "voter", peer.GetVoter(), "actor", o.actor(ctx, ""))
	if err := o.a.store.RemoveServer(id); err != nil {
		return nil, status.Errorf(codes.Unavailable, "removing server %s from raft: %v", id, err)
	}
	after, _, err := o.raftPeers()
	if err != nil {
		return nil, err
	}
	return &operatorv1.RemoveRaftPeerResponse{Peers: after}, nil
}

// removePeerAtLeader passes a RemoveRaftPeer on to the leader's API.
func (o *operator) removePeerAtLeader(ctx context.Context, req *operatorv1.RemoveRaftPeerRequest) (*operatorv1.RemoveRaftPeerResponse, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedPeerKey)) > 0 {
		return nil, status.Error(codes.Unavailable, "this node stopped leading while a removal was passed on to it; try again")
	}
	leader, _ := o.a.store.Leader()
	if leader == "" {
		return nil, status.Error(codes.Unavailable,
			"no raft leader: a configuration change needs one; if a majority of the servers is lost for good, recover with peers.json (see the README, 'Recovering from a lost quorum')")
	}
	addr, ok := o.a.cluster.APIAddrOf(leader)
	if !ok {
		return nil, status.Errorf(codes.Unavailable, "the leader is %s but its API address is not known yet; try again", leader)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reaching the leader %s at %s: %v", leader, addr, err)
	}
	defer conn.Close()
	// The leader checks the caller's token again.
	ctx = metadata.AppendToOutgoingContext(acl.Forward(ctx), forwardedPeerKey, "1")
	// The leader's answer is a status already; pass it on as it is.
	return operatorv1.NewOperatorServiceClient(conn).RemoveRaftPeer(ctx, req)
}
