// Package launch starts one plugin executable as a go-plugin process, checks
// who it says it is, and hands back the connection the agent routes to.
package launch

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/sdk/wire"
)

// Errors a launch can end with. Each is wrapped with the plugin's name,
// version and what the agent saw.
var (
	// ErrNotPlugin means the executable is not a plughost plugin: it spoke
	// something other than plughost's go-plugin handshake, or exited without
	// a word.
	ErrNotPlugin = errors.New("not a plughost plugin")
	// ErrStartTimeout means the plugin did not complete the handshake in time.
	ErrStartTimeout = errors.New("start timeout")
	// ErrExited means the plugin process exited or was killed before it
	// completed the handshake.
	ErrExited = errors.New("died during start")
	// ErrChecksum means the executable on disk does not match its digest.
	ErrChecksum = errors.New("executable checksum mismatch")
	// ErrIdentity means the plugin describes itself differently from its
	// manifest.
	ErrIdentity = errors.New("plugin identity mismatch")
	// ErrAPIVersion means plugin and agent share no plugin API version.
	ErrAPIVersion = errors.New("no common plugin API version")
)

// Spec says what to launch.
type Spec struct {
	// Plugin and Version are what the manifest says; the plugin must describe
	// itself the same. Empty Plugin skips the check (bundle build learns
	// both from the plugin).
	Plugin     string
	Version    string
	InstanceID string
	// Executable is the absolute path of the plugin binary.
	Executable string
	// SHA256 is the hex digest the binary must have (from the manifest).
	SHA256 string
	// StartTimeout bounds the go-plugin handshake.
	StartTimeout time.Duration
	// Logger receives the plugin's stderr, re-logged under plugin= version=.
	Logger hclog.Logger
	// Place, when set, starts the process: it must call start exactly once
	// and may prepare cmd first (resource governance places the process in
	// its cgroup this way).
	Place func(cmd *exec.Cmd, start func() error) error
	// Dir is the working directory of the plugin process.
	Dir string
	// DialOptions are added to the host's gRPC connection to the plugin.
	DialOptions []grpc.DialOption
	// Sandbox, when set, starts the plugin sandboxed (see host/sandbox):
	// the executable is opened, checked against SHA256 and executed from
	// that same descriptor, so what runs is what was checked, and Dir is
	// the sandbox's working dir rather than Spec.Dir.
	Sandbox Sandbox
	// SocketDir, when set, is where the plugin's unix sockets go: go-plugin's
	// own, the broker's and the SDK's data socket, in a directory of the
	// instance's own that go-plugin removes when the plugin ends. The agent
	// gives a directory of its own, so that what a killed plugin leaves is
	// the agent's to clean and no one else's; empty is the system's temp
	// dir.
	SocketDir string
	// StoreMaxMessageBytes, when set, bounds the request messages the
	// plugin's store connection takes (store.Store.MaxRequestBytes);
	// otherwise they are bounded by sdk/wire's limit. (Hook of the limits
	// area.)
	StoreMaxMessageBytes int
}

// Sandbox is how a sandboxed plugin is started (host/sandbox.Process).
type Sandbox interface {
	// Command returns the command that runs exe, an executable opened
	// and checked by the caller, sandboxed.
	Command(exe *os.File) *exec.Cmd
	// Own gives dir, made by the caller for the process, to the
	// process's user.
	Own(dir string) error
}

// Instance is a running plugin process.
type Instance struct {
	Spec        Spec
	Conn        *grpc.ClientConn
	Lifecycle   pluginv1.PluginServiceClient
	Description *pluginv1.DescribeResponse
	Pid         int
	Started     time.Time

	client *plugin.Client
	broker *plugin.GRPCBroker
	raw    *rawDialer

	dataMu     sync.Mutex // guards dataSocket, which watchExit reads
	dataSocket string
	sockets    string // the instance's socket dir under Spec.SocketDir; "" without one
	cmd        *exec.Cmd

	exitOnce sync.Once
	exited   chan struct{}
	stopOnce sync.Once
	stopped  chan struct{}
}

