package router

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/plughost/plughost/host/tlsutil"
)

// The node-to-node relay. A call that finds no local instance of its
// plugin goes to a remote instance's node over the cluster RPC port
// (clusterrpc.KindRelay, mutual TLS: Config.DialPeer): the calling node's
// relay opens an HTTP/2 connection to the peer as it does to a local
// instance, and the peer serves it with ServeRelayed, relaying each call
// to its own local instance of the plugin, never onward, so no call can
// loop. The caller's token was checked on the node it reached and does
// not travel; the peer trusts the cluster's certificates (the port's
// mutual TLS) and checks only that the call is for a plugin it runs.

// ServeRelayed serves calls other nodes relay to this node's plugin
// instances, on connections ln accepts (the cluster RPC port's relay
// listener, whose mutual TLS admits the cluster's nodes only). Call it
// after Serve has started. It returns when ln fails or closes.
func (r *Router) ServeRelayed(ln net.Listener) error {
	for {
		nc, err := ln.Accept()
		if err != nil {
			return err
		}
		rl := r.relay.Load()
		if rl == nil {
			_ = nc.Close() // the relay is not serving yet: the peer retries
			continue
		}
		if rl.track(nc, nil) {
			go rl.servePeer(nc)
		}
	}
}

// servePeer serves one connection from another node's relay.
func (rl *relay) servePeer(nc net.Conn) {
	what := "node " + nc.RemoteAddr().String()
	if tc, ok := nc.(*tls.Conn); ok {
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			if node, ok := tlsutil.NodeOf(certs[0]); ok {
				what = "node " + node + " (" + nc.RemoteAddr().String() + ")"
			}
		}
	}
	c := newH2conn(rl, callerSide, nc, bufio.NewReaderSize(nc, readBufferBytes), what)
	c.fromPeer = true
	c.mu.Lock()
	_ = c.wfr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrameBytes},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: maxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: relayStreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListBytes})
	_ = c.wfr.WriteWindowUpdate(0, relayConnWindow-initialWindow)
	c.recvWin = relayConnWindow
	c.mu.Unlock()

	_ = nc.SetReadDeadline(time.Now().Add(rl.r.cfg.FirstCallTimeout))
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c.br, preface); err != nil || string(preface) != http2.ClientPreface {
		rl.mu.Lock()
		delete(rl.accepted, nc)
		rl.mu.Unlock()
		_ = nc.Close()
		return
	}
	_ = nc.SetReadDeadline(time.Time{})
	if !rl.track(nc, c) {
		return
	}
	go c.writeLoop()
	c.kick()
	c.readLoop()
}

// peerTarget returns the plugin a call relayed from another node goes to:
// one of this node's plugins' services, or the reflection of the plugin
// PluginHeader names (how a node without an instance learns a plugin's
// descriptors). Anything else is refused: the agent's own services are
// not reachable this way.
func (rl *relay) peerTarget(service string, fields []hpack.HeaderField) (*plugin, error) {
	if strings.HasPrefix(service, "grpc.reflection.") {
		name := ""
		for _, f := range fields {
			if f.Name == PluginHeader {
				name = f.Value
			}
		}
		rl.r.mu.Lock()
		p := rl.r.plugins[name]
		rl.r.mu.Unlock()
		if p != nil && len(p.services) > 0 {
			return p, nil
		}
		return nil, withInfo(codes.Unavailable, ReasonNoLocalInstance,
			"this node runs no plugin "+strconv.Quote(name)+" whose reflection a peer could ask for",
			map[string]string{"plugin": name, "node": rl.r.cfg.Node})
	}
	if p := (*rl.r.routes.Load())[service]; p != nil && len(p.services) > 0 && !rl.ownServices[service] {
		return p, nil
	}
	return nil, withInfo(codes.Unavailable, ReasonNotRelayable,
		"service "+service+" is not served by a plugin on this node; only calls to this node's plugins are relayed here",
		map[string]string{"service": service, "node": rl.r.cfg.Node})
}
