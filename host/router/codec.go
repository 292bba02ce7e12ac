package router

import (
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// frame is one gRPC message passed through the router undecoded. It holds
// the receive buffers gRPC read the message into, with one reference of its
// own, and hands that reference to gRPC's send path without copying.
//
// Ownership: Unmarshal takes a reference (gRPC frees its own as soon as
// Unmarshal returns); Marshal moves the reference out and gRPC frees it once
// the bytes are written. A frame whose SendMsg failed before Marshal ran
// still holds its data: release frees it.
type frame struct {
	data mem.BufferSlice
}

// release frees the data the frame still holds, if any.
func (f *frame) release() {
	if f.data != nil {
		f.data.Free()
		f.data = nil
	}
}

// codec is the router's encoding.CodecV2: a *frame passes through as raw
// bytes, anything else is an ordinary proto message (the agent's own
// services, reflection, health) handled by gRPC's proto codec.
type codec struct {
	proto encoding.CodecV2
}

func newCodec() codec {
	c := encoding.GetCodecV2(protocodec.Name)
	if c == nil {
		// The proto codec registers itself in its package's init, which the
		// import above guarantees has run.
		panic("router: grpc proto codec is not registered")
	}
	return codec{proto: c}
}

// Marshal implements encoding.CodecV2.
func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*frame); ok {
		out := f.data
		f.data = nil
		return out, nil
	}
	return c.proto.Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*frame); ok {
		f.release()
		data.Ref()
		f.data = data
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

// Name implements encoding.CodecV2. It is "proto" so that the content type
// on both hops stays application/grpc+proto, what every client and plugin
// speaks.
func (codec) Name() string { return protocodec.Name }
