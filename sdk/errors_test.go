package sdk

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestFromRPC(t *testing.T) {
	tests := []struct {
		code codes.Code
		want error
	}{
		{codes.FailedPrecondition, ErrConflict},
		{codes.ResourceExhausted, ErrLimit},
		{codes.OutOfRange, ErrCompacted},
		{codes.Unavailable, ErrUnavailable},
		{codes.PermissionDenied, ErrPermission},
		{codes.NotFound, ErrNotFound},
		{codes.Canceled, context.Canceled},
		{codes.DeadlineExceeded, context.DeadlineExceeded},
		{codes.Internal, nil},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			err := fromRPC("put k", status.Error(tt.code, "namespace echo: quota of 10 keys reached"))
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("%v is not %v", err, tt.want)
			}
			for _, s := range []error{ErrConflict, ErrLimit, ErrCompacted, ErrUnavailable, ErrOutcomeUnknown, ErrPermission, ErrNotFound} {
				if s != tt.want && errors.Is(err, s) {
					t.Errorf("%v is also %v", err, s)
				}
			}
			if msg := err.Error(); !strings.Contains(msg, "store put k") || !strings.Contains(msg, "quota of 10 keys reached") {
				t.Errorf("message %q lost the operation or the store's message", msg)
			}
			if got := status.Code(err); got != tt.code {
				t.Errorf("status code through the SDK error is %v, want %v", got, tt.code)
			}
		})
	}
	if fromRPC("get k", nil) != nil {
		t.Fatal("nil error mapped to non-nil")
	}
	plain := errors.New("boom")
	if err := fromRPC("get k", plain); !errors.Is(err, plain) {
		t.Fatalf("%v does not wrap the original error", err)
	}
}
