package launch

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/plughost/plughost/host/bundle"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
)

// startEcho builds the example echo plugin and starts it outside an agent.
func startEcho(t *testing.T) *Instance {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and starts a plugin process")
	}
	exe := filepath.Join(t.TempDir(), "echo")
	build := exec.Command("go", "build", "-o", exe, "github.com/plughost/plughost/plugins/echo")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building echo: %v\n%s", err, out)
	}
	digest, err := bundle.Digest(exe)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inst, stop, err := StartStandalone(ctx, Spec{Executable: exe, SHA256: digest, Dir: filepath.Dir(exe)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return inst
}

// echoOver calls echo over an HTTP/2 connection that dial returns.
func echoOver(t *testing.T, dial func(context.Context) (net.Conn, error)) {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///plugin",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return dial(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials())) // TLS is the dialer's
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := echov1.NewEchoServiceClient(conn).Echo(ctx, &echov1.EchoRequest{Message: "raw"})
	if err != nil || resp.GetMessage() != "raw" {
		t.Fatalf("echo over a raw connection: %v, %v", resp, err)
	}
}

func TestDialRawDataSocket(t *testing.T) {
	inst := startEcho(t)
	path := inst.Description.GetDataSocket()
	if path == "" {
		t.Fatal("the SDK reported no data socket")
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data socket directory %s: %v, %v (want mode 0700)", dir, fi.Mode(), err)
	}
	echoOver(t, inst.DialRaw)

	// Without go-plugin's client certificate the plugin refuses the socket.
	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err == nil {
		buf := make([]byte, 64)
		if n, _ := nc.Read(buf); n > 0 && !strings.Contains(string(buf[:n]), "\x15") {
			t.Fatalf("the data socket answered plaintext HTTP/2: %q", buf[:n])
		}
	}

	inst.Kill()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("data socket directory %s left behind after the plugin was killed: %v", dir, err)
	}
}

// TestDialRawYamux: a plugin that offers no data socket (an older SDK) is
// reached on a new stream of the go-plugin connection's yamux session.
func TestDialRawYamux(t *testing.T) {
	inst := startEcho(t)
	echoOver(t, func(ctx context.Context) (net.Conn, error) { return inst.raw.dial(ctx, "") })
}
