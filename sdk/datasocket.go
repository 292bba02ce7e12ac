package sdk

import (
	"github.com/plughost/plughost/sdk/wire"
	"net"
	"os"
	"path/filepath"
)

// dataSocket is the unix socket on which the plugin's gRPC server also
// serves the agent's router (see pluginv1.DescribeResponse.data_socket):
// the go-plugin connection is a yamux session, whose goroutine handoffs
// cost more than a routed call's own work. The server is the one go-plugin
// made, so connections to the socket get the same mutual TLS as go-plugin's
// own (AutoMTLS): only the agent that started the plugin can use it. The
// socket's directory is private to the plugin's user.
type dataSocket struct {
	dir string
	ln  net.Listener
}

// listenData opens the data socket in a new private directory under dir
// (the system's temporary directory if empty).
func listenData(dir string) (*dataSocket, error) {
	d, err := os.MkdirTemp(dir, wire.DataDirPrefix)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", filepath.Join(d, wire.DataSocketName))
	if err != nil {
		_ = os.RemoveAll(d)
		return nil, err
	}
	return &dataSocket{dir: d, ln: ln}, nil
}

func (s *dataSocket) path() string {
	if s == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// close closes the socket and removes its directory.
func (s *dataSocket) close() {
	if s == nil {
		return
	}
	_ = s.ln.Close()
	_ = os.RemoveAll(s.dir)
}
