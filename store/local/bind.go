package local

import (
	"context"
	"fmt"
	"math"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// Binding ties a store connection to one plugin: its namespace and its
// request rate (requests per second, with a burst; Rate 0 is unlimited).
type Binding struct {
	Namespace string
	Rate      float64
	Burst     int
	// Role is what the agent holds the instance to be in its singleton,
	// asked at each write to fence it. With it every write of the plugin
	// carries a fence; nil fences nothing.
	Role func() Role
}

// Bind returns srv restricted to b: every request runs in b.Namespace. A
// request that names another namespace, the agent's included, is refused
// with PermissionDenied; an empty namespace means the bound one (Bind sets
// it on the request). Requests over the rate are refused with
// ResourceExhausted. Every write is fenced by b.Role (see fence.go). A Binding whose namespace is not a valid plugin
// namespace refuses everything.
func Bind(srv storev1.StoreServiceServer, b Binding) storev1.StoreServiceServer {
	bs := &boundServer{srv: srv, b: b}
	if err := ValidPluginNamespace(b.Namespace); err != nil {
		bs.broken = status.Errorf(codes.Internal, "store: the plugin's store binding is invalid: %v", err)
	}
	if b.Rate > 0 {
		burst := b.Burst
		if burst < 1 {
			burst = max(1, int(math.Ceil(b.Rate)))
		}
		bs.b.Burst = burst
		bs.limiter = rate.NewLimiter(rate.Limit(b.Rate), burst)
	}
	return bs
}

// boundServer is a StoreServiceServer confined to one namespace.
type boundServer struct {
	storev1.UnimplementedStoreServiceServer
	srv     storev1.StoreServiceServer
	b       Binding
	limiter *rate.Limiter // nil: unlimited
	broken  error
}

// admit checks a request's namespace and rate, and returns the namespace to
// run it in.
func (bs *boundServer) admit(requested string) (string, error) {
	if bs.broken != nil {
		return "", bs.broken
	}
	if requested != "" && requested != bs.b.Namespace {
		return "", status.Errorf(codes.PermissionDenied,
			"store: this plugin's store is bound to namespace %q; namespace %q is not allowed", bs.b.Namespace, requested)
	}
	if bs.limiter != nil && !bs.limiter.Allow() {
		return "", status.Errorf(codes.ResourceExhausted,
			"store: namespace %q request rate limit exceeded: %g requests/s, burst %d (raise the plugin's store rate limit in the agent config)",
			bs.b.Namespace, bs.b.Rate, bs.b.Burst)
	}
	return bs.b.Namespace, nil
}

func (bs *boundServer) Get(ctx context.Context, req *storev1.GetRequest) (*storev1.GetResponse, error) {
	ns, err := bs.admit(req.GetNamespace())
	if err != nil {
		return nil, err
	}
	req.Namespace = ns
	return bs.srv.Get(ctx, req)
}

func (bs *boundServer) Put(ctx context.Context, req *storev1.PutRequest) (*storev1.PutResponse, error) {
	ns, err := bs.admit(req.GetNamespace())
	if err != nil {
		return nil, err
	}
	req.Namespace = ns
	if req.Fence, err = bs.fence(req.GetFence()); err != nil {
		return nil, err
	}
	return bs.srv.Put(ctx, req)
}

func (bs *boundServer) Delete(ctx context.Context, req *storev1.DeleteRequest) (*storev1.DeleteResponse, error) {
	ns, err := bs.admit(req.GetNamespace())
	if err != nil {
		return nil, err
	}
	req.Namespace = ns
	if req.Fence, err = bs.fence(req.GetFence()); err != nil {
		return nil, err
	}
	return bs.srv.Delete(ctx, req)
}

func (bs *boundServer) DeleteRange(ctx context.Context, req *storev1.DeleteRangeRequest) (*storev1.DeleteRangeResponse, error) {
	ns, err := bs.admit(req.GetNamespace())
	if err != nil {
		return nil, err
	}
	req.Namespace = ns
	if req.Fence, err = bs.fence(req.GetFence()); err != nil {
		return nil, err
	}
	return bs.srv.DeleteRange(ctx, req)
}

func (bs *boundServer) List(ctx context.Context, req *storev1.ListRequest) (*storev1.ListResponse, error) {
	ns, err := bs.admit(req.GetNamespace())
	if err != nil {
		return nil, err
	}
	req.Namespace = ns
	return bs.srv.List(ctx, req)
}

func (bs *boundServer) Txn(ctx context.Context, req *storev1.TxnRequest) (*storev1.TxnResponse, error) {
	ns, err := bs.admit(req.GetNamespace())
	if err != nil {
		return nil, err
	}
	req.Namespace = ns
	if req.Fence, err = bs.fence(req.GetFence()); err != nil {
		return nil, err
	}
	return bs.srv.Txn(ctx, req)
}

func (bs *boundServer) Watch(req *storev1.WatchRequest, stream grpc.ServerStreamingServer[storev1.WatchResponse]) error {
	ns, err := bs.admit(req.GetNamespace())
	if err != nil {
		return err
	}
	req.Namespace = ns
	// Per-client watch limits count a plugin as one client.
	return bs.srv.Watch(req, clientStream{stream, WithPlugin(stream.Context(), ns)})
}

// clientStream is a watch stream whose context names its client.
type clientStream struct {
	grpc.ServerStreamingServer[storev1.WatchResponse]
	ctx context.Context
}

func (s clientStream) Context() context.Context { return s.ctx }

// String describes the binding for logs.
func (bs *boundServer) String() string {
	return fmt.Sprintf("store binding namespace=%q rate=%g burst=%d", bs.b.Namespace, bs.b.Rate, bs.b.Burst)
}
