package test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/clusterrpc"
	"github.com/plughost/plughost/host/install"
	"github.com/plughost/plughost/host/tlsutil"
	"github.com/plughost/plughost/internal/testenv"
	clusterv1 "github.com/plughost/plughost/proto/plughost/cluster/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// joinLater starts one more agent that joins agents' cluster.
func joinLater(t *testing.T, agents []*ClusterAgent, name string) *ClusterAgent {
	t.Helper()
	first := agents[0]
	a := &ClusterAgent{
		Agent: &Agent{t: t, DataDir: t.TempDir(), API: testenv.FreeAddr(t), HTTP: testenv.FreeAddr(t), RPC: testenv.FreeAddr(t), Serf: testenv.FreeAddr(t),
			Node: name, acl: first.acl},
		Expect: first.Expect, Join: []string{first.Serf}, Encrypt: first.Encrypt,
	}
	t.Cleanup(func() {
		if a.cmd != nil && a.cmd.Process != nil {
			_ = a.cmd.Process.Signal(syscall.SIGCONT)
		}
		a.Stop()
		removeClusterCgroup(a)
		if t.Failed() {
			t.Logf("agent %s log:\n%s", a.Node, a.Log())
		}
	})
	a.Start()
	return a
}

// heldBy reads bundles/<node> through a.
func heldBy(t *testing.T, a *ClusterAgent, node string) ([]string, error) {
	t.Helper()
	out, errOut, code := a.CLI("store", "get", "-ns", "_sys", "bundles/"+node)
	if code != 0 {
		return nil, fmt.Errorf("store get bundles/%s: %s", node, errOut)
	}
	var h struct {
		Node    string   `json:"node"`
		Bundles []string `json:"bundles"`
	}
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		return nil, fmt.Errorf("bundles/%s = %q: %v", node, out, err)
	}
	return h.Bundles, nil
}

// installedExecutable is the path of name's version's executable in a's
// plugins dir.
func installedExecutable(t *testing.T, a *ClusterAgent, name, version string) string {
	t.Helper()
	b, err := bundle.ReadInstalled(filepath.Join(a.DataDir, "plugins", name, version))
	if err != nil {
		t.Fatal(err)
	}
	return b.Executable
}

// TestBundleAddOnOneNodeReachesTheCluster: a bundle added on one node of
// three runs on all three, fetched over the cluster RPC port; a node that
// joins later fetches it and serves it; a node that lost its copy fetches
// it again, refusing the corrupt copy of the first peer it asks.
func TestBundleAddOnOneNodeReachesTheCluster(t *testing.T) {
	agents := NewCluster(t, 3)
	if out, errOut, code := agents[0].CLI("bundle", "add", bundlePath("counter", "1.0.0")); code != 0 {
		t.Fatalf("bundle add on n1: %s %s", out, errOut)
	}
	for _, a := range agents {
		a.WaitRunning("counter", "1.0.0")
	}
	catalogSHA, err := bundle.Digest(installedExecutable(t, agents[0], "counter", "1.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range agents[1:] {
		if got, err := bundle.Digest(installedExecutable(t, a, "counter", "1.0.0")); err != nil || got != catalogSHA {
			t.Fatalf("%s installed sha256 %s (%v), want %s", a.Node, got, err, catalogSHA)
		}
		if !strings.Contains(a.Log(), "bundle fetched from a peer and installed") {
			t.Fatalf("%s does not log a fetch", a.Node)
		}
	}
	for _, a := range agents {
		testenv.WaitFor(t, 20*time.Second, "bundles/"+a.Node+" to list counter@1.0.0", func() error {
			held, err := heldBy(t, agents[0], a.Node)
			if err != nil {
				return err
			}
			if !slices.Contains(held, "counter@1.0.0") {
				return fmt.Errorf("bundles/%s = %v", a.Node, held)
			}
			return nil
		})
	}

	checkBundleServiceNeedsAServer(t, agents[2], agents[1])

	// A node that joins later fetches the bundle and serves it.
	started := time.Now()
	n4 := joinLater(t, agents, "n4")
	joined := time.Now()
	var sawFetch string
	testenv.WaitFor(t, 30*time.Second, "counter 1.0.0 to serve on n4", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := n4.Operator().GetPluginStatus(ctx, &operatorv1.GetPluginStatusRequest{Name: "counter"})
		if err != nil {
			return err
		}
		p := resp.GetPlugin()
		if strings.HasPrefix(p.GetLastError(), "fetching counter 1.0.0 from ") {
			sawFetch = p.GetLastError()
		}
		if p.GetRunningVersion() != "1.0.0" || p.GetState() != operatorv1.InstanceState_INSTANCE_STATE_RUNNING {
			return fmt.Errorf("running %q state %s (last error %q)", p.GetRunningVersion(), p.GetState(), p.GetLastError())
		}
		return nil
	})
	t.Logf("FIGURE n4 serves counter 1.0.0 %s after its API answered with a leader (joined), %s after its process started; progress seen: %q",
		time.Since(joined).Round(time.Millisecond), time.Since(started).Round(time.Millisecond), sawFetch)

	testenv.WaitFor(t, 20*time.Second, "bundles/n4 to list counter@1.0.0", func() error {
		held, err := heldBy(t, agents[0], "n4")
		if err == nil && !slices.Contains(held, "counter@1.0.0") {
			err = fmt.Errorf("bundles/n4 = %v", held)
		}
		return err
	})

	// n3 loses its copy; the first peer it asks serves a corrupt one.
	n3 := agents[2]
	n3.Stop()
	if err := os.RemoveAll(filepath.Join(n3.DataDir, "plugins", "counter")); err != nil {
		t.Fatal(err)
	}
	first := install.PeerOrder(n3.Node, []string{"n1", "n2", "n4"})[0]
	var bad *ClusterAgent
	for _, a := range append(slices.Clone(agents), n4) {
		if a.Node == first {
			bad = a
		}
	}
	exe := installedExecutable(t, bad, "counter", "1.0.0")
	// Root rewrites the installed file (the running instance keeps the
	// old one open: the new file takes its name).
	if err := os.WriteFile(exe+".new", []byte("#!/bin/sh\necho altered\n"), 0o500); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(exe+".new", exe); err != nil {
		t.Fatal(err)
	}
	badSHA, _ := bundle.Digest(exe)
	n3.Start()
	n3.WaitRunning("counter", "1.0.0")
	if got, err := bundle.Digest(installedExecutable(t, n3, "counter", "1.0.0")); err != nil || got != catalogSHA {
		t.Fatalf("n3 installed sha256 %s (%v), want %s", got, err, catalogSHA)
	}
	testenv.WaitFor(t, 10*time.Second, "a fetch-refused event naming "+first, func() error {
		evs, err := pluginEvents(t, n3.Agent, "counter")
		if err != nil {
			return err
		}
		for _, i := range ofType(evs, "fetch-refused") {
			r := evs[i].Reason
			if strings.Contains(r, "node "+first+" served counter 1.0.0") && strings.Contains(r, badSHA) && strings.Contains(r, catalogSHA) {
				t.Logf("refusal: %s", r)
				return nil
			}
		}
		return fmt.Errorf("no fetch-refused event naming %s, %s and %s in %+v", first, badSHA, catalogSHA, evs)
	})
}

