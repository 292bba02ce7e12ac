package acl

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/tlsutil"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/local"
)

// Credential headers: a call's token is "authorization: Bearer SECRET" or
// "x-plughost-token: SECRET".
const (
	HeaderAuthorization = "authorization"
	HeaderToken         = "x-plughost-token"
)

// SecretOf returns the secret a credential header's value carries.
func SecretOf(name, value string) string {
	if name == HeaderToken {
		return strings.TrimSpace(value)
	}
	if len(value) > 7 && strings.EqualFold(value[:7], "bearer ") {
		return strings.TrimSpace(value[7:])
	}
	return ""
}

// secretFrom returns the secret of a call's incoming metadata.
func secretFrom(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, name := range []string{HeaderAuthorization, HeaderToken} {
		if v := md.Get(name); len(v) > 0 {
			if s := SecretOf(name, v[0]); s != "" {
				return s
			}
		}
	}
	return ""
}

type identityKey struct{}

// withIdentity returns ctx of a call made as id. Per-client limits (the
// store's watches) count the call under its token, on all the token's
// connections together, except another agent's own.
func withIdentity(ctx context.Context, id *Identity) context.Context {
	ctx = context.WithValue(ctx, identityKey{}, id)
	if id != agentIdentity {
		client := "token " + id.AccessorID
		if id.Description != "" {
			client += " (" + id.Description + ")"
		}
		ctx = local.WithClient(ctx, client)
	}
	return ctx
}

// IdentityFrom returns the identity an authorized call was made with.
func IdentityFrom(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(*Identity)
	return id, ok
}

// ErrorInfo reasons, in domain "plughost.acl", of the errors that refuse
// a call.
const (
	ErrorDomain          = "plughost.acl"
	ReasonNoToken        = "ACL_TOKEN_MISSING"
	ReasonTokenNotFound  = "ACL_TOKEN_NOT_FOUND"
	ReasonPermissionDeny = "ACL_PERMISSION_DENIED"
)

func withInfo(code codes.Code, reason, msg string, meta map[string]string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: ErrorDomain, Reason: reason, Metadata: meta}); err == nil {
		st = d
	}
	return st.Err()
}

// howToGetToken ends the messages of calls refused for want of a token.
const howToGetToken = "give one with -token, -token-file or PLUGHOST_TOKEN (a new cluster's first token comes from 'plughost acl bootstrap'; on a dev agent's host the CLI finds the agent's token by itself)"

// Enforcer authorizes calls to the agent's API.
type Enforcer struct {
	r *Resolver
	// cluster is set for the cluster RPC port's enforcer: only there is a
	// call without a token another agent's, known by its certificate.
	cluster bool

	// own are the services registered on the agent's server, learnt at its
	// first call (services cannot be registered once it serves): a method
	// of one of them that the table does not list needs management; other
	// services are plugins', which the router authorizes.
	srv     *grpc.Server
	ownOnce sync.Once
	own     map[string]bool
}

// NewEnforcer returns an enforcer that resolves tokens with r: every call
// needs a token.
func NewEnforcer(r *Resolver) *Enforcer { return &Enforcer{r: r} }

// NewClusterEnforcer returns the enforcer of the cluster RPC port, where
// other agents forward calls: a call there without a token is an agent's
// own, with management rights, when its connection's mutual TLS verified
// a server certificate of the cluster's CA (the port's server must be
// given clusterrpc.ServerCredentials, which tell it so); a client's call
// an agent forwards carries the client's token, checked as on the API.
func NewClusterEnforcer(r *Resolver) *Enforcer { return &Enforcer{r: r, cluster: true} }

// SetServer names the server the enforcer's interceptors run in.
func (e *Enforcer) SetServer(s *grpc.Server) { e.srv = s }

func (e *Enforcer) isOwn(method string) bool {
	e.ownOnce.Do(func() {
		e.own = map[string]bool{}
		if e.srv != nil {
			for name := range e.srv.GetServiceInfo() {
				e.own[name] = true
			}
		}
	})
	service := strings.TrimPrefix(method, "/")
	if i := strings.LastIndexByte(service, '/'); i >= 0 {
		service = service[:i]
	}
	return e.own[service]
}

// permission is what method needs; ok is false for a plugin's method.
func (e *Enforcer) permission(method string) (Permission, bool) {
	if p, ok := methods[method]; ok {
		return p, true
	}
	if e.isOwn(method) {
		return management, true
	}
	return Permission{}, false
}

