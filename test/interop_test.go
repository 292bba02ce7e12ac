package test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// The interop cases report a failure through grpclog's Fatal, which exits
// the process. fatalPanics makes it panic instead, so that the test that
// ran the case recovers it and reports it as that case's failure. Set once,
// before any gRPC activity, as SetLoggerV2 requires; the rest is grpc-go's
// default (errors to stderr, nothing else).
func init() {
	grpclog.SetLoggerV2(fatalPanics{grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr)})
}

type fatalPanics struct{ grpclog.LoggerV2 }

// interopFailure is what a failed interop case panics with.
type interopFailure string

func (fatalPanics) Fatal(args ...any) { panic(interopFailure(fmt.Sprint(args...))) }
func (fatalPanics) Fatalln(args ...any) {
	panic(interopFailure(strings.TrimSuffix(fmt.Sprintln(args...), "\n")))
}
func (fatalPanics) Fatalf(format string, args ...any) {
	panic(interopFailure(fmt.Sprintf(format, args...)))
}

// interopCase is one case of grpc-go's interop client.
type interopCase struct {
	name string
	run  func(ctx context.Context, cc *grpc.ClientConn)
}

// interopCases are the interop client's cases that need neither TLS,
// credentials nor a control plane (load balancing, xDS, ORCA).
var interopCases = []interopCase{
	{"empty_unary", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoEmptyUnaryCall(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"large_unary", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoLargeUnaryCall(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"client_streaming", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoClientStreaming(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"server_streaming", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoServerStreaming(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"ping_pong", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoPingPong(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"empty_stream", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoEmptyStream(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"timeout_on_sleeping_server", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoTimeoutOnSleepingServer(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"cancel_after_begin", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCancelAfterBegin(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"cancel_after_first_response", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCancelAfterFirstResponse(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"custom_metadata", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCustomMetadata(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"status_code_and_message", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoStatusCodeAndMessage(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"special_status_message", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoSpecialStatusMessage(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"unimplemented_method", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoUnimplementedMethod(ctx, cc)
	}},
	{"unimplemented_service", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoUnimplementedService(ctx, testgrpc.NewUnimplementedServiceClient(cc))
	}},
}

// runInteropCase runs c and returns its failure, or nil.
func runInteropCase(c interopCase, cc *grpc.ClientConn) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			msg, ok := r.(interopFailure)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("%s: %s", c.name, msg)
		}
	}()
	c.run(ctx, cc)
	return nil
}

// TestInterop runs grpc-go's interop client against grpc.testing.TestService
// served by a plugin (test/fixtures/interop, interop.NewTestServer behind
// sdk.Serve) through a real agent: every case once in turn, then 8 callers
// on one connection and 8 on connections of their own, each running every
// case at once.
func TestInterop(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	exe := fixture(t, "interop", "interop", "1.0.0")
	out := t.TempDir()
	// The real bundle build: it learns the services from the plugin, so a
	// grpc.* service a plugin serves must pass the manifest's checks.
	if b, err := exec.Command(filepath.Join(binDir, "plughost"), "bundle", "build", "-o", out, exe).CombinedOutput(); err != nil {
		t.Fatalf("plughost bundle build: %v\n%s", err, b)
	}
	a.Drop(filepath.Join(out, "interop-1.0.0.tar.gz"))
	a.WaitRunning("interop", "1.0.0")

	shared := a.Conn()
	t.Run("sequential", func(t *testing.T) {
		for _, c := range interopCases {
			if err := runInteropCase(c, shared); err != nil {
				t.Error(err)
			}
		}
	})

	const callers = 8
	for _, mode := range []string{"one connection", "a connection each"} {
		t.Run("concurrent/"+mode, func(t *testing.T) {
			var wg sync.WaitGroup
			errs := make(chan error, callers*len(interopCases))
			for range callers {
				cc := shared
				if mode == "a connection each" {
					cc = a.Conn()
				}
				for _, c := range interopCases {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := runInteropCase(c, cc); err != nil {
							errs <- err
						}
					}()
				}
			}
			wg.Wait()
			close(errs)
			// The first failure of each case, and how many of its runs
			// failed.
			failed := map[string]int{}
			for err := range errs {
				name, _, _ := strings.Cut(err.Error(), ":")
				if failed[name] == 0 {
					t.Error(err)
				}
				failed[name]++
			}
			for name, n := range failed {
				t.Errorf("%s failed %d of %d times", name, n, callers)
			}
		})
	}
}