// TestOldBundleVersionsAreRemoved: with bundle_keep 1, the version a swap
// replaced leaves the disk; its catalog record stays.
func TestOldBundleVersionsAreRemoved(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{Config: `{"bundle_keep": 1}`})
	for _, v := range []string{"1.0.0", "1.1.0"} {
		if out, errOut, code := a.CLI("bundle", "add", bundlePath("echo", v)); code != 0 {
			t.Fatalf("bundle add echo %s: %s %s", v, out, errOut)
		}
		a.WaitRunning("echo", v)
	}
	old := filepath.Join(a.DataDir, "plugins", "echo", "1.0.0")
	testenv.WaitFor(t, 20*time.Second, "echo 1.0.0 to leave the disk", func() error {
		if _, err := os.Stat(old); err == nil {
			return fmt.Errorf("%s is still there", old)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(a.DataDir, "plugins", "echo", "1.1.0")); err != nil {
		t.Fatalf("the running version left the disk: %v", err)
	}
	out, errOut, code := a.CLI("plugin", "versions", "echo")
	if code != 0 || !strings.Contains(out, "1.0.0") || !strings.Contains(out, "1.1.0") {
		t.Fatalf("plugin versions echo: both versions should stay registered:\n%s%s", out, errOut)
	}
	testenv.WaitFor(t, 10*time.Second, "a bundle-removed event for echo 1.0.0", func() error {
		evs, err := pluginEvents(t, a, "echo")
		if err != nil {
			return err
		}
		if idx := ofType(evs, "bundle-removed"); len(idx) != 1 || evs[idx[0]].Version != "1.0.0" {
			return fmt.Errorf("bundle-removed events %v in %+v, want one for 1.0.0", idx, evs)
		}
		return nil
	})
	testenv.WaitFor(t, 10*time.Second, "bundles/n1 to list only echo 1.1.0", func() error {
		out, errOut, code := a.CLI("store", "get", "-ns", "_sys", "bundles/n1")
		if code != 0 {
			return fmt.Errorf("%s", errOut)
		}
		if !strings.Contains(out, `"echo@1.1.0"`) || strings.Contains(out, "echo@1.0.0") {
			return fmt.Errorf("bundles/n1 = %s", out)
		}
		return nil
	})
}

// checkBundleServiceNeedsAServer calls target's BundleService on its
// cluster RPC port with holder's server certificate, which the port's
// mutual TLS requires: without a token the call is an agent's, known by
// that certificate, and streams the archive; a token that is no token is
// refused, and a name that is a path is refused.
func checkBundleServiceNeedsAServer(t *testing.T, holder, target *ClusterAgent) {
	t.Helper()
	f := nodeTLSArgs(t, holder.Node)
	tc, err := tlsutil.Load(tlsutil.Files{CA: f[1], Cert: f[3], Key: f[5]})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///"+target.RPC, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			raw, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			c := tls.Client(raw, tc.Outgoing(target.Node))
			if err := c.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			if _, err := c.Write([]byte{byte(clusterrpc.KindGRPC)}); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := clusterv1.NewBundleServiceClient(conn)
	first := func(ctx context.Context, name string) (*clusterv1.FetchResponse, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		stream, err := client.Fetch(ctx, &clusterv1.FetchRequest{Name: name, Version: "1.0.0"})
		if err != nil {
			return nil, err
		}
		return stream.Recv()
	}
	bogus := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer 0b7e8a2c-3f41-4d6e-9c12-5a8b7d6e4f30")
	if _, err := first(bogus, "counter"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("BundleService.Fetch with a token that does not exist: %v, want UNAUTHENTICATED", err)
	}
	msg, err := first(context.Background(), "counter")
	if err != nil || msg.GetSize() <= 0 || len(msg.GetData()) == 0 {
		t.Fatalf("BundleService.Fetch as an agent: %v (%d bytes of %d)", err, len(msg.GetData()), msg.GetSize())
	}
	if _, err := first(context.Background(), "../plugins"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("BundleService.Fetch of a path: %v, want INVALID_ARGUMENT", err)
	}
}