// identify resolves the secret a call carries. On the cluster RPC port a
// call without one is another agent's own (its catalog, history and ACL
// writes forwarded to the leader): its identity is the server
// certificate the port's mutual TLS verified, not a bearer secret.
func (e *Enforcer) identify(ctx context.Context, secret, method string) (*Identity, error) {
	if secret == "" && e.cluster && fromServer(ctx) {
		return agentIdentity, nil
	}
	id, err := e.r.Resolve(secret)
	switch err {
	case nil:
		return id, nil
	case ErrNoToken:
		return nil, withInfo(codes.Unauthenticated, ReasonNoToken,
			fmt.Sprintf("no ACL token: %s needs one; %s", method, howToGetToken), map[string]string{"method": method})
	default:
		return nil, withInfo(codes.Unauthenticated, ReasonTokenNotFound,
			fmt.Sprintf("ACL token not found: it was deleted or never existed; %s", howToGetToken), map[string]string{"method": method})
	}
}

// fromServer reports whether the call of ctx came over a TLS connection
// whose peer presented a verified plughost server certificate (see
// clusterrpc.ServerCredentials).
func fromServer(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.PeerCertificates) == 0 {
		return false
	}
	_, ok = tlsutil.NodeOf(info.State.PeerCertificates[0])
	return ok
}

// check reports whether id may make a call that needs p on target.
func check(id *Identity, p Permission, target, method string) error {
	a := id.Authz
	var ok bool
	switch p.kind {
	case kindNone, kindAnyToken:
		ok = true
	case kindManagement:
		ok = a.Management()
	case kindOperator:
		ok = a.Operator() >= p.level
	case kindACL:
		ok = a.ACL() >= p.level
	case kindPlugin:
		ok = a.Plugin(target) >= p.level
	case kindNamespace:
		ok = a.Namespace(target) >= p.level
	}
	if ok {
		return nil
	}
	return denied(id, p.what(target), method, "may not call "+method)
}

// denied is the PermissionDenied of a call to method by id, which needs
// need; what says what id may not do.
func denied(id *Identity, need, method, what string) error {
	return withInfo(codes.PermissionDenied, ReasonPermissionDeny,
		fmt.Sprintf("permission denied: token %s %s: it needs %s; ask an operator for a token with a policy that grants it ('plughost acl policy create', 'plughost acl token create -policy NAME')",
			id.Actor(), what, need), map[string]string{"method": method, "accessor_id": id.AccessorID, "permission": need})
}

// targetOf is the plugin or namespace a request is about.
func targetOf(p Permission, req any) string {
	switch p.kind {
	case kindPlugin:
		if r, ok := req.(interface{ GetName() string }); ok {
			return r.GetName()
		}
	case kindNamespace:
		if r, ok := req.(interface{ GetNamespace() string }); ok {
			return r.GetNamespace()
		}
	}
	return ""
}

// Unary is the server's unary interceptor.
func (e *Enforcer) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	p, ok := e.permission(info.FullMethod)
	if !ok {
		return handler(ctx, req) // unary handlers are all registered: never a plugin's
	}
	if p.kind == kindNone {
		return handler(ctx, req)
	}
	secret := secretFrom(ctx)
	id, err := e.identify(ctx, secret, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if err := check(id, p, targetOf(p, req), info.FullMethod); err != nil {
		return nil, err
	}
	resp, err := handler(withCaller(withIdentity(ctx, id), secret, info.FullMethod), req)
	if err == nil && p.filter != nil {
		p.filter(id.Authz, resp)
	}
	return resp, err
}

// Stream is the server's stream interceptor. A call to a service the
// server does not register is a plugin's: the router's unknown-service
// handler authorizes it (see AuthorizeCall), so it passes untouched.
func (e *Enforcer) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	p, ok := e.permission(info.FullMethod)
	if !ok || p.kind == kindNone {
		return handler(srv, ss)
	}
	secret := secretFrom(ss.Context())
	id, err := e.identify(ss.Context(), secret, info.FullMethod)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(withCaller(withIdentity(ss.Context(), id), secret, info.FullMethod))
	defer cancel()
	w := &stream{ServerStream: ss, ctx: ctx, r: e.r, id: id, p: p, method: info.FullMethod}
	w.live = liveCall{hash: hashSecret(secret), p: p, method: info.FullMethod, revoke: func(err error) {
		w.revoked.Store(&err)
		cancel()
	}}
	if p.kind == kindPlugin || p.kind == kindNamespace {
		// The target is in the request, the stream's first message.
		w.pending = true
	} else if err := check(id, p, "", info.FullMethod); err != nil {
		return err
	} else if id != agentIdentity {
		w.release = e.r.hold(&w.live)
	}
	err = handler(srv, w)
	if w.release != nil {
		w.release()
	}
	if r := w.revoked.Load(); r != nil {
		// The stream ended because its token was deleted or lost the
		// permission: say so rather than "canceled".
		return *r
	}
	return err
}

