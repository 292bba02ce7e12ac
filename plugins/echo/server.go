package main

import (
	"context"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	"github.com/plughost/plughost/sdk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Bounds of EchoStream, so that one call cannot hold a stream for ever.
const (
	maxStreamCount    = 10000
	maxStreamInterval = time.Minute
)

// server implements echo.v1.EchoService. It keeps no state.
type server struct {
	echov1.UnimplementedEchoServiceServer
	version string
	logger  hclog.Logger
}

var (
	_ sdk.Plugin     = (*server)(nil)
	_ sdk.Configurer = (*server)(nil)
	_ sdk.Drainer    = (*server)(nil)
)

// Register implements sdk.Plugin.
func (s *server) Register(r grpc.ServiceRegistrar) { echov1.RegisterEchoServiceServer(r, s) }

// Configure implements sdk.Configurer: echo takes no configuration, and
// refuses one it does not understand.
func (s *server) Configure(_ context.Context, env *sdk.Env) error {
	s.logger = env.Logger
	var cfg struct{}
	return env.DecodeConfig(&cfg)
}

// Drain implements sdk.Drainer. Echo has no background work; it only says
// that it was asked.
func (s *server) Drain(ctx context.Context) error {
	deadline, _ := ctx.Deadline()
	s.logger.Info("draining: no background work to finish", "deadline", deadline)
	return nil
}

// Echo returns the message and the version that answered.
func (s *server) Echo(_ context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	return &echov1.EchoResponse{Message: req.GetMessage(), Version: s.version}, nil
}

// EchoStream sends the message count times (0 means once), interval_ms
// apart, until the caller goes away.
func (s *server) EchoStream(req *echov1.EchoStreamRequest, stream grpc.ServerStreamingServer[echov1.EchoStreamResponse]) error {
	count := req.GetCount()
	if count == 0 {
		count = 1
	}
	interval := time.Duration(req.GetIntervalMs()) * time.Millisecond
	switch {
	case count < 0 || count > maxStreamCount:
		return status.Errorf(codes.InvalidArgument, "count %d is out of range: use 0 to %d", req.GetCount(), maxStreamCount)
	case interval < 0 || interval > maxStreamInterval:
		return status.Errorf(codes.InvalidArgument, "interval_ms %d is out of range: use 0 to %d", req.GetIntervalMs(), maxStreamInterval.Milliseconds())
	}
	ctx := stream.Context()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for seq := int32(1); seq <= count; seq++ {
		if seq > 1 {
			timer.Reset(interval)
			select {
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			case <-timer.C:
			}
		}
		if err := stream.Send(&echov1.EchoStreamResponse{Message: req.GetMessage(), Sequence: seq, Version: s.version}); err != nil {
			return err
		}
	}
	return nil
}
