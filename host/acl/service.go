package acl

import (
	"context"
	"errors"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	aclv1 "github.com/plughost/plughost/proto/plughost/acl/v1"
	"github.com/plughost/plughost/store"
)

// Service implements aclv1.ACLService. Reads answer from the resolver's
// copy; writes go to the leader through the store.
type Service struct {
	aclv1.UnimplementedACLServiceServer
	st *store.Store
	r  *Resolver
}

var _ aclv1.ACLServiceServer = (*Service)(nil)

// NewService returns the ACL service of an agent.
func NewService(st *store.Store, r *Resolver) *Service { return &Service{st: st, r: r} }

func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, ErrBootstrapped):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, ErrInUse):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrInvalidRules):
		code = codes.InvalidArgument
	case errors.Is(err, store.ErrNotLeader):
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}

func tokenProto(t *Token, secret string) *aclv1.Token {
	return &aclv1.Token{AccessorId: t.AccessorID, SecretId: secret, Description: t.Description,
		Policies: t.Policies, CreateTime: timestamppb.New(t.CreateTime)}
}

// Bootstrap makes the cluster's first management token.
func (s *Service) Bootstrap(ctx context.Context, _ *aclv1.BootstrapRequest) (*aclv1.BootstrapResponse, error) {
	if s.r.initial != "" {
		return nil, errInitialManagement
	}
	t, secret, err := Bootstrap(ctx, s.st)
	if errors.Is(err, ErrBootstrapped) {
		return nil, status.Error(codes.FailedPrecondition,
			"ACL bootstrap was done already in this cluster: it happens once; use the management token it printed, or a token made with it ('plughost acl token create')")
	}
	if err != nil {
		return nil, toStatus(err)
	}
	s.r.Reload(ctx)
	return &aclv1.BootstrapResponse{Token: tokenProto(t, secret)}, nil
}

// Bootstrap makes the cluster's first management token, once per
// cluster, and returns it with its secret. It fails with ErrBootstrapped
// after that.
func Bootstrap(ctx context.Context, st *store.Store) (*Token, string, error) {
	return bootstrap(ctx, st, "Bootstrap Token (Global Management)")
}

// CreateManagementToken makes a management token without the bootstrap
// check: for a dev agent that lost its token file.
func CreateManagementToken(ctx context.Context, st *store.Store, description string) (*Token, string, error) {
	return createToken(ctx, st, description, []string{GlobalManagement})
}

// CreateToken makes a token with policies.
func (s *Service) CreateToken(ctx context.Context, req *aclv1.CreateTokenRequest) (*aclv1.CreateTokenResponse, error) {
	t, secret, err := createToken(ctx, s.st, req.GetDescription(), req.GetPolicies())
	if err != nil {
		return nil, toStatus(err)
	}
	s.r.Reload(ctx)
	return &aclv1.CreateTokenResponse{Token: tokenProto(t, secret)}, nil
}

// ListTokens lists the tokens, oldest first, without secrets.
func (s *Service) ListTokens(context.Context, *aclv1.ListTokensRequest) (*aclv1.ListTokensResponse, error) {
	st := s.r.state.Load()
	resp := &aclv1.ListTokensResponse{}
	for _, t := range st.tokens {
		resp.Tokens = append(resp.Tokens, tokenProto(t, ""))
	}
	sort.Slice(resp.Tokens, func(i, j int) bool {
		a, b := resp.Tokens[i], resp.Tokens[j]
		if !a.CreateTime.AsTime().Equal(b.CreateTime.AsTime()) {
			return a.CreateTime.AsTime().Before(b.CreateTime.AsTime())
		}
		return a.AccessorId < b.AccessorId
	})
	return resp, nil
}

func (s *Service) token(id string) (*Token, error) {
	if t := s.r.state.Load().tokens[id]; t != nil {
		return t, nil
	}
	return nil, status.Errorf(codes.NotFound, "no token has accessor ID %q (see 'plughost acl token list')", id)
}

// ReadToken reads one token.
func (s *Service) ReadToken(_ context.Context, req *aclv1.ReadTokenRequest) (*aclv1.ReadTokenResponse, error) {
	t, err := s.token(req.GetAccessorId())
	if err != nil {
		return nil, err
	}
	return &aclv1.ReadTokenResponse{Token: tokenProto(t, "")}, nil
}

// DeleteToken revokes a token.
func (s *Service) DeleteToken(ctx context.Context, req *aclv1.DeleteTokenRequest) (*aclv1.DeleteTokenResponse, error) {
	t, err := s.token(req.GetAccessorId())
	if err != nil {
		return nil, err
	}
	if err := deleteToken(ctx, s.st, t); err != nil {
		return nil, toStatus(err)
	}
	s.r.Reload(ctx)
	return &aclv1.DeleteTokenResponse{}, nil
}

func (s *Service) policy(name string) (*aclv1.Policy, error) {
	if rules, ok := builtinRules[name]; ok {
		return &aclv1.Policy{Name: name, Description: builtinDescriptions[name], Rules: rules, Builtin: true}, nil
	}
	if p := s.r.state.Load().policies[name]; p != nil {
		return &aclv1.Policy{Name: p.Name, Description: p.Description, Rules: p.Rules}, nil
	}
	return nil, status.Errorf(codes.NotFound, "no policy is named %q (see 'plughost acl policy list')", name)
}

// CreatePolicy stores a new policy.
func (s *Service) CreatePolicy(ctx context.Context, req *aclv1.CreatePolicyRequest) (*aclv1.CreatePolicyResponse, error) {
	p := &Policy{Name: req.GetName(), Description: req.GetDescription(), Rules: req.GetRules()}
	if err := createPolicy(ctx, s.st, p); err != nil {
		return nil, toStatus(err)
	}
	s.r.Reload(ctx)
	return &aclv1.CreatePolicyResponse{Policy: &aclv1.Policy{Name: p.Name, Description: p.Description, Rules: p.Rules}}, nil
}

// ListPolicies lists the policies, built-in ones first.
func (s *Service) ListPolicies(context.Context, *aclv1.ListPoliciesRequest) (*aclv1.ListPoliciesResponse, error) {
	resp := &aclv1.ListPoliciesResponse{}
	for _, n := range s.r.state.Load().policyNames() {
		if p, err := s.policy(n); err == nil {
			resp.Policies = append(resp.Policies, p)
		}
	}
	return resp, nil
}

// ReadPolicy reads one policy.
func (s *Service) ReadPolicy(_ context.Context, req *aclv1.ReadPolicyRequest) (*aclv1.ReadPolicyResponse, error) {
	p, err := s.policy(req.GetName())
	if err != nil {
		return nil, err
	}
	return &aclv1.ReadPolicyResponse{Policy: p}, nil
}

// DeletePolicy deletes a policy no token uses.
func (s *Service) DeletePolicy(ctx context.Context, req *aclv1.DeletePolicyRequest) (*aclv1.DeletePolicyResponse, error) {
	if err := deletePolicy(ctx, s.st, s.r.state.Load(), req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	s.r.Reload(ctx)
	return &aclv1.DeletePolicyResponse{}, nil
}
