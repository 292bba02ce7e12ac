package bundle

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/mod/semver"
)

// Bounds checked by Validate.
const (
	maxVersionLen = 128
	maxExecLen    = 255
	maxMemoryMB   = 1 << 24 // 16 TiB: keeps memory_mb<<20 far from overflowing
	maxCPU        = 1024
	maxPids       = 1 << 22 // the kernel's highest pid_max
)

var (
	nameRE    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	sha256RE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	serviceRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$`)
)

// reservedBy says why no plugin may declare service s, or "" when one may:
// the agent or go-plugin already serves it under that name. go-plugin
// registers its broker, controller, stdio, health and reflection services
// on every plugin's gRPC server before the plugin registers its own, and
// the agent checks the plugin process with that Health (service "plugin"):
// a plugin reports its own health through sdk.HealthChecker, which the
// agent shows in plugin status, /v1/health and the metrics. The agent
// serves reflection on its API address itself, listing every plugin's
// services. Every other grpc.* service, grpc.testing.TestService for one,
// is a plugin's to serve.
func reservedBy(s string) string {
	switch s {
	case "plugin.GRPCBroker", "plugin.GRPCController", "plugin.GRPCStdio":
		return "go-plugin serves it on every plugin's gRPC server"
	case "grpc.health.v1.Health":
		return "go-plugin serves it on every plugin's gRPC server and the agent checks the plugin process with it; report the plugin's own health with sdk.HealthChecker"
	case "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection":
		return "the agent serves reflection on its API address for every plugin's services"
	}
	if strings.HasPrefix(s, "plughost.") {
		return "the plughost.* packages are the agent's own APIs"
	}
	return ""
}

// ValidName reports whether name is a valid plugin name:
// ^[a-z][a-z0-9-]{0,62}$.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// ValidVersion reports whether v is strict semver 2.0:
// MAJOR.MINOR.PATCH[-prerelease][+build], no leading "v", no leading zeros.
func ValidVersion(v string) bool {
	if len(v) > maxVersionLen || !semver.IsValid("v"+v) {
		return false
	}
	// x/mod/semver also accepts the shorthands v1 and v1.2; only the
	// canonical form is strict semver.
	core, _, _ := strings.Cut(v, "+")
	return semver.Canonical("v"+v) == "v"+core
}

// CompareVersions compares two valid versions by semver precedence: -1 if
// a < b, 0 if equal (build metadata is ignored), +1 if a > b.
func CompareVersions(a, b string) int {
	return semver.Compare("v"+a, "v"+b)
}

// Validate checks that every field of m is present and within bounds. Call
// SetDefaults first: Validate does not fill anything in, so a zero duration,
// mode or strategy is an error.
func (m *Manifest) Validate() error {
	for _, check := range []func() error{
		m.validateIdentity,
		m.validateContents,
		m.validatePlacement,
		m.validateResources,
		m.validateHealth,
		m.validateUpgrade,
		m.validateConfig,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

func (m *Manifest) validateIdentity() error {
	switch {
	case m.Name == "":
		return manifestError(ErrBadName, `name is missing: add "name", e.g. "counter"`)
	case !ValidName(m.Name):
		return manifestError(ErrBadName, fmt.Sprintf("name %q is invalid: use 1 to 63 lowercase letters, digits and dashes, starting with a letter", m.Name))
	case m.Version == "":
		return manifestError(ErrBadVersion, `version is missing: add "version", strict semver such as "1.2.0"`)
	case len(m.Version) > maxVersionLen:
		return manifestError(ErrBadVersion, fmt.Sprintf("version is longer than %d characters: shorten its prerelease or build part", maxVersionLen))
	case !ValidVersion(m.Version):
		msg := fmt.Sprintf("version %q is not strict semver (MAJOR.MINOR.PATCH, e.g. 1.2.0)", m.Version)
		if strings.HasPrefix(m.Version, "v") || strings.HasPrefix(m.Version, "V") {
			msg += `: drop the leading "v"`
		}
		return manifestError(ErrBadVersion, msg)
	}
	if len(m.APIVersions) == 0 {
		return manifestError(nil, "api_versions is empty: list the plugin API versions the plugin speaks, e.g. [1]")
	}
	for i, v := range m.APIVersions {
		if v < 1 {
			return manifestError(nil, fmt.Sprintf("api_versions: %d is not a plugin API version (they start at 1)", v))
		}
		if slices.Contains(m.APIVersions[:i], v) {
			return manifestError(nil, fmt.Sprintf("api_versions: %d is listed twice: keep one", v))
		}
	}
	return nil
}

func (m *Manifest) validateContents() error {
	const rebuild = "rebuild the bundle with 'plughost bundle build'"
	switch e := m.Executable; {
	case e == "":
		return manifestError(nil, `executable is missing: name the plugin's executable file in the bundle, e.g. "counter"`)
	case e == "." || e == ".." || strings.ContainsAny(e, "/\\\x00") || len(e) > maxExecLen:
		return manifestError(nil, fmt.Sprintf("executable %q must be a plain file name at the top of the bundle, without \"/\"", e))
	case e == ManifestFile:
		return manifestError(nil, fmt.Sprintf("executable cannot be named %s: that is the manifest", ManifestFile))
	}
	switch {
	case m.SHA256 == "":
		return manifestError(nil, "sha256 is missing: "+rebuild)
	case !sha256RE.MatchString(m.SHA256):
		return manifestError(nil, fmt.Sprintf("sha256 %q is not 64 lowercase hex digits: %s", m.SHA256, rebuild))
	}
	if len(m.Services) == 0 {
		return manifestError(nil, `services is empty: list the full gRPC service names the plugin serves, e.g. ["counter.v1.CounterService"]`)
	}
	for i, s := range m.Services {
		if !serviceRE.MatchString(s) {
			return manifestError(nil, fmt.Sprintf("services: %q is not a full gRPC service name such as \"counter.v1.CounterService\"", s))
		}
		if slices.Contains(m.Services[:i], s) {
			return manifestError(nil, fmt.Sprintf("services: %q is listed twice: keep one", s))
		}
		if why := reservedBy(s); why != "" {
			return manifestError(nil, fmt.Sprintf("services: %q is reserved: %s", s, why))
		}
	}
	return nil
}

