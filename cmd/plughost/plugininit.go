package main

import (
	"flag"
	"fmt"
	"path/filepath"

	"github.com/plughost/plughost/internal/scaffold"
)

// runPluginInit is `plughost plugin init NAME [-module PATH] [-dir DIR]
// [-replace CHECKOUT]`: it writes a new plugin module (see package
// scaffold) and says how to build and test it.
func runPluginInit(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("plugin init", flag.ContinueOnError)
	module := fs.String("module", "", "Go module path of the plugin (default example.com/NAME)")
	dir := fs.String("dir", "", "directory to write, new or empty (default ./NAME)")
	replace := fs.String("replace", "", "a local plughost checkout for go.mod to use instead of a release")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("plugin init takes NAME")
	}
	cfg := scaffold.Config{
		Name:            fs.Arg(0),
		Module:          *module,
		Dir:             *dir,
		PlughostVersion: scaffold.BuildVersion(),
		Replace:         *replace,
	}
	if cfg.Dir == "" {
		cfg.Dir = cfg.Name
	}
	files, err := scaffold.Write(cfg)
	if err != nil {
		return fmt.Errorf("plugin init: %w", err)
	}
	for _, f := range files {
		fmt.Fprintln(env.stdout, filepath.Join(cfg.Dir, f))
	}
	fmt.Fprintf(env.stdout, "\nnext: cd %s && make generate && go mod tidy && make test\n", cfg.Dir)
	if cfg.PlughostVersion == "" && cfg.Replace == "" {
		fmt.Fprintln(env.stdout, "(this plughost is a development build: go mod tidy takes the latest plughost release; -replace CHECKOUT uses a local one)")
	}
	return nil
}