// connected is what the host side of the go-plugin glue hands back.
type connected struct {
	broker *plugin.GRPCBroker
	conn   *grpc.ClientConn
}

// Start launches spec's executable, completes the handshake and describes
// the plugin. The returned instance is not configured yet: call Configure.
func Start(ctx context.Context, spec Spec) (*Instance, error) {
	if spec.StartTimeout <= 0 {
		spec.StartTimeout = 10 * time.Second
	}
	if spec.Logger == nil {
		spec.Logger = hclog.NewNullLogger()
	}
	what := fmt.Sprintf("plugin %s %s", spec.Plugin, spec.Version)
	sum, err := hex.DecodeString(spec.SHA256)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("%s: manifest sha256 %q is not a SHA-256 digest: %w", what, spec.SHA256, ErrChecksum)
	}

	var cmd *exec.Cmd
	secure := &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	if spec.Sandbox != nil {
		exe, err := openChecked(what, spec, sum)
		if err != nil {
			return nil, err
		}
		defer exe.Close() // the process has its own copy once started
		cmd, secure = spec.Sandbox.Command(exe), nil
	} else {
		cmd = exec.Command(spec.Executable)
		cmd.Dir = spec.Dir
	}
	// The plugin leads its own process group, so the SDK can take everything
	// it forked down with it, and gets SIGTERM when the agent dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}

	logger := spec.Logger
	stderr := &rawStderr{log: logger}
	var cfg *plugin.ClientConfig
	rawd := &rawDialer{tlsConfig: func() *tls.Config { return cfg.TLSConfig }}
	cfg = &plugin.ClientConfig{
		HandshakeConfig:  wire.Handshake,
		VersionedPlugins: wire.PluginSets(&wire.GRPCPlugin{OnConnect: onConnect}),
		Cmd:              cmd,
		SecureConfig:     secure,
		AutoMTLS:         true,
		SkipHostEnv:      true,
		Managed:          true,
		StartTimeout:     spec.StartTimeout,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		GRPCDialOptions: append(append(wire.DialOptions(), spec.DialOptions...),
			grpc.WithTransportCredentials(rawd)),
		// Multiplexing keeps the store on the plugin's one connection
		// instead of a socket per broker stream.
		GRPCBrokerMultiplex: true,
		Logger:              logger,
		Stderr:              stderr,
	}
	// go-plugin hands a socket dir to plugins it starts with a RunnerFunc
	// only; for a plain command the agent does it itself.
	var sockets string
	if spec.SocketDir != "" {
		if sockets, err = os.MkdirTemp(spec.SocketDir, "plugin-"); err != nil {
			return nil, fmt.Errorf("%s: socket dir: %w", what, err)
		}
		if spec.Sandbox != nil {
			if err := spec.Sandbox.Own(sockets); err != nil {
				_ = os.RemoveAll(sockets)
				return nil, fmt.Errorf("%s: socket dir: %w", what, err)
			}
		}
		cmd.Env = append(cmd.Env, plugin.EnvUnixSocketDir+"="+sockets)
	}
	client := plugin.NewClient(cfg)
	abort := func() {
		client.Kill()
		if sockets != "" {
			_ = os.RemoveAll(sockets)
		}
	}

	start := func() error {
		_, err := client.Start()
		return err
	}
	if spec.Place != nil {
		err = spec.Place(cmd, start)
	} else {
		err = start()
	}
	if err != nil {
		abort()
		return nil, startError(what, spec, cmd, stderr.tail(), err)
	}

	rpc, err := client.Client()
	if err != nil {
		abort()
		return nil, fmt.Errorf("%s: connecting to the plugin: %w", what, err)
	}
	raw, err := rpc.Dispense(wire.PluginKey)
	if err != nil {
		abort()
		return nil, fmt.Errorf("%s: %w: %v", what, ErrNotPlugin, err)
	}
	c := raw.(*connected)
	inst := &Instance{
		Spec:      spec,
		Conn:      c.conn,
		Lifecycle: pluginv1.NewPluginServiceClient(c.conn),
		Started:   time.Now(),
		client:    client,
		broker:    c.broker,
		raw:       rawd,
		cmd:       cmd,
		sockets:   sockets,
		exited:    make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	if cmd.Process != nil {
		inst.Pid = cmd.Process.Pid
	}
	go inst.watchExit()

	if v := client.NegotiatedVersion(); !containsInt(wire.SupportedAPIVersions, v) {
		inst.Kill()
		return nil, fmt.Errorf("%s: negotiated plugin API %d, agent speaks %v: %w", what, v, wire.SupportedAPIVersions, ErrAPIVersion)
	}
	dctx, cancel := context.WithTimeout(ctx, spec.StartTimeout)
	defer cancel()
	desc, err := inst.Lifecycle.Describe(dctx, &pluginv1.DescribeRequest{})
	if err != nil {
		inst.Kill()
		return nil, fmt.Errorf("%s: describe: %w", what, err)
	}
	if spec.Plugin != "" && (desc.GetName() != spec.Plugin || desc.GetVersion() != spec.Version) {
		inst.Kill()
		return nil, fmt.Errorf("%s: the executable says it is %s %s: %w (rebuild the bundle from the right binary)", what, desc.GetName(), desc.GetVersion(), ErrIdentity)
	}
	inst.Description = desc
	inst.dataMu.Lock()
	inst.dataSocket = desc.GetDataSocket()
	inst.dataMu.Unlock()
	return inst, nil
}

