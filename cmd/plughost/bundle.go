package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/launch"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	"github.com/plughost/plughost/sdk/wire"
)

func runBundle(ctx context.Context, env *cliEnv, args []string) error {
	sub, rest, err := subcommand("bundle", args)
	if err != nil {
		return err
	}
	switch sub {
	case "build":
		return bundleBuild(ctx, env, rest)
	case "verify":
		return bundleVerify(ctx, env, rest)
	case "keygen":
		return bundleKeygen(ctx, env, rest)
	case "sign":
		return bundleSign(ctx, env, rest)
	}
	return bundleAdd(ctx, env, rest)
}

// bundleBuild makes a bundle from a built plugin executable. It starts the
// executable once to learn its name, version and services, so the manifest
// cannot disagree with the binary.
func bundleBuild(ctx context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("bundle build", flag.ContinueOnError)
	out := fs.String("o", ".", "directory to write <name>-<version>.tar.gz into")
	base := fs.String("manifest", "", "plugin.json with the fields to keep (resources, health, upgrade, placement, config)")
	memory := fs.Int64("memory-mb", 0, "memory limit in MiB")
	cpu := fs.Float64("cpu", 0, "CPU limit in cores, e.g. 0.5")
	pids := fs.Int64("pids", 0, "pids limit")
	strategy := fs.String("strategy", "", "upgrade strategy: overlap or restart")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("bundle build: give one plugin executable")
	}
	exe, err := bundle.Executable(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("bundle build: %w", err)
	}
	m := &bundle.Manifest{}
	if *base != "" {
		// The base holds only what the binary cannot say (resources, health,
		// upgrade, placement, config): decode it strictly, validate the
		// whole manifest once the plugin has described itself.
		data, err := os.ReadFile(*base)
		if err != nil {
			return err
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(m); err != nil {
			return fmt.Errorf("%s: %w", *base, err)
		}
	}
	digest, err := bundle.Digest(exe)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(exe)
	if err != nil {
		return err
	}
	inst, err := launch.Start(ctx, launch.Spec{Executable: abs, SHA256: digest, Dir: filepath.Dir(abs)})
	if err != nil {
		return fmt.Errorf("bundle build: %w", err)
	}
	desc := inst.Description
	inst.Kill()
	m.Name, m.Version, m.Services = desc.GetName(), desc.GetVersion(), desc.GetServices()
	if m.Version == bundle.DevVersion {
		fmt.Fprintf(env.stderr, "warning: %s was built without a version and is bundled as %s; build it with -ldflags \"-X main.version=1.2.3\" to give it one\n", exe, m.Version)
	}
	if len(m.APIVersions) == 0 {
		m.APIVersions = []int{int(desc.GetApiVersion())}
	}
	if *memory > 0 {
		m.Resources.MemoryMB = *memory
	}
	if *cpu > 0 {
		m.Resources.CPU = *cpu
	}
	if *pids > 0 {
		m.Resources.Pids = *pids
	}
	if *strategy != "" {
		m.Upgrade.Strategy = *strategy
	}
	path, err := bundle.Build(exe, m, *out)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s\n", path)
	fmt.Fprintf(env.stderr, "built %s %s (sha256 %s, services %v)\n", m.Name, m.Version, m.SHA256, m.Services)
	return nil
}

func bundleVerify(_ context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("bundle verify", flag.ContinueOnError)
	var trustedKeys multiFlag
	fs.Var(&trustedKeys, "trusted-key", "public key file of a trusted publisher (repeatable); with any, a bundle must be signed by one of them")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("bundle verify: give one or more bundles")
	}
	trusted, err := bundle.LoadTrustedKeys(trustedKeys)
	if err != nil {
		return err
	}
	failed := false
	for _, p := range fs.Args() {
		b, err := bundle.VerifyBundle(p)
		if err == nil {
			err = bundle.CheckAPIVersions(b.Manifest, wire.SupportedAPIVersions)
		}
		var signer string
		if err == nil {
			signer, err = signedBy(b, trusted)
		}
		if err != nil {
			fmt.Fprintf(env.stderr, "FAIL %s: %v\n", p, err)
			failed = true
			continue
		}
		m := b.Manifest
		fmt.Fprintf(env.stdout, "ok   %s: %s %s sha256 %s, %s\n", p, m.Name, m.Version, m.SHA256, signer)
	}
	if failed {
		return errSilent
	}
	return nil
}

// signedBy says who signed b: "unsigned", or the signer's key id and
// whether it is trusted. A signature that does not verify is an error, and
// so is an unsigned or untrusted bundle when there are trusted keys.
func signedBy(b *bundle.Bundle, trusted *bundle.TrustedKeys) (string, error) {
	if trusted != nil {
		id, err := trusted.Check(b)
		if err != nil {
			return "", err
		}
		return "signed by " + id + " (trusted)", nil
	}
	if b.Signature == nil {
		return "unsigned", nil
	}
	_, id, err := b.Signer()
	if err != nil {
		return "", err
	}
	return "signed by " + id + " (valid signature; give -trusted-key to check the signer)", nil
}

// bundleAdd uploads a bundle to an agent, which verifies and registers it.
func bundleAdd(ctx context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("bundle add", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("bundle add: give one bundle (.tar.gz)")
	}
	path := fs.Arg(0)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := operatorv1.NewOperatorServiceClient(conn).AddBundle(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&operatorv1.AddBundleRequest{Payload: &operatorv1.AddBundleRequest_FileName{FileName: filepath.Base(path)}}); err != nil {
		return err
	}
	if err := sendChunks(f, func(b []byte) error {
		return stream.Send(&operatorv1.AddBundleRequest{Payload: &operatorv1.AddBundleRequest_Chunk{Chunk: b}})
	}); err != nil {
		return err
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return err
	}
	if cf.format == "json" {
		return printJSON(env.stdout, map[string]any{"name": resp.GetName(), "version": resp.GetVersion(), "sha256": resp.GetSha256(),
			"already_registered": resp.GetAlreadyRegistered(), "installed_here": resp.GetInstalledHere()})
	}
	name, version, sum := resp.GetName(), resp.GetVersion(), resp.GetSha256()
	switch {
	case !resp.GetAlreadyRegistered():
		fmt.Fprintf(env.stdout, "registered %s %s (sha256 %s) and installed it on this node\n", name, version, sum)
	case resp.GetInstalledHere():
		fmt.Fprintf(env.stdout, "%s %s was already registered (sha256 %s); this node lacked its files and has them now, and runs it if it is the desired version (see 'plughost plugin status %s')\n",
			name, version, sum, name)
	default:
		fmt.Fprintf(env.stdout, "%s %s is already registered and installed on this node (sha256 %s): nothing changed\n", name, version, sum)
	}
	return nil
}