func (m *Manifest) validatePlacement() error { return m.Placement.Validate() }

func (m *Manifest) validateResources() error {
	r := m.Resources
	switch {
	case r.MemoryMB < 0 || r.MemoryMB > maxMemoryMB:
		return manifestError(nil, fmt.Sprintf("resources.memory_mb %d must be between 0 and %d (0 means the agent's default)", r.MemoryMB, maxMemoryMB))
	case math.IsNaN(r.CPU) || r.CPU < 0 || r.CPU > maxCPU:
		return manifestError(nil, fmt.Sprintf("resources.cpu %s must be between 0 and %d cores (0 means the agent's default)", strconv.FormatFloat(r.CPU, 'g', -1, 64), maxCPU))
	case r.Pids < 0 || r.Pids > maxPids:
		return manifestError(nil, fmt.Sprintf("resources.pids %d must be between 0 and %d (0 means the agent's default)", r.Pids, maxPids))
	}
	return nil
}

func (m *Manifest) validateHealth() error {
	h := m.Health
	if err := positive("health.interval", h.Interval); err != nil {
		return err
	}
	if err := positive("health.timeout", h.Timeout); err != nil {
		return err
	}
	if h.Timeout.Duration > h.Interval.Duration {
		return manifestError(nil, fmt.Sprintf("health.timeout %v must not be longer than health.interval %v", h.Timeout, h.Interval))
	}
	if h.FailureThreshold < 1 {
		return manifestError(nil, fmt.Sprintf("health.failure_threshold %d must be at least 1", h.FailureThreshold))
	}
	if h.MinHealthyTime.Duration < 0 {
		return manifestError(nil, fmt.Sprintf("health.min_healthy_time %v must not be negative", h.MinHealthyTime))
	}
	if err := positive("health.healthy_deadline", h.HealthyDeadline); err != nil {
		return err
	}
	if h.MinHealthyTime.Duration >= h.HealthyDeadline.Duration {
		return manifestError(nil, fmt.Sprintf("health.min_healthy_time %v must be shorter than health.healthy_deadline %v", h.MinHealthyTime, h.HealthyDeadline))
	}
	return nil
}

// maxParallel bounds upgrade.max_parallel.
const maxParallel = 1024