func onConnect(_ context.Context, broker *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return &connected{broker: broker, conn: conn}, nil
}

// startError turns go-plugin's start failures into errors an operator can
// act on; said is the tail of what the plugin wrote to stderr.
func startError(what string, spec Spec, cmd *exec.Cmd, said string, err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, plugin.ErrChecksumsDoNotMatch) || strings.Contains(msg, "checksum"):
		return fmt.Errorf("%s: %s does not match the manifest's sha256 %s: %w (re-add the bundle)", what, spec.Executable, spec.SHA256, ErrChecksum)
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		return fmt.Errorf("%s: no handshake within %s: %w (the executable must call sdk.Serve at start)", what, spec.StartTimeout, ErrStartTimeout)
	case cmd.ProcessState != nil || strings.Contains(msg, "exited before we could connect"):
		return exitError(what, cmd.ProcessState, said)
	case strings.Contains(msg, "Incompatible API version") || strings.Contains(msg, "Unsupported plugin protocol"):
		return fmt.Errorf("%s: %v: %w", what, err, ErrAPIVersion)
	case strings.Contains(msg, "Unrecognized remote plugin message"):
		return fmt.Errorf("%s: it printed something other than a go-plugin handshake: %w (%v)", what, ErrNotPlugin, err)
	}
	return fmt.Errorf("%s: start: %w", what, err)
}

// goPluginCookieRefusal is what go-plugin's Serve prints when it does not
// find its own magic cookie: a go-plugin plugin made for another host.
const goPluginCookieRefusal = "This binary is a plugin"

