package main

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	echov1 "github.com/plughost/plughost/plugins/echo/proto/echo/v1"
	"github.com/plughost/plughost/sdk"
	"github.com/plughost/plughost/sdk/sdktest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func startEcho(t *testing.T) (context.Context, *sdktest.Harness, echov1.EchoServiceClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	h := sdktest.Start(t, sdk.Info{Name: "echo", Version: "1.2.0"}, &server{version: "1.2.0"})
	return ctx, h, echov1.NewEchoServiceClient(h.Conn())
}

func TestEcho(t *testing.T) {
	ctx, h, c := startEcho(t)
	resp, err := c.Echo(ctx, &echov1.EchoRequest{Message: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMessage() != "hello" || resp.GetVersion() != "1.2.0" {
		t.Fatalf("echo: %v", resp)
	}
	if err := h.Health(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := h.Describe(ctx)
	if err != nil || len(d.Services) != 1 || d.Services[0] != "echo.v1.EchoService" {
		t.Fatalf("describe: %+v, %v", d, err)
	}
	if err := h.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestEchoStream(t *testing.T) {
	ctx, _, c := startEcho(t)
	stream, err := c.EchoStream(ctx, &echov1.EchoStreamRequest{Message: "tick", Count: 5, IntervalMs: 10})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int32
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if msg.GetMessage() != "tick" || msg.GetVersion() != "1.2.0" {
			t.Fatalf("stream message %v", msg)
		}
		seqs = append(seqs, msg.GetSequence())
	}
	if len(seqs) != 5 || seqs[0] != 1 || seqs[4] != 5 {
		t.Fatalf("sequences %v, want 1..5", seqs)
	}
}

func TestEchoStreamCancel(t *testing.T) {
	ctx, _, c := startEcho(t)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// An hour's stream: only cancellation can end the test in time.
	stream, err := c.EchoStream(sctx, &echov1.EchoStreamRequest{Message: "m", Count: 60, IntervalMs: 60000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("recv after cancel: %v, want Canceled", err)
	}
}

func TestEchoStreamBounds(t *testing.T) {
	ctx, _, c := startEcho(t)
	for _, req := range []*echov1.EchoStreamRequest{
		{Count: -1}, {Count: maxStreamCount + 1}, {Count: 1, IntervalMs: -5}, {Count: 2, IntervalMs: 3_600_000},
	} {
		stream, err := c.EchoStream(ctx, req)
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: %v, want InvalidArgument", req, err)
		}
	}
}

func TestEchoRejectsConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := sdktest.StartWith(t, sdk.Info{Name: "echo", Version: "1.2.0"}, &server{version: "1.2.0"}, sdktest.Options{Unconfigured: true})
	if err := h.Configure(ctx, `{"volume": 11}`); err == nil {
		t.Fatal("unknown config accepted")
	}
}
