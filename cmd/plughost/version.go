package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"

	"github.com/plughost/plughost/host/agent"
	"github.com/plughost/plughost/sdk/wire"
)

func runVersion(_ context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("version takes no arguments, got %q", fs.Args())
	}
	fmt.Fprintf(env.stdout, "plughost %s (plugin API %v, %s %s/%s)\n", agent.Version, wire.SupportedAPIVersions, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