// exitError says how a plugin process that ended before its handshake
// ended (ps nil: unknown), with what it said on stderr. A signal means it
// was killed, which a plughost plugin does not do to itself; an exit with
// something on stderr is a plugin that failed at start; a silent exit, or
// go-plugin's refusal of plughost's cookie, is not a plughost plugin.
func exitError(what string, ps *os.ProcessState, said string) error {
	how := "exited"
	signaled := false
	if ps != nil {
		how = describeExit(ps)
		ws, ok := ps.Sys().(syscall.WaitStatus)
		signaled = ok && ws.Signaled()
	}
	stderr := ""
	if said != "" {
		stderr = fmt.Sprintf("; its stderr ended with %q", said)
	}
	switch {
	case signaled:
		return fmt.Errorf("%s %w: %s before its handshake%s (something outside the plugin killed it: look for an OOM kill or a pids limit in its events and the kernel log)",
			what, ErrExited, how, stderr)
	case strings.Contains(said, goPluginCookieRefusal):
		return fmt.Errorf("%s: %w: it %s, refusing plughost's handshake cookie%s (it is a go-plugin plugin for another host: build it with the plughost SDK)",
			what, ErrNotPlugin, how, stderr)
	case said != "":
		return fmt.Errorf("%s %w: %s before its handshake%s (fix what it reports, then add the bundle again)", what, ErrExited, how, stderr)
	}
	return fmt.Errorf("%s: %w: it %s without a handshake and wrote nothing to stderr (is it built with the plughost SDK? run it by hand to see what it does)",
		what, ErrNotPlugin, how)
}

// describeExit says how a process ended: "exited with status 3",
// "killed by signal killed".
func describeExit(ps interface {
	ExitCode() int
	Sys() any
}) string {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by signal " + ws.Signal().String()
	}
	return fmt.Sprintf("exited with status %d", ps.ExitCode())
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// ServeStore serves srv to the plugin over the go-plugin broker and returns
// the broker id to pass in Configure.
func (i *Instance) ServeStore(srv storev1.StoreServiceServer) uint32 {
	id := i.broker.NextId()
	go i.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		opts = append(opts, wire.ServerOptions()...)
		if n := i.Spec.StoreMaxMessageBytes; n > 0 {
			opts = append(opts, grpc.MaxRecvMsgSize(n))
		}
		s := grpc.NewServer(opts...)
		storev1.RegisterStoreServiceServer(s, srv)
		return s
	})
	return id
}

// Setup serves srv as the plugin's store over the broker and configures the
// plugin with it: what the agent does before routing to an instance.
func (i *Instance) Setup(ctx context.Context, srv storev1.StoreServiceServer, req *pluginv1.ConfigureRequest) error {
	req.StoreBrokerId = i.ServeStore(srv)
	if len(req.GetConfigJson()) == 0 {
		req.ConfigJson = []byte("{}")
	}
	return i.Configure(ctx, req)
}

// Configure hands the plugin its configuration.
func (i *Instance) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) error {
	if _, err := i.Lifecycle.Configure(ctx, req); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("plugin %s %s: configure did not return in time: %w", i.Spec.Plugin, i.Spec.Version, ctx.Err())
		}
		return fmt.Errorf("plugin %s %s: configure: %s", i.Spec.Plugin, i.Spec.Version, i.said(err))
	}
	return nil
}

// said is the message of an error the plugin returned over gRPC, without
// the status wrapping ("rpc error: code = Unknown desc = ") and without the
// names the caller already gives: the SDK's "configure NAME VERSION: " and
// a plugin's own "NAME VERSION: " or "NAME: ".
func (i *Instance) said(err error) string {
	msg := status.Convert(err).Message()
	name, version := i.Spec.Plugin, i.Spec.Version
	for _, p := range []string{"configure " + name + " " + version + ": ", name + " " + version + ": ", name + ": "} {
		if name != "" {
			msg = strings.TrimPrefix(msg, p)
		}
	}
	return msg
}

// SetRole tells the plugin its singleton role and epoch. A plugin whose
// SDK predates the call answers UNIMPLEMENTED: SetRole returns nil for it,
// since the agent stamps that plugin's writes with the epoch itself.
func (i *Instance) SetRole(ctx context.Context, role pluginv1.Role, epoch int64) error {
	_, err := i.Lifecycle.SetRole(ctx, &pluginv1.SetRoleRequest{Role: role, Epoch: epoch})
	if status.Code(err) == codes.Unimplemented {
		return nil
	}
	if err != nil {
		return fmt.Errorf("plugin %s %s: set role %s at epoch %d: %s", i.Spec.Plugin, i.Spec.Version, role, epoch, i.said(err))
	}
	return nil
}

