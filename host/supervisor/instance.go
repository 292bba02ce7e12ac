package supervisor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/health/grpc_health_v1"

	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/governance"
	"github.com/plughost/plughost/host/launch"
	"github.com/plughost/plughost/host/router"
	"github.com/plughost/plughost/host/sandbox"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	"github.com/plughost/plughost/store"
)

// instance is one started copy of a plugin version on this node.
type instance struct {
	*launch.Instance
	entry   *catalog.Entry
	group   *governance.Group
	limits  []governance.LimitStatus
	sandbox []sandbox.Part
	backend *router.Backend

	// unhealthy receives the reason once the liveness checks fail
	// failure_threshold times in a row.
	unhealthy chan string
	done      chan struct{}
	doneOnce  sync.Once

	mu    sync.Mutex
	state operatorv1.InstanceState
	since time.Time
}

func (in *instance) setState(st operatorv1.InstanceState) {
	in.mu.Lock()
	if in.state != st {
		in.state, in.since = st, time.Now()
	}
	in.mu.Unlock()
}

func (in *instance) getState() (operatorv1.InstanceState, time.Time) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.state, in.since
}

func newInstanceID(name, version string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	v := strings.NewReplacer(".", "_", "+", "_").Replace(version)
	return fmt.Sprintf("%s-%s-%s", name, v, hex.EncodeToString(b[:]))
}

// limitsFor resolves an entry's resource limits: the manifest's, then the
// agent's defaults for what it leaves out, then the agent's overrides.
func (s *Supervisor) limitsFor(e *catalog.Entry) governance.Limits {
	r := e.Manifest.Resources
	l := governance.Limits{MemoryBytes: r.MemoryMB << 20, CPU: r.CPU, Pids: r.Pids}
	if l.MemoryBytes == 0 {
		l.MemoryBytes = s.cfg.Defaults.MemoryBytes
	}
	if l.CPU == 0 {
		l.CPU = s.cfg.Defaults.CPU
	}
	if l.Pids == 0 {
		l.Pids = s.cfg.Defaults.Pids
	}
	if o, ok := s.cfg.Overrides[e.Name]; ok {
		if o.MemoryBytes != 0 {
			l.MemoryBytes = o.MemoryBytes
		}
		if o.CPU != 0 {
			l.CPU = o.CPU
		}
		if o.Pids != 0 {
			l.Pids = o.Pids
		}
	}
	return l
}

// executable returns the path of e's executable in this node's bundle
// store: see catalog.Entry.ExecutableIn. An error wrapping fs.ErrNotExist
// means the version is not installed here yet.
func (s *Supervisor) executable(e *catalog.Entry) (string, error) {
	return e.ExecutableIn(s.cfg.PluginsDir)
}

// CgroupOf names the cgroup of g, or says why there is none: what
// sandbox.Process.Status takes.
func CgroupOf(m *governance.Manager, g *governance.Group) (cgroup, noCgroup string) {
	switch {
	case m == nil:
		return "", "resource governance is off"
	case g == nil:
		return "", "the instance's cgroup could not be made"
	case g.Path() != "":
		return g.Path(), ""
	case m.Reason() != "":
		return "", m.Reason()
	}
	for _, l := range g.Enforcement() {
		if l.Reason != "" {
			return "", l.Reason
		}
	}
	return "", "the instance has no cgroup"
}

// errNotHealthy marks an instance that did not pass its health gate.
var errNotHealthy = errors.New("not healthy")

