package acl

import (
	"errors"
	"testing"
)

func TestParseRules(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		ok        bool
	}{
		{"empty", ``, true},
		{"every kind", `
plugin "counter" { policy = "write" }
plugin_prefix "" { policy = "read" }
namespace "counter" { policy = "read" }
namespace_prefix "app-" { policy = "write" }
operator = "read"
acl = "write"
`, true},
		{"call on a plugin", `plugin "echo" { policy = "call" }`, true},
		{"call on a namespace", `namespace "echo" { policy = "call" }`, false},
		{"unknown level", `plugin "echo" { policy = "admin" }`, false},
		{"unknown block", `service "echo" { policy = "read" }`, false},
		{"unknown attribute", `keyring = "write"`, false},
		{"rule given twice", "plugin \"a\" { policy = \"read\" }\nplugin \"a\" { policy = \"write\" }", false},
		{"operator call", `operator = "call"`, false},
		{"not HCL", `{"plugin": 1`, false},
		{"missing policy", `plugin "a" {}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRules(tc.src)
			if (err == nil) != tc.ok {
				t.Fatalf("ParseRules: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidRules) {
				t.Fatalf("error %v does not wrap ErrInvalidRules", err)
			}
		})
	}
}

func mustRules(t *testing.T, src string) *Rules {
	t.Helper()
	r, err := ParseRules(src)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestAuthorizer(t *testing.T) {
	a := newAuthorizer(false, []*Rules{
		mustRules(t, `
plugin "counter" { policy = "write" }
plugin_prefix "" { policy = "read" }
plugin_prefix "sec" { policy = "deny" }
namespace "counter" { policy = "write" }
namespace_prefix "" { policy = "read" }
operator = "read"
`),
		mustRules(t, `
plugin "echo" { policy = "call" }
plugin "counter" { policy = "read" }
plugin "secrets" { policy = "write" }
namespace "blocked" { policy = "deny" }
`),
		mustRules(t, `namespace "blocked" { policy = "write" }`),
	})
	for _, tc := range []struct {
		what string
		got  Level
		want Level
	}{
		{"exact rule, higher of two policies", a.Plugin("counter"), Write},
		{"exact rule beats the prefix", a.Plugin("echo"), Call},
		{"empty prefix", a.Plugin("other"), Read},
		{"longest prefix", a.Plugin("second"), Deny},
		{"exact beats a deny prefix", a.Plugin("secrets"), Write},
		{"namespace exact", a.Namespace("counter"), Write},
		{"namespace prefix", a.Namespace("echo"), Read},
		{"a deny in any policy wins", a.Namespace("blocked"), Deny},
		{"_sys is management's alone", a.Namespace(SystemNamespace), Deny},
		{"no namespace", a.Namespace(""), Deny},
		{"operator", a.Operator(), Read},
		{"acl unset", a.ACL(), Deny},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %v, want %v", tc.what, tc.got, tc.want)
		}
	}
	// A policy that does not mention operator leaves another's grant.
	b := newAuthorizer(false, []*Rules{mustRules(t, `operator = "write"`), mustRules(t, `acl = "read"`)})
	if b.Operator() != Write || b.ACL() != Read {
		t.Errorf("operator %v acl %v, want write and read", b.Operator(), b.ACL())
	}
	m := newAuthorizer(true, nil)
	if !m.Management() || m.Namespace(SystemNamespace) != Write || m.Plugin("x") != Write || m.Operator() != Write || m.ACL() != Write {
		t.Error("management is not allowed everything")
	}
}

func TestBuiltinReadOnlyParses(t *testing.T) {
	r := mustRules(t, builtinRules[ReadOnly])
	a := newAuthorizer(false, []*Rules{r})
	if a.Plugin("x") != Read || a.Namespace("x") != Read || a.Namespace(SystemNamespace) != Deny || a.Operator() != Read || a.Management() {
		t.Error("read-only grants more or less than reads")
	}
}
