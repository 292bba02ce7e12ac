package install

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/governance"
	"github.com/plughost/plughost/host/launch"
	"github.com/plughost/plughost/host/sandbox"
	"github.com/plughost/plughost/sdk/wire"
)

// ErrServices means a plugin serves other services than its manifest says.
var ErrServices = errors.New("services differ from the manifest")

// IntakeConfig is what an Intake needs.
type IntakeConfig struct {
	PluginsDir string // installed bundles: <PluginsDir>/<name>/<version>/ (0700)
	StagingDir string // private copies being verified (0700)
	Catalog    *catalog.Catalog
	Trusted    *bundle.TrustedKeys // nil: unsigned bundles are accepted
	Logger     hclog.Logger
	// BaseSpec is the launch spec the probe starts from.
	BaseSpec func() launch.Spec
	// Sandbox and Governance confine the probe: a uid of its own and a
	// cgroup of its own, limited to ProbeLimits, killed when the probe is
	// done. Either may be nil.
	Sandbox     *sandbox.Sandbox
	Governance  *governance.Manager
	ProbeLimits governance.Limits
	// Installed is told the name of every plugin whose files were
	// installed here, so the supervisor starts a version it was waiting for.
	Installed func(name string)
}

// Intake verifies bundles, probes their executables, installs them into
// the plugins dir and registers them: what 'plughost bundle add', a drop
// into the bundles dir and a fetch from a peer all go through.
type Intake struct {
	cfg IntakeConfig
	mu  sync.Mutex // one install at a time: the catalog check and the move must not interleave
}

// NewIntake returns an Intake.
func NewIntake(cfg IntakeConfig) *Intake {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Intake{cfg: cfg}
}

// Installed is the outcome of an accepted bundle.
type Installed struct {
	Manifest *bundle.Manifest
	// Already: the catalog held this version with this digest before.
	Already bool
	// InstalledHere: its files were copied onto this node by this install;
	// false when the node had them already.
	InstalledHere bool
}

// Install verifies the bundle at path (a .tar.gz or a directory), starts its
// executable once to check that it is the plugin its manifest describes,
// moves it into the plugins dir and registers it. A refused bundle changes
// nothing.
//
// The bundle is verified in a private copy under the staging dir (see
// bundle.Open), and that copy is what the probe runs and what is moved into
// the plugins dir, which only the agent can write: the file that runs, now
// and at every start, is the file whose digest was checked. With trusted
// keys, the bundle's signature is checked before anything of it runs.
func (in *Intake) Install(ctx context.Context, path, actor string) (*Installed, error) {
	in.mu.Lock()
	defer in.mu.Unlock()

	if err := os.MkdirAll(in.cfg.StagingDir, 0o700); err != nil {
		return nil, err
	}
	staging, err := os.MkdirTemp(in.cfg.StagingDir, "bundle-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(staging)

	b, err := bundle.Open(path, filepath.Join(staging, "unpacked"))
	if err != nil {
		return nil, err
	}
	signer, err := in.cfg.Trusted.Check(b)
	if err != nil {
		return nil, err
	}
	m := b.Manifest
	what := fmt.Sprintf("bundle %s", filepath.Base(path))
	if err := bundle.CheckAPIVersions(m, wire.SupportedAPIVersions); err != nil {
		return nil, err
	}
	if old, err := in.cfg.Catalog.Get(ctx, m.Name, m.Version); err == nil {
		if old.SHA256 != m.SHA256 {
			return nil, fmt.Errorf("%s: %s %s is already registered with sha256 %s, this bundle has %s: %w (give the new build a new version)",
				what, m.Name, m.Version, old.SHA256[:12], m.SHA256[:12], catalog.ErrImmutable)
		}
		dir := filepath.Join(in.cfg.PluginsDir, m.Name, m.Version)
		_, err := os.Stat(filepath.Join(dir, m.Executable))
		if err == nil && in.cfg.Trusted != nil {
			// Installed before trusted keys were set: this signed bundle
			// replaces it.
			err = CheckInstalled(in.cfg.Trusted, old, dir)
		}
		if err == nil {
			in.notify(m.Name)
			return &Installed{Manifest: m, Already: true}, nil
		}
	}
	if err := in.probe(ctx, b); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	dest := filepath.Join(in.cfg.PluginsDir, m.Name, m.Version)
	if err := b.InstallTo(dest); err != nil {
		return nil, fmt.Errorf("%s: installing into %s: %w", what, dest, err)
	}
	already, err := in.cfg.Catalog.Register(ctx, m, actor)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if signer != "" {
		in.cfg.Logger.Info("bundle registered", "plugin", m.Name, "version", m.Version, "sha256", m.SHA256, "actor", actor, "signed_by", signer)
	} else {
		in.cfg.Logger.Info("bundle registered", "plugin", m.Name, "version", m.Version, "sha256", m.SHA256, "actor", actor)
	}
	in.notify(m.Name)
	return &Installed{Manifest: m, Already: already, InstalledHere: true}, nil
}

// probeKillTimeout bounds the wait for what a probe without a cgroup left
// to die.
const probeKillTimeout = 5 * time.Second

// probeGroupID names a probe's cgroup in the agent's own: unique, so that
// one a probe could not remove never blocks the next.
func probeGroupID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "probe-" + hex.EncodeToString(b[:])
}

