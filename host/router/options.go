package router

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Flow-control windows of both hops. Setting them makes flow control static,
// which turns off gRPC's BDP estimator: on a connection with dynamic
// windows, the receiver of DATA frames pings the sender about once per round
// trip to measure bandwidth, and every ping is one more frame each way,
// written by its own syscall. On the router's two hops (loopback or LAN to
// the client, a local socket to the plugin) the bandwidth-delay product is
// tiny, so the estimator buys nothing; measured on the unary benchmark it
// cut the router's write syscalls from about 8.6 to 6.8 per call. The
// sizes are as large as any message the router needs to stream without
// stalls (1 MiB per stream moves an 8 MiB message as fast as the dynamic
// window did) and the connection window equals the ceiling gRPC's own
// estimator would grow to.
const (
	streamWindowBytes = 1 << 20
	connWindowBytes   = 16 << 20
)

// ServerOptions returns the options the agent's API grpc.Server must be
// built with for the router to serve: the unknown-service handler that
// proxies, the codec that passes proxied messages through as raw frames
// (and encodes the agent's own services' proto messages as usual), the
// message limits, the flow-control windows, the idle timeout, and the per-connection stream
// and header limits the relay applies too (they are the settings both
// advertise, see relay.serveConn). Append the agent's own
// options (credentials, interceptors) after these.
//
// Options considered and left at gRPC's default, because they did not
// measurably help on the unary benchmark or cost more than they save:
//   - NumStreamWorkers: reuses handler goroutines to skip stack growth, but
//     the GC shrinks idle workers' stacks between calls, so the growth comes
//     back (runtime.newstack stayed at 6–10% of CPU with 16, 64 or 128
//     workers, as without), while each worker is an idle goroutine for the
//     agent's life.
//   - SharedWriteBuffer: on by default since gRPC 1.7x (the option is
//     deprecated).
//   - WriteBufferSize/ReadBufferSize: the 32 KiB defaults hold a whole small
//     exchange; what splits it into several writes is gRPC's writer
//     goroutine flushing between frames, which no buffer size changes.
func (r *Router) ServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.UnknownServiceHandler(r.handle),
		grpc.ForceServerCodecV2(r.codec),
		grpc.MaxRecvMsgSize(r.cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(r.cfg.MaxMessageBytes),
		grpc.StaticStreamWindowSize(streamWindowBytes),
		grpc.StaticConnWindowSize(connWindowBytes),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.MaxHeaderListSize(maxHeaderListBytes),
	}
	if r.cfg.IdleTimeout > 0 {
		// As the relay's closeIdle does for relayed connections.
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: r.cfg.IdleTimeout}))
	}
	return opts
}

// BackendDialOptions returns the options the host's connections to plugin
// instances should be dialed with, appended to go-plugin's
// ClientConfig.GRPCDialOptions: static flow-control windows, for the reason
// given at streamWindowBytes.
// Transparent retries stay on (gRPC's default): a stream the plugin refused
// unprocessed is retried rather than failed. The message limits are set per
// call by the router.
func BackendDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithStaticStreamWindowSize(streamWindowBytes),
		grpc.WithStaticConnWindowSize(connWindowBytes),
	}
}