// startInstance launches entry, configures it and holds it until it has been
// healthy for minHealthy (0: the first healthy check) within the manifest's
// healthy_deadline. It returns a routable instance or an error that says why
// not; a failed instance is already stopped.
func (s *Supervisor) startInstance(ctx context.Context, e *catalog.Entry, minHealthy time.Duration, progress func(string)) (*instance, error) {
	m := e.Manifest
	id := newInstanceID(e.Name, e.Version)
	exe, err := s.executable(e)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(exe)
	in := &instance{entry: e, unhealthy: make(chan string, 1), done: make(chan struct{})}
	in.setState(operatorv1.InstanceState_INSTANCE_STATE_STARTING)

	var place func(*exec.Cmd, func() error) error
	if s.cfg.Governance != nil {
		g, err := s.cfg.Governance.New(id, s.limitsFor(e))
		if err != nil {
			s.log.Warn("resource limits not applied", "plugin", e.Name, "version", e.Version, "error", err)
			in.limits = governance.NotEnforced(s.limitsFor(e), err.Error())
		} else {
			in.group = g
			in.limits = g.Enforcement()
			place = g.Start
		}
	}
	spec := launch.Spec{
		Plugin:       e.Name,
		Version:      e.Version,
		InstanceID:   id,
		Executable:   exe,
		SHA256:       e.SHA256,
		StartTimeout: s.cfg.StartTimeout,
		Logger:       s.cfg.Logger.Named("plugin").With("plugin", e.Name, "version", e.Version, "instance", id),
		Place:        place,
		Dir:          dir,
		DialOptions:  router.BackendDialOptions(),
		SocketDir:    s.cfg.SocketDir,

		StoreMaxMessageBytes: s.cfg.Store.MaxRequestBytes(),
	}
	if s.cfg.Sandbox != nil {
		p, err := s.cfg.Sandbox.Prepare(e.Name)
		if err != nil {
			in.deleteGroup()
			return nil, fmt.Errorf("plugin %s %s: %w", e.Name, e.Version, err)
		}
		spec.Sandbox = p
		in.sandbox = p.Status(CgroupOf(s.cfg.Governance, in.group))
		for _, part := range in.sandbox {
			if !part.Enforced {
				s.log.Warn("plugin sandbox not fully enforced", "plugin", e.Name, "version", e.Version, "part", part.Part, "reason", part.Reason)
			}
		}
	}
	inst, err := launch.Start(ctx, spec)
	if err != nil {
		if ok, _ := in.oomKilled(); ok {
			err = fmt.Errorf("%w (oom-killed at its %s memory limit)", err, in.memoryLimit())
		}
		in.deleteGroup()
		return nil, err
	}
	in.Instance = inst
	fail := func(err error) (*instance, error) {
		reason := err
		if ok, _ := in.oomKilled(); ok {
			reason = fmt.Errorf("%w (oom-killed at its %s memory limit)", err, in.memoryLimit())
		}
		in.stop(context.Background())
		return nil, reason
	}

	role := s.storeRole(e.Name)
	srv := store.Bind(store.NewServer(s.cfg.Store), store.Binding{Namespace: e.Name, Rate: s.cfg.StoreRate, Burst: s.cfg.StoreBurst,
		Role: func() store.Role { return s.storeRole(e.Name) }})
	cctx, cancel := context.WithTimeout(ctx, m.Health.HealthyDeadline.Duration)
	defer cancel()
	if err := inst.Setup(cctx, srv, &pluginv1.ConfigureRequest{
		ConfigJson: m.Config, Node: s.cfg.Node, Namespace: e.Name, InstanceId: id,
		Role: storeToPluginRole(role.Kind), Epoch: role.Epoch,
	}); err != nil {
		return fail(err)
	}
	if err := s.healthGate(cctx, in, minHealthy, progress); err != nil {
		return fail(err)
	}
	files, err := router.LoadDescriptors(cctx, inst.Conn, m.Services)
	if err != nil {
		return fail(fmt.Errorf("plugin %s %s: reading its service descriptors: %w", e.Name, e.Version, err))
	}
	in.backend = &router.Backend{Plugin: e.Name, Version: e.Version, InstanceID: id, Conn: inst.Conn, Files: files, Dial: inst.DialRaw}
	go s.monitor(in)
	return in, nil
}

// storeRole is the role the plugin's instances on this node write to the
// store with: their assignment's, unless a lost lease fenced it (fence.go).
func (s *Supervisor) storeRole(name string) store.Role {
	if r, ok := s.fenced(name); ok {
		return r
	}
	s.mu.Lock()
	m, ok := s.plugins[name]
	s.mu.Unlock()
	if !ok {
		return store.Role{}
	}
	return m.storeRole()
}

