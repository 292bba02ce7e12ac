package test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	rv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/internal/testenv"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// openStream is a stream a test keeps open, read by recv.
type openStream struct {
	name string
	recv func() error
}

// openRevokable opens, with secret, a store watch and two echo streams
// (one relayed, one proxied by the agent's server: a connection whose
// first call was the agent's reflection) and reads each one's first
// message.
func openRevokable(t *testing.T, a *Agent, ctx context.Context, secret string) []openStream {
	t.Helper()
	conn := func() *grpc.ClientConn {
		cc, err := grpc.NewClient(a.API, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	mgmt := withToken(ctx, a.Token())
	ctx = withToken(ctx, secret)
	var out []openStream

	st := storev1.NewStoreServiceClient(conn())
	put, err := st.Put(mgmt, &storev1.PutRequest{Namespace: "app", Key: []byte("k"), Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Watch(ctx, &storev1.WatchRequest{Namespace: "app", StartRevision: put.GetRevision()})
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, openStream{"store watch", func() error { _, err := w.Recv(); return err }})

	echo := func(name string, cc *grpc.ClientConn) {
		s, err := echov1.NewEchoServiceClient(cc).EchoStream(ctx, &echov1.EchoStreamRequest{Message: "tick", Count: 10000, IntervalMs: 20})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, openStream{name, func() error { _, err := s.Recv(); return err }})
	}
	echo("relayed echo stream", conn())

	proxied := conn()
	rs, err := rv1.NewServerReflectionClient(proxied).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&rv1.ServerReflectionRequest{MessageRequest: &rv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Recv(); err != nil {
		t.Fatal(err)
	}
	_ = rs.CloseSend()
	echo("proxied echo stream", proxied)

	for _, s := range out {
		if err := s.recv(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	return out
}

// waitEnded reads each stream until it ends, for at most 20 s in all, and
// checks it ended with code.
func waitEnded(t *testing.T, streams []openStream, code codes.Code, why string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range streams {
		var err error
		for err == nil && time.Now().Before(deadline) {
			err = s.recv()
		}
		if err == nil {
			t.Errorf("%s still open 20 s after %s", s.name, why)
		} else if status.Code(err) != code {
			t.Errorf("%s ended with %v after %s, want %v", s.name, err, why, code)
		} else {
			t.Logf("%s: %v", s.name, err)
		}
	}
}

// TestRevokedTokenEndsItsStreams: deleting a token ends the store watch
// and the plugin streams it opened, Unauthenticated, and a policy that
// stops granting them ends them PermissionDenied; other tokens' streams
// go on.
func TestRevokedTokenEndsItsStreams(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")
	ctx := testenv.Context(t, 2*time.Minute)

	rules := `plugin "echo" { policy = "write" }
namespace "app" { policy = "read" }
`
	createPolicy(t, a, "app-watch", rules)
	doomed, doomedAccessor := createToken(t, a, "doomed", "app-watch")
	kept, _ := createToken(t, a, "kept", "app-watch")
	other, _ := createToken(t, a, "other", "read-only", "app-watch")

	d := openRevokable(t, a, ctx, doomed)
	k := openRevokable(t, a, ctx, kept)
	o := openRevokable(t, a, ctx, other)

	if _, errOut, code := a.CLI("acl", "token", "delete", doomedAccessor); code != 0 {
		t.Fatalf("acl token delete: %s", errOut)
	}
	waitEnded(t, d, codes.Unauthenticated, "its token was deleted")
	poke := func() {
		if _, errOut, code := a.CLI("store", "put", "-ns", "app", "k", "again"); code != 0 {
			t.Fatalf("store put: %s", errOut)
		}
	}
	poke() // for the watches to read
	for _, s := range append(k, o...) {
		if err := s.recv(); err != nil {
			t.Fatalf("%s of another token ended: %v", s.name, err)
		}
	}

	// The policy is rewritten to grant neither (straight into _sys, as a
	// management token can; the CLI makes no policy updates).
	v, _ := json.Marshal(map[string]string{"name": "app-watch", "rules": `namespace "other" { policy = "read" }`})
	if _, errOut, code := a.CLI("store", "put", "-ns", "_sys", "acl/policies/app-watch", string(v)); code != 0 {
		t.Fatalf("rewriting the policy: %s", errOut)
	}
	waitEnded(t, k, codes.PermissionDenied, "its policy stopped granting it")
	// other's read-only policy still grants the watch (namespace read)
	// but not the echo calls (plugin write).
	waitEnded(t, o[1:], codes.PermissionDenied, "its policy stopped granting it")
	poke()
	if err := o[0].recv(); err != nil {
		t.Fatalf("a watch read-only still grants ended: %v", err)
	}
}

// reflectAs asks the agent's reflection, with secret, for its services and
// for the file of symbol; found is false when it answered NotFound.
func reflectAs(t *testing.T, a *Agent, secret, symbol string) (services []string, found bool) {
	t.Helper()
	ctx := withToken(testenv.Context(t, 30*time.Second), secret)
	rs, err := rv1.NewServerReflectionClient(a.BareConn()).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rs.CloseSend() }()
	if err := rs.Send(&rv1.ServerReflectionRequest{MessageRequest: &rv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range resp.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	if err := rs.Send(&rv1.ServerReflectionRequest{MessageRequest: &rv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}}); err != nil {
		t.Fatal(err)
	}
	if resp, err = rs.Recv(); err != nil {
		t.Fatal(err)
	}
	if er := resp.GetErrorResponse(); er != nil {
		if codes.Code(er.GetErrorCode()) != codes.NotFound {
			t.Fatalf("file containing %s: %d %s", symbol, er.GetErrorCode(), er.GetErrorMessage())
		}
		return services, false
	}
	return services, len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) > 0
}

// TestReflectionListsOnlyReadablePlugins: gRPC reflection lists and
// describes only the plugins a token may read, as ListPlugins does.
func TestReflectionListsOnlyReadablePlugins(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.Drop(bundlePath("counter", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")
	a.WaitRunning("counter", "1.0.0")
	createPolicy(t, a, "echo-only", `plugin "echo" { policy = "read" }`)
	echoOnly, _ := createToken(t, a, "echo only", "echo-only")

	has := func(list []string, s string) bool { return slices.Contains(list, s) }
	all, found := reflectAs(t, a, a.Token(), "counter.v1.CounterService")
	if !has(all, "echo.v1.EchoService") || !has(all, "counter.v1.CounterService") || !found {
		t.Fatalf("management token: services %v, counter described %v", all, found)
	}
	some, found := reflectAs(t, a, echoOnly, "counter.v1.CounterService")
	if !has(some, "echo.v1.EchoService") || has(some, "counter.v1.CounterService") || found {
		t.Fatalf("echo-only token: services %v, counter described %v; want echo only", some, found)
	}
	if !has(some, "plughost.operator.v1.OperatorService") {
		t.Fatalf("echo-only token: the agent's own services are not listed: %v", some)
	}
	if _, found := reflectAs(t, a, echoOnly, "echo.v1.EchoService"); !found {
		t.Fatal("echo-only token: echo is not described")
	}
}
