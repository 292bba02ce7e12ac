package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/plughost/plughost/host/bundle"
)

// bundleKeygen makes a publisher key pair for signing bundles.
func bundleKeygen(_ context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("bundle keygen", flag.ContinueOnError)
	prefix := fs.String("o", "", "write the key pair to PREFIX.key and PREFIX.pub (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("bundle keygen takes no arguments, got %q", fs.Args())
	}
	if *prefix == "" {
		return usagef("bundle keygen: give -o PREFIX")
	}
	id, err := bundle.GenerateKey(*prefix)
	if err != nil {
		return fmt.Errorf("bundle keygen: %w", err)
	}
	fmt.Fprintln(env.stdout, id)
	fmt.Fprintf(env.stderr, "wrote %s.key (private: keep it secret) and %s.pub (give it to agents as -trusted-key or in trusted_keys)\n", *prefix, *prefix)
	return nil
}

// bundleSign signs a bundle with a publisher's private key.
func bundleSign(_ context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("bundle sign", flag.ContinueOnError)
	keyFile := fs.String("key", "", "private key file from 'plughost bundle keygen' (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("bundle sign: give one bundle")
	}
	if *keyFile == "" {
		return usagef("bundle sign: give -key KEY")
	}
	key, err := bundle.ReadPrivateKey(*keyFile)
	if err != nil {
		return fmt.Errorf("bundle sign: %w", err)
	}
	id, err := bundle.Sign(fs.Arg(0), key)
	if err != nil {
		return fmt.Errorf("bundle sign: %w", err)
	}
	fmt.Fprintf(env.stdout, "signed %s with key %s\n", fs.Arg(0), id)
	return nil
}