func (m *Manifest) validateUpgrade() error {
	u := m.Upgrade
	switch u.Strategy {
	case StrategyOverlap, StrategyRestart:
	default:
		return manifestError(nil, fmt.Sprintf("upgrade.strategy %q is not one of %q, %q", u.Strategy, StrategyOverlap, StrategyRestart))
	}
	if err := positive("upgrade.drain_timeout", u.DrainTimeout); err != nil {
		return err
	}
	if u.Policy != UpgradeAuto && u.Policy != UpgradeManual {
		return manifestError(nil, fmt.Sprintf("upgrade.policy %q is not one of %q, %q", u.Policy, UpgradeAuto, UpgradeManual))
	}
	if u.MaxParallel < 1 || u.MaxParallel > maxParallel {
		return manifestError(nil, fmt.Sprintf("upgrade.max_parallel %d must be between 1 and %d (upgrade domains updated at once)", u.MaxParallel, maxParallel))
	}
	if u.MinHealthyTime.Duration < 0 {
		return manifestError(nil, fmt.Sprintf("upgrade.min_healthy_time %v must not be negative", u.MinHealthyTime))
	}
	if err := positive("upgrade.healthy_deadline", u.HealthyDeadline); err != nil {
		return err
	}
	if u.MinHealthyTime.Duration >= u.HealthyDeadline.Duration {
		return manifestError(nil, fmt.Sprintf("upgrade.min_healthy_time %v must be shorter than upgrade.healthy_deadline %v", u.MinHealthyTime, u.HealthyDeadline))
	}
	if err := positive("upgrade.progress_deadline", u.ProgressDeadline); err != nil {
		return err
	}
	if u.ProgressDeadline.Duration < u.HealthyDeadline.Duration {
		return manifestError(nil, fmt.Sprintf("upgrade.progress_deadline %v must not be shorter than upgrade.healthy_deadline %v", u.ProgressDeadline, u.HealthyDeadline))
	}
	switch u.FailureAction {
	case FailureRollback, FailurePause:
	default:
		return manifestError(nil, fmt.Sprintf("upgrade.failure_action %q is not one of %q, %q", u.FailureAction, FailureRollback, FailurePause))
	}
	return nil
}

func (m *Manifest) validateConfig() error {
	if len(m.Config) == 0 {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(m.Config, &obj); err != nil || obj == nil {
		return manifestError(nil, "config must be a JSON object, e.g. {}")
	}
	return nil
}

func positive(field string, d Duration) error {
	if d.Duration <= 0 {
		return manifestError(nil, fmt.Sprintf("%s %v must be positive", field, d))
	}
	return nil
}

// CheckAPIVersions returns an error wrapping ErrAPIVersion when m and the
// agent, which speaks the plugin API versions host, share no version.
func CheckAPIVersions(m *Manifest, host []int) error {
	if m == nil {
		return newError("", ErrAPIVersion, "no manifest to check plugin API versions of")
	}
	if detail := apiMismatch(m, host); detail != "" {
		return newError("", ErrAPIVersion, fmt.Sprintf("bundle %s %s %s", m.Name, m.Version, detail))
	}
	return nil
}

// apiMismatch returns "" when m and host share a plugin API version, else
// what differs and the fix, starting with "speaks".
func apiMismatch(m *Manifest, host []int) string {
	for _, v := range m.APIVersions {
		if slices.Contains(host, v) {
			return ""
		}
	}
	fix := "rebuild the plugin with an SDK for API " + orList(host)
	if len(host) == 0 || len(m.APIVersions) == 0 || slices.Max(m.APIVersions) > slices.Max(host) {
		fix += " or upgrade the agent"
	}
	return fmt.Sprintf("speaks plugin API %s, this agent speaks %s: %s", intList(m.APIVersions), intList(host), fix)
}

// intList writes [1, 2].
func intList(vs []int) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.Itoa(v)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// orList writes 1, 2 or 3.
func orList(vs []int) string {
	switch len(vs) {
	case 0:
		return "(none)"
	case 1:
		return strconv.Itoa(vs[0])
	}
	s := intList(vs[:len(vs)-1])
	return s[1:len(s)-1] + " or " + strconv.Itoa(vs[len(vs)-1])
}
