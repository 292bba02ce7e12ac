package router

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	rv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	rv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// RegisterReflection registers gRPC server reflection, v1 and v1alpha, on s,
// the agent's API server. It lists s's own services and the services of
// every plugin that has a backend and the caller may see (see
// Config.MayDescribe), and resolves descriptors from the agent's
// linked-in files (protoregistry.GlobalFiles) and those plugins' Files,
// so grpcurl and `plughost call` work against the agent as against the
// plugin itself.
func (r *Router) RegisterReflection(s *grpc.Server) {
	rv1.RegisterServerReflectionServer(s, reflectionServerV1{r: r, s: s})
	rv1alpha.RegisterServerReflectionServer(s, reflectionServerV1Alpha{r: r, s: s})
}

// reflectionOptions are the options of a reflection stream whose caller
// may see the plugins visible accepts.
func (r *Router) reflectionOptions(s *grpc.Server, visible func(plugin string) bool) reflection.ServerOptions {
	return reflection.ServerOptions{
		Services:           serviceLister{r: r, s: s, visible: visible},
		DescriptorResolver: descriptorResolver{r: r, visible: visible},
		ExtensionResolver:  extensionResolver{r: r, visible: visible},
	}
}

// visibleTo returns which plugins the caller of a stream with ctx may see.
func (r *Router) visibleTo(ctx context.Context) func(plugin string) bool {
	if r.cfg.MayDescribe == nil {
		return func(string) bool { return true }
	}
	return func(plugin string) bool { return r.cfg.MayDescribe(ctx, plugin) }
}

// unserved is the status for a reflection lookup of symbol that failed
// because symbol belongs to a declared plugin that has never had a
// backend, so its descriptors are unknown: Unavailable with the plugin's
// state, as a call would get. It is nil for any other symbol.
func (r *Router) unserved(symbol string, visible func(string) bool) *status.Status {
	if symbol == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.plugins {
		if p.backend.Load() != nil || p.files.Load() != nil || p.hasRemotes() || !visible(p.name) {
			continue
		}
		for _, svc := range p.services {
			if symbol == svc || strings.HasPrefix(symbol, svc+".") {
				return status.Convert(errNoInstance(p.name, p.stateText()))
			}
		}
	}
	return nil
}

// reflectionServerV1 serves grpc-go's reflection v1, made for each stream
// with what its caller may see, and whose "not found" for a symbol of a
// plugin with no instance becomes the plugin's Unavailable.
type reflectionServerV1 struct {
	rv1.UnimplementedServerReflectionServer
	r *Router
	s *grpc.Server
}

func (x reflectionServerV1) ServerReflectionInfo(stream rv1.ServerReflection_ServerReflectionInfoServer) error {
	visible := x.r.visibleTo(stream.Context())
	srv := reflection.NewServerV1(x.r.reflectionOptions(x.s, visible))
	return srv.ServerReflectionInfo(streamV1{BidiStreamingServer: stream, r: x.r, visible: visible})
}

type streamV1 struct {
	grpc.BidiStreamingServer[rv1.ServerReflectionRequest, rv1.ServerReflectionResponse]
	r       *Router
	visible func(string) bool
}

func (s streamV1) Send(resp *rv1.ServerReflectionResponse) error {
	if er := resp.GetErrorResponse(); er != nil && er.GetErrorCode() == int32(codes.NotFound) {
		if st := s.r.unserved(resp.GetOriginalRequest().GetFileContainingSymbol(), s.visible); st != nil {
			er.ErrorCode, er.ErrorMessage = int32(st.Code()), st.Message()
		}
	}
	return s.BidiStreamingServer.Send(resp)
}

// reflectionServerV1Alpha is reflectionServerV1 for v1alpha.
type reflectionServerV1Alpha struct {
	rv1alpha.UnimplementedServerReflectionServer
	r *Router
	s *grpc.Server
}

func (x reflectionServerV1Alpha) ServerReflectionInfo(stream rv1alpha.ServerReflection_ServerReflectionInfoServer) error {
	visible := x.r.visibleTo(stream.Context())
	srv := reflection.NewServer(x.r.reflectionOptions(x.s, visible))
	return srv.ServerReflectionInfo(streamV1Alpha{BidiStreamingServer: stream, r: x.r, visible: visible})
}

