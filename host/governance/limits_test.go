package governance

import (
	"errors"
	"math"
	"testing"
)

func TestLimitsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    Limits
		ok   bool
	}{
		{"zero means unlimited", Limits{}, true},
		{"all set", Limits{MemoryBytes: 64 << 20, CPU: 0.25, Pids: 256}, true},
		{"cpu at the minimum", Limits{CPU: MinCPU}, true},
		{"many cores", Limits{CPU: 16}, true},
		{"negative memory", Limits{MemoryBytes: -1}, false},
		{"negative cpu", Limits{CPU: -0.5}, false},
		{"cpu below the minimum", Limits{CPU: 0.005}, false},
		{"cpu NaN", Limits{CPU: math.NaN()}, false},
		{"cpu infinite", Limits{CPU: math.Inf(1)}, false},
		{"negative pids", Limits{Pids: -3}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.l.Validate()
			if tc.ok != (err == nil) {
				t.Fatalf("Validate(%+v) = %v, want ok=%v", tc.l, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidLimits) {
				t.Fatalf("Validate error %v is not ErrInvalidLimits", err)
			}
		})
	}
}

func TestLimitStrings(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{formatBytes(64 << 20), "64 MiB"},
		{formatBytes(1 << 30), "1 GiB"},
		{formatBytes(1536 << 20), "1536 MiB"},
		{formatBytes(4096), "4 KiB"},
		{formatBytes(1000), "1000 bytes"},
		{formatBytes(0), "unlimited"},
		{formatCPU(0.25), "0.25 core"},
		{formatCPU(1), "1 core"},
		{formatCPU(2.5), "2.5 cores"},
		{formatCPU(0), "unlimited"},
		{formatPids(256), "256 pids"},
		{formatPids(0), "unlimited"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	if q := cpuQuotaMicros(0.25); q != 25000 {
		t.Errorf("quota of 0.25 core = %d µs per period, want 25000", q)
	}
}

func TestConfigParent(t *testing.T) {
	for _, tc := range []struct {
		parent, want string
	}{
		{"", "/plughost"},
		{"plughost", "/plughost"},
		{"/plughost/", "/plughost"},
		{"agents/plughost", "/agents/plughost"},
		{"/", ""},
		{"..", ""},
		{"a/../../b", ""},
	} {
		got, err := Config{Parent: tc.parent}.parentPath()
		if tc.want == "" {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("parent %q: got %q, %v; want ErrInvalidConfig", tc.parent, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parent %q: got %q, %v; want %q", tc.parent, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		parent, group, want string
	}{
		{"", "", "/plughost"},
		{"", "agent-n1-1f2e3d4c", "/plughost/agent-n1-1f2e3d4c"},
		{"agents/plughost", "a", "/agents/plughost/a"},
		{"", "a/b", ""},
		{"", "..", ""},
	} {
		_, got, err := Config{Parent: tc.parent, Group: tc.group}.ownPath()
		if tc.want == "" {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("parent %q group %q: got %q, %v; want ErrInvalidConfig", tc.parent, tc.group, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parent %q group %q: got %q, %v; want %q", tc.parent, tc.group, got, err, tc.want)
		}
	}
	if _, err := NewManager(Config{Parent: "../escape"}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("NewManager with parent ../escape: %v, want ErrInvalidConfig", err)
	}
}

func TestNewRejects(t *testing.T) {
	m, err := NewManager(Config{Disabled: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", ".", "..", "a/b", "a\x00b", "line\nbreak"} {
		if _, err := m.New(id, Limits{}); !errors.Is(err, ErrInvalidInstanceID) {
			t.Errorf("New(%q): %v, want ErrInvalidInstanceID", id, err)
		}
	}
	if _, err := m.New("ok", Limits{Pids: -1}); !errors.Is(err, ErrInvalidLimits) {
		t.Errorf("New with negative pids: %v, want ErrInvalidLimits", err)
	}
	g, err := m.New("twice", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.New("twice", Limits{}); !errors.Is(err, ErrGroupExists) {
		t.Errorf("second New of a live id: %v, want ErrGroupExists", err)
	}
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.New("twice", Limits{}); err != nil {
		t.Errorf("New after Delete: %v", err)
	}
}

// A group's statuses carry each limit as a number that Set takes back, so
// a process started elsewhere can be given the limits an agent reports.
func TestLimitValuesRoundTrip(t *testing.T) {
	for _, l := range []Limits{
		{MemoryBytes: 256 << 20, CPU: 0.5, Pids: 64},
		{CPU: 2},
		{},
	} {
		var got Limits
		for _, st := range NotEnforced(l, "test") {
			if st.Value == 0 && st.Limit != "unlimited" {
				t.Errorf("%v: %s limit %q has no value", l, st.Resource, st.Limit)
			}
			if err := got.Set(st.Resource, st.Value); err != nil {
				t.Fatal(err)
			}
		}
		if got != l {
			t.Errorf("limits %+v came back as %+v", l, got)
		}
	}
	var l Limits
	if err := l.Set("disk", 1); !errors.Is(err, ErrInvalidLimits) {
		t.Errorf("Set(disk): %v, want ErrInvalidLimits", err)
	}
}
