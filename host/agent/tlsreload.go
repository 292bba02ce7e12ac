package agent

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// tlsReloadSettle is how long the TLS files must stay unchanged after a
// change before they are read: a tool that writes the certificate and then
// the key, or renames them into place one by one, is done by then.
const tlsReloadSettle = 500 * time.Millisecond

// ReloadTLS reads the agent's CA, certificate and key files again (area:
// secnet). When they changed and hold a valid certificate for this node
// under the CA, every new TLS handshake (cluster RPC port, -api-tls,
// -http-tls) uses them; connections already open keep theirs. On an error
// the certificate in use stays, and the error says why. The agent calls it
// when the files change; plughost agent calls it on SIGHUP.
func (a *Agent) ReloadTLS() error {
	if a.tls == nil {
		a.log.Info("no TLS files to reload: the agent runs without -ca-file, -cert-file and -key-file")
		return nil
	}
	changed, err := a.tls.Reload()
	if err != nil {
		a.log.Error("TLS files not reloaded; the certificate in use stays", "error", err)
		return err
	}
	leaf := a.tls.Leaf()
	if !changed {
		a.log.Info("TLS files unchanged", "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
		return nil
	}
	a.log.Info("TLS certificates reloaded: new connections use them", "node", a.tls.Node,
		"serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// watchTLS reloads the TLS files (ReloadTLS) whenever one of them changes,
// until ctx ends. It watches their directories, so files replaced by a
// rename (as cert-manager and most tools do) are seen too.
func (a *Agent) watchTLS(ctx context.Context) {
	files := a.tls.Files()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.log.Warn("TLS files are not watched; send SIGHUP after changing them", "error", err)
		return
	}
	defer w.Close()
	names := map[string]bool{}
	for _, f := range []string{files.CA, files.Cert, files.Key} {
		abs, err := filepath.Abs(f)
		if err != nil {
			continue
		}
		names[abs] = true
		if err := w.Add(filepath.Dir(abs)); err != nil && !errors.Is(err, fsnotify.ErrClosed) {
			a.log.Warn("TLS files are not watched; send SIGHUP after changing them", "dir", filepath.Dir(abs), "error", err)
			return
		}
	}
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	for {
		select {
		case <-ctx.Done():
			settle.Stop()
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			// A file of ours, or a symlink swap in its directory (..data
			// in a Kubernetes secret volume).
			if names[ev.Name] || filepath.Base(ev.Name) == "..data" {
				settle.Reset(tlsReloadSettle)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			a.log.Warn("watching the TLS files", "error", err)
		case <-settle.C:
			_ = a.ReloadTLS()
		}
	}
}

// loopbackOnly reports whether addr (host:port) can only be reached from
// this machine.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
