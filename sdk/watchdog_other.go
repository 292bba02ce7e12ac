//go:build !unix

package sdk

import (
	"context"

	hclog "github.com/hashicorp/go-hclog"
)

// startWatchdog does nothing where there are no process groups; the agent
// runs on Linux.
func startWatchdog(context.Context, hclog.Logger, func()) (stop func()) { return func() {} }