type streamV1Alpha struct {
	grpc.BidiStreamingServer[rv1alpha.ServerReflectionRequest, rv1alpha.ServerReflectionResponse]
	r       *Router
	visible func(string) bool
}

func (s streamV1Alpha) Send(resp *rv1alpha.ServerReflectionResponse) error {
	if er := resp.GetErrorResponse(); er != nil && er.GetErrorCode() == int32(codes.NotFound) {
		if st := s.r.unserved(resp.GetOriginalRequest().GetFileContainingSymbol(), s.visible); st != nil {
			er.ErrorCode, er.ErrorMessage = int32(st.Code()), st.Message()
		}
	}
	return s.BidiStreamingServer.Send(resp)
}

// servedPlugin is a declared plugin that has, or had, a backend, as
// reflection sees it.
type servedPlugin struct {
	name     string
	services []string
	files    *protoregistry.Files // nil when no backend had any
}

// served returns the declared plugins that have a backend, or had one: a
// plugin between instances (restarting, backing off, failed) keeps its
// services in reflection, so that a call is made and answered with why it
// cannot be served.
func (r *Router) served(visible func(string) bool) []servedPlugin {
	// The route table has every plugin's services, those only other
	// nodes' instances serve included.
	bySvc := make(map[*plugin][]string)
	for svc, p := range *r.routes.Load() {
		bySvc[p] = append(bySvc[p], svc)
	}
	var out []servedPlugin
	for p, svcs := range bySvc {
		if !visible(p.name) {
			continue
		}
		files := p.files.Load()
		if b := p.backend.Load(); b != nil && b.Files != nil {
			files = b.Files
		} else if b == nil && files == nil && !p.hasRemotes() {
			continue
		}
		slices.Sort(svcs)
		out = append(out, servedPlugin{name: p.name, services: svcs, files: files})
	}
	slices.SortFunc(out, func(a, b servedPlugin) int { return strings.Compare(a.name, b.name) })
	return out
}

// owns reports whether name is one of sp's services or inside one.
func (sp servedPlugin) owns(name protoreflect.FullName) bool {
	for _, s := range sp.services {
		if string(name) == s || strings.HasPrefix(string(name), s+".") {
			return true
		}
	}
	return false
}

// serviceLister implements reflection.ServiceInfoProvider.
type serviceLister struct {
	r       *Router
	s       *grpc.Server
	visible func(string) bool
}

func (l serviceLister) GetServiceInfo() map[string]grpc.ServiceInfo {
	infos := l.s.GetServiceInfo()
	for _, sp := range l.r.served(l.visible) {
		for _, svc := range sp.services {
			if _, ok := infos[svc]; ok {
				continue // the agent's own service wins, as it does for calls
			}
			info := grpc.ServiceInfo{Metadata: sp.name}
			if sp.files != nil {
				if d, err := sp.files.FindDescriptorByName(protoreflect.FullName(svc)); err == nil {
					if sd, ok := d.(protoreflect.ServiceDescriptor); ok {
						ms := sd.Methods()
						for i := 0; i < ms.Len(); i++ {
							md := ms.Get(i)
							info.Methods = append(info.Methods, grpc.MethodInfo{
								Name:           string(md.Name()),
								IsClientStream: md.IsStreamingClient(),
								IsServerStream: md.IsStreamingServer(),
							})
						}
					}
				}
			}
			infos[svc] = info
		}
	}
	return infos
}

// descriptorResolver implements protodesc.Resolver over the agent's files
// and the backends' Files.
type descriptorResolver struct {
	r       *Router
	visible func(string) bool
}

func (d descriptorResolver) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if fd, err := protoregistry.GlobalFiles.FindFileByPath(path); err == nil {
		return fd, nil
	}
	for _, sp := range d.r.served(d.visible) {
		if sp.files == nil {
			continue
		}
		if fd, err := sp.files.FindFileByPath(path); err == nil {
			return fd, nil
		}
	}
	return nil, protoregistry.NotFound
}

