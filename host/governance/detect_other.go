//go:build !linux

package governance

import (
	"fmt"
	"runtime"

	"github.com/hashicorp/go-hclog"
)

// detect finds no cgroups: they exist only on Linux.
func detect(_, _ string, _ hclog.Logger) (backend, string) {
	return nil, fmt.Sprintf("cgroups exist only on Linux, and this is %s", runtime.GOOS)
}