func storeToPluginRole(k store.RoleKind) pluginv1.Role {
	switch k {
	case store.RoleActive:
		return pluginv1.Role_ROLE_ACTIVE
	case store.RoleStandby:
		return pluginv1.Role_ROLE_STANDBY
	case store.RoleFenced:
		return pluginv1.Role_ROLE_FENCED
	}
	return pluginv1.Role_ROLE_UNSPECIFIED
}

// healthGate waits until in has passed every health check for minHealthy.
func (s *Supervisor) healthGate(ctx context.Context, in *instance, minHealthy time.Duration, progress func(string)) error {
	h := in.entry.Manifest.Health
	var healthySince time.Time
	var lastErr error
	poll := 50 * time.Millisecond
	for {
		err := s.check(ctx, in, h.Timeout.Duration)
		now := time.Now()
		switch {
		case err == nil && healthySince.IsZero():
			healthySince = now
		case err != nil:
			healthySince, lastErr = time.Time{}, err
		}
		if !healthySince.IsZero() && now.Sub(healthySince) >= minHealthy {
			// Running since its first healthy check: the observation says
			// so, and the rollout controller counts the gate it passed
			// here towards its own (area roll).
			in.mu.Lock()
			in.state, in.since = operatorv1.InstanceState_INSTANCE_STATE_RUNNING, healthySince
			in.mu.Unlock()
			return nil
		}
		if progress != nil && !healthySince.IsZero() {
			progress(gateProgress(now.Sub(healthySince), minHealthy))
		}
		select {
		case <-in.Exited():
			return fmt.Errorf("plugin %s %s was %w: it %s during its health gate", in.entry.Name, in.entry.Version, errNotHealthy, in.ExitReason())
		case <-ctx.Done():
			why := "no health check passed"
			if lastErr != nil {
				why = "last check: " + lastErr.Error()
			}
			return fmt.Errorf("plugin %s %s was %w within its healthy_deadline %s (%s)",
				in.entry.Name, in.entry.Version, errNotHealthy, h.HealthyDeadline.Duration, why)
		case <-time.After(poll):
		}
		if poll < h.Interval.Duration/4 {
			poll *= 2
		}
	}
}

// gateProgress is the health gate's progress message; the phase it is
// shown under (health-gating) already says what is going on.
func gateProgress(healthyFor, minHealthy time.Duration) string {
	return fmt.Sprintf("healthy for %s of %s", healthyFor.Round(100*time.Millisecond), minHealthy)
}

// check is one health check: go-plugin's own ping, then the plugin's Health.
func (s *Supervisor) check(ctx context.Context, in *instance, timeout time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hr, err := grpc_health_v1.NewHealthClient(in.Conn).Check(cctx, &grpc_health_v1.HealthCheckRequest{Service: "plugin"})
	if err != nil {
		return fmt.Errorf("go-plugin ping: %w", err)
	}
	if hr.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		return fmt.Errorf("go-plugin ping: %s", hr.GetStatus())
	}
	resp, err := in.Lifecycle.Health(cctx, &pluginv1.HealthRequest{})
	if err != nil {
		if cctx.Err() != nil {
			return fmt.Errorf("health check timed out after %s", timeout)
		}
		return fmt.Errorf("health check: %w", err)
	}
	if resp.GetStatus() != pluginv1.HealthStatus_HEALTH_STATUS_SERVING {
		if cctx.Err() != nil {
			// The SDK bounds the plugin's own check by the call's deadline
			// and reports it unhealthy when that passes: a hang, which the
			// SDK's answer beat the host's timer to.
			return fmt.Errorf("health check timed out after %s", timeout)
		}
		msg := resp.GetMessage()
		if msg == "" {
			msg = resp.GetStatus().String()
		}
		return fmt.Errorf("plugin reports unhealthy: %s", msg)
	}
	return nil
}

