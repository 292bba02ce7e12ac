package local

import (
	"regexp"
	"strings"
	"testing"
)

func TestNamespaceNames(t *testing.T) {
	shape := regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	tests := []struct {
		ns         string
		plugin, ok bool // valid for a plugin; valid in a request
	}{
		{"counter", true, true},
		{"a", true, true},
		{"a-1-b", true, true},
		{"z" + strings.Repeat("9", 62), true, true},
		{"z" + strings.Repeat("9", 63), false, false},
		{SystemNamespace, false, true},
		{"", false, false},
		{"1abc", false, false},
		{"-abc", false, false},
		{"Abc", false, false},
		{"ab_c", false, false},
		{"ab c", false, false},
		{"ab/c", false, false},
		{"ab\x00", false, false},
		{"_system", false, false},
		{"é", false, false},
	}
	for _, tt := range tests {
		if got := ValidPluginNamespace(tt.ns) == nil; got != tt.plugin {
			t.Errorf("ValidPluginNamespace(%q) valid = %v, want %v", tt.ns, got, tt.plugin)
		}
		if got := ValidNamespace(tt.ns) == nil; got != tt.ok {
			t.Errorf("ValidNamespace(%q) valid = %v, want %v", tt.ns, got, tt.ok)
		}
		if isPluginName(tt.ns) != shape.MatchString(tt.ns) {
			t.Errorf("isPluginName(%q) disagrees with the pattern", tt.ns)
		}
	}
}
