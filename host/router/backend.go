package router

import (
	"context"
	"net"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Backend is one running plugin instance the router can send calls to. The
// exported fields are set by whoever builds it (the supervisor) and must not
// change once the Backend is given to Router.SetBackend.
type Backend struct {
	Plugin     string
	Version    string
	InstanceID string
	// Conn is the host's go-plugin gRPC connection to the instance.
	Conn *grpc.ClientConn
	// Files holds the plugin's descriptors, from LoadDescriptors. The router
	// uses them to answer reflection and to learn each method's streaming
	// shape; with nil Files every call is proxied as a bidi stream, which is
	// correct but slower for unary calls.
	Files *protoregistry.Files
	// Dial opens a new connection to the instance's gRPC server that speaks
	// HTTP/2 from its first byte (TLS already established, ALPN h2). The
	// router's relay opens its own connection with it; calls it cannot
	// reach this way fail with Unavailable.
	Dial func(ctx context.Context) (net.Conn, error)
	// Node is the node the instance runs on when it is another node's
	// (built by SetRemote); "" for this node's own instances.
	Node string

	// downUntil (unix ns) is set when the relay could not connect to a
	// remote instance: until then pick passes it over while others are up.
	downUntil atomic.Int64
	inflight  atomic.Int64
	waiters   atomic.Int32
	// cutting is set by Cut: from then on, a call that ends without the
	// plugin's answer counts in cut.
	cutting atomic.Bool
	cut     atomic.Int64
	mu      sync.Mutex    // guards idle
	idle    chan struct{} // closed when in-flight drops to zero while someone waits

	rcMu sync.Mutex // guards rc
	rc   *h2conn    // the relay's connection, opened by the first call

	prepareOnce sync.Once
	methods     map[string]*grpc.StreamDesc // "/pkg.Service/Method" → shape
}

// bidiDesc is the shape of a call whose method the router has no descriptor
// for: anything can be proxied as a bidi stream.
var bidiDesc = &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}

// InFlight returns the number of calls and streams in flight on b.
func (b *Backend) InFlight() int64 { return b.inflight.Load() }

// Wait blocks until no call is in flight on b or ctx is done, and returns
// the number of calls still in flight then: zero when b drained, else how
// many calls stopping b will cut. Use it on the Backend SetBackend returned,
// so no new call can start on it.
func (b *Backend) Wait(ctx context.Context) (cut int64) {
	b.waiters.Add(1)
	defer b.waiters.Add(-1)
	for {
		b.mu.Lock()
		if b.idle == nil {
			b.idle = make(chan struct{})
		}
		idle := b.idle
		b.mu.Unlock()
		// Read the count after publishing the channel: a call that ends
		// after this load sees waiters > 0 and closes idle.
		if n := b.inflight.Load(); n == 0 {
			return 0
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return b.inflight.Load()
		}
	}
}

// Cut marks the calls still in flight on b as being cut off: stop the
// instance after it, then CutOff counts those that ended without the
// plugin's answer. A call that the plugin finishes in the meantime is not
// one of them, so the count is what callers saw.
func (b *Backend) Cut() { b.cutting.Store(true) }

// CutOff waits until no call is in flight on b or ctx is done, and returns
// how many calls ended without the plugin's answer since Cut, plus those
// still in flight then.
func (b *Backend) CutOff(ctx context.Context) int64 {
	left := b.Wait(ctx)
	return b.cut.Load() + left
}

// acquire counts a call in flight on b.
func (b *Backend) acquire() { b.inflight.Add(1) }

// release ends a call counted by acquire that ended without the plugin's
// answer (or whose end the router does not see: proxied calls).
func (b *Backend) release() { b.releaseAs(false) }

// releaseAs ends a call counted by acquire; answered says the plugin
// sent the call's closing status.
func (b *Backend) releaseAs(answered bool) {
	if !answered && b.cutting.Load() {
		b.cut.Add(1)
	}
	if b.inflight.Add(-1) == 0 && b.waiters.Load() > 0 {
		b.mu.Lock()
		if b.idle != nil {
			close(b.idle)
			b.idle = nil
		}
		b.mu.Unlock()
	}
}

// prepare builds the method table from b.Files, once.
func (b *Backend) prepare() {
	b.prepareOnce.Do(func() {
		b.methods = methodShapes(b.Files)
	})
}

// streamDesc returns the streaming shape of method, a full method name such
// as "/echo.v1.EchoService/Echo".
func (b *Backend) streamDesc(method string) *grpc.StreamDesc {
	if d, ok := b.methods[method]; ok {
		return d
	}
	return bidiDesc
}

// The four shapes a method can have; shared, never modified.
var (
	unaryDesc        = &grpc.StreamDesc{}
	serverStreamDesc = &grpc.StreamDesc{ServerStreams: true}
	clientStreamDesc = &grpc.StreamDesc{ClientStreams: true}
)

// methodShapes maps every method of every service in files to its shape.
func methodShapes(files *protoregistry.Files) map[string]*grpc.StreamDesc {
	if files == nil {
		return nil
	}
	out := make(map[string]*grpc.StreamDesc)
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		svcs := fd.Services()
		for i := 0; i < svcs.Len(); i++ {
			sd := svcs.Get(i)
			ms := sd.Methods()
			for j := 0; j < ms.Len(); j++ {
				md := ms.Get(j)
				d := bidiDesc
				switch {
				case !md.IsStreamingClient() && !md.IsStreamingServer():
					d = unaryDesc
				case md.IsStreamingServer() && !md.IsStreamingClient():
					d = serverStreamDesc
				case md.IsStreamingClient() && !md.IsStreamingServer():
					d = clientStreamDesc
				}
				out["/"+string(sd.FullName())+"/"+string(md.Name())] = d
			}
		}
		return true
	})
	return out
}
