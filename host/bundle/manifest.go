// Package bundle reads, verifies, builds and sets aside plugin bundles: a
// directory or a .tar.gz holding plugin.json (the manifest) and the plugin's
// executable.
//
// Open and Verify refuse anything that is not exactly right, with an error
// that wraps one of the sentinels in errors.go and tells the operator what to
// fix. Build writes bundles that Open accepts, byte for byte the same for the
// same inputs.
package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ManifestFile is the name of the manifest at the top of every bundle.
const ManifestFile = "plugin.json"

// MaxManifestSize is the largest plugin.json accepted, config included.
const MaxManifestSize = 1 << 20

// Upgrade strategies.
const (
	StrategyOverlap = "overlap" // start the new version beside the old, then switch
	StrategyRestart = "restart" // drain and stop the old version, then start the new
)

// Manifest is the content of plugin.json. Decode it with ParseManifest, which
// rejects unknown fields, applies the defaults and validates it.
type Manifest struct {
	Name        string          `json:"name"`
	Version     string          `json:"version"`
	APIVersions []int           `json:"api_versions"`
	Executable  string          `json:"executable"`
	SHA256      string          `json:"sha256"`
	Services    []string        `json:"services"`
	Placement   Placement       `json:"placement"`
	Resources   Resources       `json:"resources"`
	Health      Health          `json:"health"`
	Upgrade     Upgrade         `json:"upgrade"`
	Config      json.RawMessage `json:"config"` // passed to the plugin verbatim
}

// Resources are the limits of one instance. Zero means the agent's default.
type Resources struct {
	MemoryMB int64   `json:"memory_mb,omitempty"`
	CPU      float64 `json:"cpu,omitempty"` // cores, fractions allowed
	Pids     int64   `json:"pids,omitempty"`
}

// Health says how the agent probes an instance and gates it before routing
// calls to it.
type Health struct {
	Interval         Duration `json:"interval"`
	Timeout          Duration `json:"timeout"`
	FailureThreshold int      `json:"failure_threshold"`
	MinHealthyTime   Duration `json:"min_healthy_time"`
	HealthyDeadline  Duration `json:"healthy_deadline"`
}

// Upgrade rollout policies and failure actions.
const (
	UpgradeAuto     = "auto"     // a newer bundle of an unpinned plugin is rolled out by itself
	UpgradeManual   = "manual"   // only an operator's pin starts a rollout
	FailureRollback = "rollback" // a failed rollout is rolled back on every node
	FailurePause    = "pause"    // a failed rollout waits for an operator
)

// Upgrade says how the agent swaps one version of the plugin for another
// on a node (Strategy, DrainTimeout), and how the cluster rolls a new
// version out, one upgrade domain at a time (the rest).
type Upgrade struct {
	Strategy     string   `json:"strategy"` // StrategyOverlap or StrategyRestart
	DrainTimeout Duration `json:"drain_timeout"`
	// Policy: UpgradeAuto or UpgradeManual.
	Policy string `json:"policy"`
	// MaxParallel is how many upgrade domains are updated at once.
	MaxParallel int `json:"max_parallel"`
	// MinHealthyTime is how long every up node of a domain must report the
	// new version healthy, without a break, before the next domain starts;
	// HealthyDeadline is how long after the domain's start that may take.
	// Both default to the health block's.
	MinHealthyTime  Duration `json:"min_healthy_time"`
	HealthyDeadline Duration `json:"healthy_deadline"`
	// ProgressDeadline is the longest a rollout may go without progress
	// (a domain starting or finishing); then it pauses for an operator.
	ProgressDeadline Duration `json:"progress_deadline"`
	// FailureAction: FailureRollback or FailurePause.
	FailureAction string `json:"failure_action"`
}

// Duration is a time.Duration written in JSON as a Go duration string such
// as "2s" or "1m30s".
type Duration struct {
	time.Duration
}

// Dur returns d as a Duration.
func Dur(d time.Duration) Duration { return Duration{d} }

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"2s\", got %s", b)
	}
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as \"2s\" or \"1m30s\"", s)
	}
	return v, nil
}

// SetDefaults fills every field left out of plugin.json (or zero) with its
// default. It is the only place defaults are decided.
func (m *Manifest) SetDefaults() {
	m.Placement.SetDefaults()
	h := &m.Health
	setDuration(&h.Interval, 2*time.Second)
	setDuration(&h.Timeout, time.Second)
	if h.FailureThreshold == 0 {
		h.FailureThreshold = 3
	}
	setDuration(&h.MinHealthyTime, 5*time.Second)
	setDuration(&h.HealthyDeadline, 60*time.Second)
	if m.Upgrade.Strategy == "" {
		m.Upgrade.Strategy = StrategyOverlap
	}
	u := &m.Upgrade
	setDuration(&u.DrainTimeout, 30*time.Second)
	if u.Policy == "" {
		u.Policy = UpgradeAuto
	}
	if u.MaxParallel == 0 {
		u.MaxParallel = 1
	}
	setDuration(&u.MinHealthyTime, h.MinHealthyTime.Duration)
	setDuration(&u.HealthyDeadline, h.HealthyDeadline.Duration)
	setDuration(&u.ProgressDeadline, 10*time.Minute)
	if u.FailureAction == "" {
		u.FailureAction = FailureRollback
	}
	if isNull(m.Config) {
		m.Config = json.RawMessage("{}")
	}
}

func setDuration(d *Duration, def time.Duration) {
	if d.Duration == 0 {
		d.Duration = def
	}
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

// ParseManifest decodes plugin.json strictly (unknown, duplicate or
// wrongly-cased fields and trailing data are errors), applies the defaults and
// validates the result.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, manifestError(nil, ManifestFile+" is empty: write the manifest as a JSON object")
	}
	if len(data) > MaxManifestSize {
		return nil, manifestError(nil, fmt.Sprintf("%s is larger than %s: keep config small", ManifestFile, formatBytes(MaxManifestSize)))
	}
	if err := checkStrict(data); err != nil {
		return nil, err
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, decodeError(err)
	}
	m.SetDefaults()
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// decodeError turns an encoding/json error into a manifest error.
func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "(top level)"
		}
		e := manifestError(nil, fmt.Sprintf("%s: %s: want %s, got %s", ManifestFile, field, jsonKind(te.Type.Kind().String()), te.Value))
		e.cause = err
		return e
	}
	e := manifestError(nil, fmt.Sprintf("%s: %v", ManifestFile, err))
	e.cause = err
	return e
}

// jsonKind names a Go kind the way a JSON author thinks of it.
func jsonKind(kind string) string {
	switch kind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "string":
		return "a string"
	case "slice", "array":
		return "a list"
	case "struct", "map":
		return "an object"
	case "bool":
		return "true or false"
	}
	return kind
}

// Marshal returns m as indented JSON with the fields in a fixed order, ready
// to be written as plugin.json.
func (m *Manifest) Marshal() ([]byte, error) {
	c := *m
	if isNull(c.Config) {
		c.Config = json.RawMessage("{}")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&c); err != nil {
		return nil, fmt.Errorf("encode %s: %w", ManifestFile, err)
	}
	return buf.Bytes(), nil
}

// formatBytes writes n in the largest binary unit that divides it evenly
// enough to read well.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