func (in *Intake) notify(name string) {
	if in.cfg.Installed != nil {
		in.cfg.Installed(name)
	}
}

// probe starts the executable once and checks who it says it is. The
// executable is not trusted yet: it runs sandboxed, as a user no plugin
// has, in a cgroup of its own with the default limits, and everything it
// started is killed once it is done.
func (in *Intake) probe(ctx context.Context, b *bundle.Bundle) error {
	m := b.Manifest
	spec := in.cfg.BaseSpec()
	spec.Plugin, spec.Version, spec.InstanceID = m.Name, m.Version, "probe"
	spec.Executable, spec.SHA256, spec.Dir = b.Executable, m.SHA256, b.Dir
	contained := false // a cgroup holds what the probe starts
	if in.cfg.Sandbox != nil {
		p, err := in.cfg.Sandbox.PrepareProbe()
		if err != nil {
			return err
		}
		defer func() {
			// Without a cgroup, what the probe left is found by its uid,
			// which no other process has.
			if !contained {
				if err := p.KillAll(probeKillTimeout); err != nil {
					in.cfg.Logger.Warn("what the bundle probe started may still run: it has no cgroup of its own", "plugin", m.Name, "version", m.Version, "error", err)
				}
			}
			p.Release()
		}()
		spec.Sandbox = p
	}
	if in.cfg.Governance != nil {
		g, err := in.cfg.Governance.New(probeGroupID(), in.cfg.ProbeLimits)
		if err != nil {
			return fmt.Errorf("probe cgroup: %w", err)
		}
		// Deferred before the stop below, so it runs after it: whatever
		// the probe left running is killed, and the cgroup waited on
		// until empty.
		defer func() {
			if err := g.Delete(); err != nil {
				in.cfg.Logger.Error("could not kill what the bundle probe left running", "plugin", m.Name, "version", m.Version, "error", err)
			}
		}()
		spec.Place = g.Start
		contained = g.Path() != ""
	}
	inst, err := launch.Start(ctx, spec)
	if err != nil {
		return err
	}
	defer inst.Stop(context.WithoutCancel(ctx))
	got := slices.Clone(inst.Description.GetServices())
	want := slices.Clone(m.Services)
	sort.Strings(got)
	sort.Strings(want)
	for _, s := range want {
		if !slices.Contains(got, s) {
			return fmt.Errorf("plugin.json lists service %s but the plugin serves %v: %w (fix \"services\" in plugin.json)", s, got, ErrServices)
		}
	}
	return nil
}

// CheckInstalled checks that the bundle installed in dir is e's and signed
// by a trusted key: what the supervisor asks before every start when
// trusted keys are set, so that turning trusted_keys on also stops what
// was installed unsigned before.
func CheckInstalled(trusted *bundle.TrustedKeys, e *catalog.Entry, dir string) error {
	b, err := bundle.ReadInstalled(dir)
	if err != nil {
		return err
	}
	if m := b.Manifest; m.Name != e.Name || m.Version != e.Version || m.SHA256 != e.SHA256 {
		return fmt.Errorf("%s holds %s %s (sha256 %s) but the catalog says %s %s (sha256 %s): add the bundle of %s %s again",
			dir, m.Name, m.Version, m.SHA256, e.Name, e.Version, e.SHA256, e.Name, e.Version)
	}
	if _, err := trusted.Check(b); err != nil {
		return fmt.Errorf("%s %s, installed on this node, is not started: %w (then add its bundle signed by a trusted key again)", e.Name, e.Version, err)
	}
	return nil
}