func (d descriptorResolver) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	served := d.r.served(d.visible)
	// A plugin's own services resolve from the plugin's descriptors first:
	// the agent may link an older copy of the same file.
	for _, sp := range served {
		if sp.files != nil && sp.owns(name) {
			if desc, err := sp.files.FindDescriptorByName(name); err == nil {
				return desc, nil
			}
		}
	}
	if desc, err := protoregistry.GlobalFiles.FindDescriptorByName(name); err == nil {
		return desc, nil
	}
	for _, sp := range served {
		if sp.files == nil {
			continue
		}
		if desc, err := sp.files.FindDescriptorByName(name); err == nil {
			return desc, nil
		}
	}
	// A plugin that runs only on other nodes whose descriptors this node
	// has not loaded yet (or failed to): load them now, from one of them.
	for _, sp := range served {
		if sp.files == nil && sp.owns(name) {
			if files := d.r.remoteFiles(sp.name); files != nil {
				if desc, err := files.FindDescriptorByName(name); err == nil {
					return desc, nil
				}
			}
		}
	}
	return nil, protoregistry.NotFound
}

// extensionResolver implements reflection.ExtensionResolver over
// protoregistry.GlobalTypes and the extensions declared in the backends'
// Files.
type extensionResolver struct {
	r       *Router
	visible func(string) bool
}

func (x extensionResolver) FindExtensionByName(field protoreflect.FullName) (protoreflect.ExtensionType, error) {
	if xt, err := protoregistry.GlobalTypes.FindExtensionByName(field); err == nil {
		return xt, nil
	}
	for _, sp := range x.r.served(x.visible) {
		if sp.files == nil {
			continue
		}
		if desc, err := sp.files.FindDescriptorByName(field); err == nil {
			if xd, ok := desc.(protoreflect.ExtensionDescriptor); ok {
				return dynamicpb.NewExtensionType(xd), nil
			}
		}
	}
	return nil, protoregistry.NotFound
}

func (x extensionResolver) FindExtensionByNumber(message protoreflect.FullName, field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	if xt, err := protoregistry.GlobalTypes.FindExtensionByNumber(message, field); err == nil {
		return xt, nil
	}
	var found protoreflect.ExtensionType
	x.rangeBackendExtensions(message, func(xd protoreflect.ExtensionDescriptor) bool {
		if xd.Number() == field {
			found = dynamicpb.NewExtensionType(xd)
			return false
		}
		return true
	})
	if found == nil {
		return nil, protoregistry.NotFound
	}
	return found, nil
}

func (x extensionResolver) RangeExtensionsByMessage(message protoreflect.FullName, f func(protoreflect.ExtensionType) bool) {
	seen := make(map[protoreflect.FullName]bool)
	more := true
	protoregistry.GlobalTypes.RangeExtensionsByMessage(message, func(xt protoreflect.ExtensionType) bool {
		seen[xt.TypeDescriptor().FullName()] = true
		more = f(xt)
		return more
	})
	if !more {
		return
	}
	x.rangeBackendExtensions(message, func(xd protoreflect.ExtensionDescriptor) bool {
		if seen[xd.FullName()] {
			return true
		}
		seen[xd.FullName()] = true
		return f(dynamicpb.NewExtensionType(xd))
	})
}

// rangeBackendExtensions calls f for each extension of message declared in
// the backends' Files, until f returns false.
func (x extensionResolver) rangeBackendExtensions(message protoreflect.FullName, f func(protoreflect.ExtensionDescriptor) bool) {
	more := true
	visit := func(xds protoreflect.ExtensionDescriptors) {
		for i := 0; more && i < xds.Len(); i++ {
			if xd := xds.Get(i); xd.ContainingMessage().FullName() == message {
				more = f(xd)
			}
		}
	}
	var walk func(protoreflect.MessageDescriptors)
	walk = func(mds protoreflect.MessageDescriptors) {
		for i := 0; more && i < mds.Len(); i++ {
			visit(mds.Get(i).Extensions())
			walk(mds.Get(i).Messages())
		}
	}
	for _, sp := range x.r.served(x.visible) {
		if sp.files == nil {
			continue
		}
		sp.files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
			visit(fd.Extensions())
			walk(fd.Messages())
			return more
		})
		if !more {
			return
		}
	}
}