// monitor runs in's liveness checks until it stops; after failure_threshold
// failures in a row it reports the last reason on in.unhealthy.
func (s *Supervisor) monitor(in *instance) {
	h := in.entry.Manifest.Health
	t := time.NewTicker(h.Interval.Duration)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-in.done:
			return
		case <-in.Exited():
			return
		case <-t.C:
		}
		err := s.check(context.Background(), in, h.Timeout.Duration)
		if err == nil {
			if failures > 0 {
				in.setState(operatorv1.InstanceState_INSTANCE_STATE_RUNNING)
			}
			failures = 0
			continue
		}
		failures++
		s.log.Warn("health check failed", "plugin", in.entry.Name, "version", in.entry.Version,
			"failures", failures, "threshold", h.FailureThreshold, "error", err)
		if failures < h.FailureThreshold {
			in.setState(operatorv1.InstanceState_INSTANCE_STATE_UNHEALTHY)
			continue
		}
		select {
		case in.unhealthy <- fmt.Sprintf("%d health checks failed in a row (threshold %d), last: %v", failures, h.FailureThreshold, err):
		default:
		}
		return
	}
}

// drainAndStop retires in: it waits up to drain_timeout for the calls in
// flight, asks the plugin to drain, then stops it. It returns how many calls
// were cut off by the timeout.
func (s *Supervisor) drainAndStop(ctx context.Context, in *instance, progress func(inFlight int64, left time.Duration)) int64 {
	in.setState(operatorv1.InstanceState_INSTANCE_STATE_DRAINING)
	timeout := in.entry.Manifest.Upgrade.DrainTimeout.Duration
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var cut int64
	if in.backend != nil {
		done := make(chan int64, 1)
		go func() { done <- in.backend.Wait(dctx) }()
		t := time.NewTicker(200 * time.Millisecond)
	wait:
		for {
			if progress != nil {
				progress(in.backend.InFlight(), time.Until(deadlineOf(dctx)))
			}
			select {
			case cut = <-done:
				break wait
			case <-t.C:
			}
		}
		t.Stop()
	}
	if dctx.Err() == nil {
		_, _ = in.Lifecycle.Drain(dctx, &pluginv1.DrainRequest{TimeoutMs: time.Until(deadlineOf(dctx)).Milliseconds()})
	}
	if cut > 0 && in.backend != nil {
		// Calls the plugin finishes between the timeout and its stop were
		// not cut: count those that end without its answer.
		in.backend.Cut()
		in.stop(ctx)
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		cut = in.backend.CutOff(cctx)
		ccancel()
		return cut
	}
	in.stop(ctx)
	return cut
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// stop ends the process and removes its cgroup.
func (in *instance) stop(ctx context.Context) {
	in.doneOnce.Do(func() { close(in.done) })
	if in.Instance != nil {
		in.Instance.Stop(ctx)
	}
	in.deleteGroup()
	in.setState(operatorv1.InstanceState_INSTANCE_STATE_STOPPED)
}

// kill ends the process at once and removes its cgroup.
func (in *instance) kill() {
	in.doneOnce.Do(func() { close(in.done) })
	if in.group != nil {
		_ = in.group.Kill()
	}
	if in.Instance != nil {
		in.Instance.Kill()
	}
	in.deleteGroup()
}

func (in *instance) deleteGroup() {
	if in.group != nil {
		_ = in.group.Delete()
	}
}

func (in *instance) oomKilled() (bool, error) {
	if in.group == nil {
		return false, nil
	}
	if in.Instance != nil && !in.Signaled(syscall.SIGKILL) {
		return false, nil
	}
	return in.group.OOMKilled()
}

func (in *instance) memoryLimit() string { return in.limitOf(governance.ResourceMemory) }

func (in *instance) limitOf(resource string) string {
	for _, l := range in.limits {
		if l.Resource == resource {
			return l.Limit
		}
	}
	return "configured"
}

// exitReason explains why in's process ended, naming an OOM kill and its
// limit, and a pids limit that refused forks: a Go plugin that cannot make
// a thread aborts with no more than an exit status to show for it.
func (in *instance) exitReason() string {
	if ok, _ := in.oomKilled(); ok {
		return fmt.Sprintf("oom-killed: memory limit %s reached", in.memoryLimit())
	}
	reason := in.ExitReason()
	if in.group != nil {
		if u, err := in.group.Usage(); err == nil && u.PidsLimitHits > 0 {
			reason += fmt.Sprintf("; pids limit %s reached (%d forks refused)", in.limitOf(governance.ResourcePids), u.PidsLimitHits)
		}
	}
	return reason
}
