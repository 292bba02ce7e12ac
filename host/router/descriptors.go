package router

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// The reflection methods LoadDescriptors asks, newest first. v1alpha's
// messages are v1's with another package name: the same wire format, so
// the v1 Go types serve both.
const (
	reflectionV1      = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
	reflectionV1Alpha = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
)

// LoadDescriptors fetches, through the plugin's own gRPC reflection (v1,
// else v1alpha), the file descriptors that define services and their
// transitive dependencies. It fails naming the service if the plugin does
// not serve one of them (ErrServiceNotServed), and with ErrNoReflection if
// the plugin serves no reflection.
func LoadDescriptors(ctx context.Context, conn grpc.ClientConnInterface, services []string) (*protoregistry.Files, error) {
	files, err := loadDescriptors(ctx, conn, reflectionV1, services)
	if status.Code(err) == codes.Unimplemented {
		files, err = loadDescriptors(ctx, conn, reflectionV1Alpha, services)
		if status.Code(err) == codes.Unimplemented {
			return nil, fmt.Errorf("router: load descriptors: %w (register google.golang.org/grpc/reflection on the plugin's server)", ErrNoReflection)
		}
	}
	return files, err
}

// loadDescriptors does LoadDescriptors' work with one reflection method. A
// status error from the stream is returned as is, for the fallback.
func loadDescriptors(ctx context.Context, conn grpc.ClientConnInterface, method string, services []string) (*protoregistry.Files, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := conn.NewStream(ctx, bidiDesc, method)
	if err != nil {
		return nil, err
	}
	ask := func(req *rpb.ServerReflectionRequest) (*rpb.ServerReflectionResponse, error) {
		if err := stream.SendMsg(req); err != nil && err != io.EOF {
			return nil, err
		}
		// On io.EOF the stream ended: RecvMsg returns why.
		resp := new(rpb.ServerReflectionResponse)
		if err := stream.RecvMsg(resp); err != nil {
			if err == io.EOF {
				err = status.Error(codes.Internal, "reflection stream ended early")
			}
			return nil, err
		}
		return resp, nil
	}

	protos := make(map[string]*descriptorpb.FileDescriptorProto)
	add := func(resp *rpb.ServerReflectionResponse) error {
		for _, raw := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
			fdp := new(descriptorpb.FileDescriptorProto)
			if err := proto.Unmarshal(raw, fdp); err != nil {
				return fmt.Errorf("router: load descriptors: malformed file descriptor from reflection: %w", err)
			}
			protos[fdp.GetName()] = fdp
		}
		return nil
	}

	for _, svc := range services {
		resp, err := ask(&rpb.ServerReflectionRequest{
			MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: svc},
		})
		if err != nil {
			return nil, err
		}
		if e := resp.GetErrorResponse(); e != nil {
			return nil, fmt.Errorf("router: load descriptors of %s: %w (reflection says: %s; is the service registered on the plugin's server?)", svc, ErrServiceNotServed, e.GetErrorMessage())
		}
		if err := add(resp); err != nil {
			return nil, err
		}
	}

	// A reflection server sends a file with the dependencies it has not
	// sent before on the stream; ask for any that are still missing.
	for {
		missing := missingDependencies(protos)
		if len(missing) == 0 {
			break
		}
		for _, name := range missing {
			resp, err := ask(&rpb.ServerReflectionRequest{
				MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: name},
			})
			if err != nil {
				return nil, err
			}
			if e := resp.GetErrorResponse(); e == nil {
				if err := add(resp); err != nil {
					return nil, err
				}
			}
			if _, ok := protos[name]; !ok {
				// The plugin cannot tell; the agent's copy of a well-known
				// file is the same file.
				fd, err := protoregistry.GlobalFiles.FindFileByPath(name)
				if err != nil {
					return nil, fmt.Errorf("router: load descriptors: the plugin's reflection does not provide %s, a dependency of its services", name)
				}
				protos[name] = protodesc.ToFileDescriptorProto(fd)
			}
		}
	}
	_ = stream.CloseSend()

	set := &descriptorpb.FileDescriptorSet{}
	for _, name := range slices.Sorted(maps.Keys(protos)) {
		set.File = append(set.File, protos[name])
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, fmt.Errorf("router: load descriptors: the plugin's descriptors do not link: %w", err)
	}
	for _, svc := range services {
		d, err := files.FindDescriptorByName(protoreflect.FullName(svc))
		if _, ok := d.(protoreflect.ServiceDescriptor); err != nil || !ok {
			return nil, fmt.Errorf("router: load descriptors of %s: %w (the name is not a service)", svc, ErrServiceNotServed)
		}
	}
	return files, nil
}

// missingDependencies returns the sorted names of files imported by protos
// but not in it.
func missingDependencies(protos map[string]*descriptorpb.FileDescriptorProto) []string {
	var missing []string
	for _, fdp := range protos {
		for _, dep := range fdp.GetDependency() {
			if _, ok := protos[dep]; !ok && !slices.Contains(missing, dep) {
				missing = append(missing, dep)
			}
		}
	}
	slices.Sort(missing)
	return missing
}