// stream checks a streaming call's first message before its handler
// sees it, and ends the call should its token be revoked (see
// Resolver.hold).
type stream struct {
	grpc.ServerStream
	ctx     context.Context
	r       *Resolver
	id      *Identity
	p       Permission
	method  string
	pending bool
	live    liveCall
	release func()
	revoked atomic.Pointer[error]
}

func (s *stream) Context() context.Context { return s.ctx }

func (s *stream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if s.pending {
		s.pending = false
		s.live.target = targetOf(s.p, m)
		if err := check(s.id, s.p, s.live.target, s.method); err != nil {
			return err
		}
		if s.id != agentIdentity {
			s.release = s.r.hold(&s.live)
		}
	}
	return nil
}

// AuthorizeCall authorizes a call to plugin's method relayed or proxied by
// the router; credential is the value of header (HeaderAuthorization or
// HeaderToken), "" when the call has none. An authorized call is watched
// over until release: should its token be deleted or lose the permission
// meanwhile, revoked is called, once, with the status that must end it
// (on the resolver's goroutine: it must not block). A nil revoked watches
// over nothing.
func (e *Enforcer) AuthorizeCall(header, credential, plugin, method string, revoked func(error)) (release func(), err error) {
	secret := SecretOf(header, credential)
	id, err := e.identify(context.Background(), secret, method)
	if err != nil {
		return nil, err
	}
	p := pluginLevel(Call)
	if err := check(id, p, plugin, method); err != nil {
		return nil, err
	}
	if revoked == nil {
		return func() {}, nil
	}
	return e.r.hold(&liveCall{hash: hashSecret(secret), p: p, target: plugin, method: method, revoke: revoked}), nil
}

// Forward returns ctx with the token of the call it serves as outgoing
// metadata, for a call the agent passes on to another agent on the
// caller's behalf: that agent decides on the caller's rights.
func Forward(ctx context.Context) context.Context {
	if s := secretFrom(ctx); s != "" {
		return metadata.AppendToOutgoingContext(ctx, HeaderAuthorization, "Bearer "+s)
	}
	return ctx
}

// storeCallerKey holds, in the context of a call to the store's own API
// (StoreService, StoreAdminService), the secret of its caller.
type storeCallerKey struct{}

// withCaller marks ctx, of a call to method made with secret, as a
// client's own store call when method is one: the store passes that
// caller's token on with it if it forwards it to the leader.
func withCaller(ctx context.Context, secret, method string) context.Context {
	service := strings.TrimPrefix(method, "/")
	if i := strings.LastIndexByte(service, '/'); i >= 0 {
		service = service[:i]
	}
	if service == storev1.StoreService_ServiceDesc.ServiceName || service == storev1.StoreAdminService_ServiceDesc.ServiceName {
		return context.WithValue(ctx, storeCallerKey{}, secret)
	}
	return ctx
}

// forwardCreds are the credentials of the store's calls to the leader.
type forwardCreds struct{ r *Resolver }

// ForwardCredentials are the credentials a follower's store presents to
// the leader. A client's own call to the store's API carries the client's
// token, so that the leader decides on the caller's rights as they stand
// there. Every other store call is the agent's own (its catalog, history
// and ACL records, written once the API has authorized the call that
// needs them, a plugin's store): it carries no token, never the token of
// the call being served, which need not grant _sys; the leader's cluster
// RPC port knows it as an agent's by the server certificate its mutual
// TLS verified (see NewClusterEnforcer).
func (r *Resolver) ForwardCredentials() interface {
	GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error)
	RequireTransportSecurity() bool
} {
	return forwardCreds{r}
}

func (f forwardCreds) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	s, _ := ctx.Value(storeCallerKey{}).(string)
	if s == "" {
		// The agent's own call: the leader knows this agent by the server
		// certificate of the connection.
		return nil, nil
	}
	return map[string]string{HeaderAuthorization: "Bearer " + s}, nil
}

func (forwardCreds) RequireTransportSecurity() bool { return false }

// MayDescribe reports whether the caller of a call the enforcer
// authorized (its context) may read plugin: reflection describes only
// such plugins, as ListPlugins lists only them.
func (e *Enforcer) MayDescribe(ctx context.Context, plugin string) bool {
	id, ok := IdentityFrom(ctx)
	return ok && id.Authz.Plugin(plugin) >= Read
}
