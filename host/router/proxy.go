package router

import (
	"context"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// proxy passes one call from the client stream ss to backend b: messages
// as raw frames, metadata without hop-by-hop headers, the caller's deadline
// and cancellation through the context, the backend's headers, trailers and
// status back unchanged.
//
// The method's shape, from b's descriptors, picks how: a call with one
// request (unary, server streaming) runs on the handler's goroutine alone; a
// client or bidi stream, or a method b has no descriptor for, needs a second
// goroutine for the client→backend direction. All move raw frames.
//
// When no stream reached b, the call may go to another instance: again
// says which (see Router.route), or nil when there is none to wait for.
func (r *Router) proxy(ss grpc.ServerStream, b *Backend, method string, again rerouter) error {
	ctx := outgoingContext(ss.Context())
	switch desc := b.streamDesc(method); {
	case desc == unaryDesc:
		return r.proxyUnary(ctx, ss, b, method, again)
	case !desc.ClientStreams:
		return r.proxyOneRequest(ctx, ss, b, method, desc, again)
	default:
		return r.proxyStreams(ctx, ss, b, method, desc, again)
	}
}

// rerouter returns the instance a call goes to that reached nothing of
// gone, its instance: another one, or nil and the error to end the call
// with (nil: gone's own).
type rerouter func(gone *Backend) (*Backend, error)

// newStream opens a stream of method on b or, when none reached b and
// again gives another instance, on that one.
func newStream(ctx context.Context, b *Backend, desc *grpc.StreamDesc, method string, opts []grpc.CallOption, again rerouter) (grpc.ClientStream, error) {
	for {
		cs, err := b.Conn.NewStream(ctx, desc, method, opts...)
		if err == nil {
			return cs, nil
		}
		next, aerr := again(b)
		if next == nil {
			if aerr != nil {
				return nil, aerr
			}
			return nil, errBackendConn(b, err)
		}
		b = next
	}
}

// outgoingContext returns ctx (the server stream's context, with the
// caller's deadline and cancellation) carrying the caller's metadata as
// outgoing metadata, less the headers that belong to the first hop.
func outgoingContext(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx) // a copy, ours to change
	for k := range md {
		if hopByHop(k) {
			delete(md, k)
		}
	}
	if len(md) == 0 {
		return ctx
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// hopByHop reports whether a metadata key describes the client's connection
// to the agent rather than the call, and so is not forwarded: pseudo
// headers, gRPC's own (grpc-timeout travels as the context's deadline),
// and HTTP connection headers.
func hopByHop(k string) bool {
	if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") || isCredential(k) {
		return true
	}
	switch k {
	case "content-type", "user-agent", "te", "host", "connection", "keep-alive",
		"proxy-connection", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// proxyUnary proxies a unary call on the handler's goroutine. It uses
// ClientConn.Invoke rather than NewStream: gRPC starts a goroutine per
// stream to watch its context, except for the streams Invoke makes.
func (r *Router) proxyUnary(ctx context.Context, ss grpc.ServerStream, b *Backend, method string, again rerouter) error {
	c := r.getUnaryCall()
	defer r.putUnaryCall(c)
	if err := ss.RecvMsg(&c.req); err != nil {
		if err == io.EOF {
			return status.Error(codes.Internal, "router: the client sent no request message for unary method "+method)
		}
		return err
	}
	// Invoke returns once the response and the trailers are in, so header,
	// message and status are queued to the client back to back, for gRPC's
	// writer to batch.
	err := b.Conn.Invoke(ctx, method, &c.req, &c.resp, c.opts...)
	for err != nil && c.trl == nil {
		// No stream reached the backend (gRPC sets the trailer of every
		// stream it opened): another instance may take the call.
		next, aerr := again(b)
		if next == nil {
			if aerr != nil {
				return aerr
			}
			return errBackendConn(b, err)
		}
		b, c.hdr = next, nil
		err = b.Conn.Invoke(ctx, method, &c.req, &c.resp, c.opts...)
	}
	if len(c.hdr) > 0 {
		// SendHeader takes the map as is; SetHeader would copy it.
		if err := ss.SendHeader(c.hdr); err != nil {
			return err
		}
	}
	if err == nil {
		if err := ss.SendMsg(&c.resp); err != nil {
			return err
		}
	}
	if len(c.trl) > 0 {
		ss.SetTrailer(c.trl)
	}
	return err
}

// unaryCall is the state of one proxied unary call, pooled: the call
// options point into it, so they are built once per unaryCall, not per call.
type unaryCall struct {
	req, resp frame
	hdr, trl  metadata.MD
	opts      []grpc.CallOption
}

func (r *Router) getUnaryCall() *unaryCall {
	if c, ok := r.unaryCalls.Get().(*unaryCall); ok {
		return c
	}
	c := new(unaryCall)
	c.opts = append(append(make([]grpc.CallOption, 0, len(r.callOpts)+2), r.callOpts...),
		grpc.Header(&c.hdr), grpc.Trailer(&c.trl))
	return c
}

func (r *Router) putUnaryCall(c *unaryCall) {
	c.req.release()
	c.resp.release()
	c.hdr, c.trl = nil, nil
	r.unaryCalls.Put(c)
}

// proxyOneRequest proxies a server-streaming call on the handler's
// goroutine: read the request, send it with the half-close in the same
// frame, then pass the responses back.
func (r *Router) proxyOneRequest(ctx context.Context, ss grpc.ServerStream, b *Backend, method string, desc *grpc.StreamDesc, again rerouter) error {
	// Open the backend stream first: its headers go out while the request
	// is read.
	cs, err := newStream(ctx, b, desc, method, r.callOpts, again)
	if err != nil {
		return err
	}
	var req frame
	switch err := ss.RecvMsg(&req); err {
	case nil:
		err = cs.SendMsg(&req)
		req.release()
		if err != nil && err != io.EOF {
			return err
		}
		// On io.EOF the backend ended the call: RecvMsg returns its status.
	case io.EOF:
		// The client half-closed without a request: the backend answers.
		_ = cs.CloseSend()
	default:
		return err
	}
	return forwardResponses(ss, cs)
}

// proxyStreams proxies a client-streaming or bidi call: requests flow on a
// second goroutine, responses on the handler's.
func (r *Router) proxyStreams(ctx context.Context, ss grpc.ServerStream, b *Backend, method string, desc *grpc.StreamDesc, again rerouter) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := newStream(ctx, b, desc, method, r.callOpts, again)
	if err != nil {
		return err
	}
	// The request goroutine ends when the client half-closes, when the
	// backend call ends, or at the latest when this handler returns and
	// gRPC closes ss.
	clientErr := make(chan error, 1)
	go func() {
		if err := forwardRequests(ss, cs); err != nil {
			clientErr <- err // before cancel: the handler reads it after cs fails
			cancel()
		}
	}()
	err = forwardResponses(ss, cs)
	if err != nil {
		select {
		case cerr := <-clientErr:
			// The client's side failed first (say, a message over the
			// limit): that, not the cancellation it caused, is the outcome.
			return cerr
		default:
		}
	}
	return err
}

// forwardRequests copies the client's messages to the backend, then its
// half-close. It returns an error only when reading from the client failed;
// a failed send ends cs, whose status forwardResponses returns.
func forwardRequests(ss grpc.ServerStream, cs grpc.ClientStream) error {
	var f frame
	for {
		err := ss.RecvMsg(&f)
		if err == io.EOF {
			_ = cs.CloseSend()
			return nil
		}
		if err != nil {
			f.release()
			return err
		}
		if err := cs.SendMsg(&f); err != nil {
			f.release()
			return nil
		}
	}
}

// forwardResponses passes the backend's headers, messages, trailers and
// status back to the client.
func forwardResponses(ss grpc.ServerStream, cs grpc.ClientStream) error {
	// Header blocks until the backend sends headers or ends the call; nil
	// means it answered trailers-only, and so does the router then. Headers
	// are sent at once so a stream that is slow to produce its first
	// message still shows the client it started.
	if hdr, _ := cs.Header(); hdr != nil {
		if err := ss.SendHeader(hdr); err != nil {
			return err
		}
	}
	var f frame
	for {
		if err := cs.RecvMsg(&f); err != nil {
			f.release()
			ss.SetTrailer(cs.Trailer())
			if err == io.EOF {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(&f); err != nil {
			f.release()
			return err
		}
	}
}
