package agent

import (
	"context"
	"errors"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/cluster"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// ListGossipKeys lists the gossip keys every member holds.
func (o *operator) ListGossipKeys(ctx context.Context, _ *operatorv1.ListGossipKeysRequest) (*operatorv1.ListGossipKeysResponse, error) {
	r, err := o.keyring(ctx, cluster.KeyringList, "")
	if err != nil {
		return nil, err
	}
	return &operatorv1.ListGossipKeysResponse{Report: r}, nil
}

// InstallGossipKey adds a key to every member's keyring.
func (o *operator) InstallGossipKey(ctx context.Context, req *operatorv1.InstallGossipKeyRequest) (*operatorv1.InstallGossipKeyResponse, error) {
	r, err := o.keyring(ctx, cluster.KeyringInstall, req.GetKey())
	if err != nil {
		return nil, err
	}
	return &operatorv1.InstallGossipKeyResponse{Report: r}, nil
}

// UseGossipKey makes an installed key every member's primary key.
func (o *operator) UseGossipKey(ctx context.Context, req *operatorv1.UseGossipKeyRequest) (*operatorv1.UseGossipKeyResponse, error) {
	r, err := o.keyring(ctx, cluster.KeyringUse, req.GetKey())
	if err != nil {
		return nil, err
	}
	return &operatorv1.UseGossipKeyResponse{Report: r}, nil
}

// RemoveGossipKey removes a key from every member's keyring.
func (o *operator) RemoveGossipKey(ctx context.Context, req *operatorv1.RemoveGossipKeyRequest) (*operatorv1.RemoveGossipKeyResponse, error) {
	r, err := o.keyring(ctx, cluster.KeyringRemove, req.GetKey())
	if err != nil {
		return nil, err
	}
	return &operatorv1.RemoveGossipKeyResponse{Report: r}, nil
}

// keyring runs a keyring operation on every member through serf. Members
// that failed are in the report, not an error: the caller shows them.
func (o *operator) keyring(ctx context.Context, op, key string) (*operatorv1.GossipKeyringReport, error) {
	if op != cluster.KeyringList {
		o.a.log.Info("gossip keyring change on an operator's request", "operation", op, "actor", o.actor(ctx, ""))
	}
	res, err := o.a.cluster.Keyring(op, key)
	switch {
	case errors.Is(err, cluster.ErrBadGossipKey):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, cluster.ErrNoEncryption):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case res == nil:
		return nil, status.Errorf(codes.Unavailable, "asking the members through gossip: %v", err)
	}
	if err != nil {
		o.a.log.Warn("gossip keyring operation did not succeed on every member", "operation", op, "error", err, "failures", res.Errors)
	}
	r := &operatorv1.GossipKeyringReport{
		Nodes: int32(res.Nodes), Responses: int32(res.Responses),
		Failures: nodeMessages(res.Errors), Warnings: nodeMessages(res.Messages),
	}
	for _, k := range res.Keys {
		r.Keys = append(r.Keys, &operatorv1.GossipKey{Key: k.Key, Nodes: int32(k.Nodes), PrimaryNodes: int32(k.PrimaryOf)})
	}
	return r, nil
}

func nodeMessages(m map[string]string) []*operatorv1.GossipKeyringNodeMessage {
	out := make([]*operatorv1.GossipKeyringNodeMessage, 0, len(m))
	for node, msg := range m {
		out = append(out, &operatorv1.GossipKeyringNodeMessage{Node: node, Message: msg})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}
