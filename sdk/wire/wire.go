// Package wire holds what the plughost agent and the SDK must agree on to
// speak to each other through go-plugin: the handshake, the API versions and
// the gRPC limits. Plugin authors do not need it; sdk.Serve uses it for them.
package wire

import (
	"context"
	"errors"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// PluginKey is the single entry of every plugin set plughost negotiates.
const PluginKey = "plughost"

// APIVersion is the newest plughost plugin API version this build speaks.
const APIVersion = 1

// SupportedAPIVersions are all plugin API versions this build speaks, oldest
// first. A bundle's manifest must name at least one of them.
var SupportedAPIVersions = []int{1}

// MaxMessageBytes is the gRPC message limit on both ends of the plugin
// connection, well above the store's largest value.
const MaxMessageBytes = 64 << 20

// Handshake is the go-plugin handshake. The magic cookie keeps plughost from
// starting executables that are not plughost plugins, and tells a plugin
// binary run by hand that it needs a host.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  APIVersion,
	MagicCookieKey:   "PLUGHOST_PLUGIN_COOKIE",
	MagicCookieValue: "6c1f3e0e-plughost-plugin-b2c9",
}

// ServerFunc registers a plugin's services on the go-plugin gRPC server.
type ServerFunc func(broker *plugin.GRPCBroker, s *grpc.Server) error

// ClientFunc wraps the host's connection to a plugin.
type ClientFunc func(ctx context.Context, broker *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error)

// GRPCPlugin is the go-plugin glue for one side of the connection: the SDK
// sets OnServe, the host sets OnConnect.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	OnServe   ServerFunc
	OnConnect ClientFunc
}

var _ plugin.GRPCPlugin = (*GRPCPlugin)(nil)

// GRPCServer implements plugin.GRPCPlugin.
func (p *GRPCPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	if p.OnServe == nil {
		return errors.New("wire: plugin has no server side")
	}
	return p.OnServe(broker, s)
}

// GRPCClient implements plugin.GRPCPlugin.
func (p *GRPCPlugin) GRPCClient(ctx context.Context, broker *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	if p.OnConnect == nil {
		return nil, errors.New("wire: plugin has no client side")
	}
	return p.OnConnect(ctx, broker, conn)
}

// PluginSets returns the versioned plugin sets for go-plugin, every supported
// API version mapped to p.
func PluginSets(p *GRPCPlugin) map[int]plugin.PluginSet {
	sets := make(map[int]plugin.PluginSet, len(SupportedAPIVersions))
	for _, v := range SupportedAPIVersions {
		sets[v] = plugin.PluginSet{PluginKey: p}
	}
	return sets
}

// Flow-control windows of the plugin's server. Setting them makes flow
// control static, which turns off gRPC's BDP estimator: with dynamic
// windows the server pings its peer once per round trip in which it
// received data, so a lone caller's every request cost a PING and its
// acknowledgement on top. The plugin's peer is the agent on the same
// machine, where the bandwidth-delay product is tiny; the sizes are the
// agent router's own.
const (
	ServerStreamWindowBytes = 1 << 20
	ServerConnWindowBytes   = 16 << 20
)

// A plugin's data socket (pluginv1.DescribeResponse.data_socket) is
// DataSocketName in a private directory whose name begins with
// DataDirPrefix, under the plugin's PLUGIN_UNIX_SOCKET_DIR or the system's
// temporary directory.
const (
	DataDirPrefix  = "plughost-data-"
	DataSocketName = "grpc.sock"
)

// ServerOptions are the gRPC options of the plugin's server.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.StaticStreamWindowSize(ServerStreamWindowBytes),
		grpc.StaticConnWindowSize(ServerConnWindowBytes),
	}
}

// DialOptions are the gRPC options of the host's connection to a plugin and
// of the plugin's broker connection to the host.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageBytes),
			grpc.MaxCallSendMsgSize(MaxMessageBytes),
		),
	}
}