// Ping checks the go-plugin connection itself.
func (i *Instance) Ping() error {
	rpc, err := i.client.Client()
	if err != nil {
		return err
	}
	return rpc.Ping()
}

// DialRaw opens a new connection to the plugin's gRPC server, TLS
// established with ALPN h2, for a caller that speaks HTTP/2 itself (the
// router's frame relay). Each call opens one more connection.
//
// The connection is to the plugin's data socket if it reported one
// (DescribeResponse.data_socket), else a new stream on the go-plugin
// connection's yamux session.
func (i *Instance) DialRaw(ctx context.Context) (net.Conn, error) {
	i.dataMu.Lock()
	path := i.dataSocket
	i.dataMu.Unlock()
	nc, err := i.raw.dial(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("plugin %s %s: %w", i.Spec.Plugin, i.Spec.Version, err)
	}
	return nc, nil
}

// Exited is closed when the plugin process has exited.
func (i *Instance) Exited() <-chan struct{} { return i.exited }

// ExitReason says how the process ended ("exited with status 2", "killed by
// signal killed"); it is only meaningful after Exited is closed.
func (i *Instance) ExitReason() string {
	if ps := i.cmd.ProcessState; ps != nil {
		return describeExit(ps)
	}
	return "exited"
}

// Signaled reports whether the process was killed by sig.
func (i *Instance) Signaled(sig syscall.Signal) bool {
	if ps := i.cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return ws.Signal() == sig
		}
	}
	return false
}

// StoppedOnPurpose reports whether Stop or Kill was called.
func (i *Instance) StoppedOnPurpose() bool {
	select {
	case <-i.stopped:
		return true
	default:
		return false
	}
}

func (i *Instance) watchExit() {
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for range t.C {
		// go-plugin marks the client exited only after cmd.Wait returned,
		// under its lock, so ProcessState is safe to read afterwards.
		if i.client.Exited() {
			i.removeDataSocket()
			i.exitOnce.Do(func() { close(i.exited) })
			return
		}
	}
}

// removeDataSocket removes what a plugin that was killed leaves behind: the
// instance's socket dir, or without one the directory of its data socket
// (only one the SDK names, wire.DataDirPrefix, holding nothing but the
// socket).
func (i *Instance) removeDataSocket() {
	if i.sockets != "" {
		_ = os.RemoveAll(i.sockets)
		return
	}
	i.dataMu.Lock()
	path := i.dataSocket
	i.dataMu.Unlock()
	dir := filepath.Dir(path)
	if path == "" || !strings.HasPrefix(filepath.Base(dir), wire.DataDirPrefix) {
		return
	}
	_ = os.Remove(path)
	_ = os.Remove(dir) // fails, harmlessly, if anything else is in it
}

// Stop asks the plugin to stop, then ends the process: go-plugin asks it to
// exit and kills it after a grace period.
func (i *Instance) Stop(ctx context.Context) {
	i.stopOnce.Do(func() { close(i.stopped) })
	select {
	case <-i.exited:
	default:
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, _ = i.Lifecycle.Stop(sctx, &pluginv1.StopRequest{})
		cancel()
	}
	i.client.Kill()
	<-i.waitExited(5 * time.Second)
}

// Kill ends the process at once.
func (i *Instance) Kill() {
	i.stopOnce.Do(func() { close(i.stopped) })
	if p := i.cmd.Process; p != nil {
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	}
	i.client.Kill()
	<-i.waitExited(5 * time.Second)
}

func (i *Instance) waitExited(d time.Duration) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-i.exited:
		case <-time.After(d):
		}
	}()
	return done
}
