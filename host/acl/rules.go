package acl

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2/hclsimple"
)

// Level is an access level. Levels are ordered: each allows what the ones
// below it allow.
type Level uint8

// Access levels. Call applies to plugins only: it allows calling the
// plugin's own gRPC services through the agent's API.
const (
	Deny Level = iota
	Read
	Call
	Write
)

func (l Level) String() string {
	switch l {
	case Read:
		return "read"
	case Call:
		return "call"
	case Write:
		return "write"
	}
	return "deny"
}

func parseLevel(s string, allowCall bool) (Level, error) {
	switch s {
	case "deny":
		return Deny, nil
	case "read":
		return Read, nil
	case "call":
		if allowCall {
			return Call, nil
		}
	case "write":
		return Write, nil
	}
	if allowCall {
		return Deny, fmt.Errorf("policy %q: use deny, read, call or write", s)
	}
	return Deny, fmt.Errorf("policy %q: use deny, read or write", s)
}

// Rules are a policy's rules, parsed. They mirror Consul's: exact rules
// win over prefix rules, the longest matching prefix wins among those.
type Rules struct {
	Plugins           map[string]Level
	PluginPrefixes    map[string]Level
	Namespaces        map[string]Level
	NamespacePrefixes map[string]Level
	// Operator and ACL are the levels given, or nil when the rules do not
	// mention them.
	Operator *Level
	ACL      *Level
}

// hclRules is the HCL form of Rules, for example:
//
//	plugin "counter" { policy = "write" }
//	plugin_prefix "" { policy = "read" }
//	namespace "counter" { policy = "read" }
//	operator = "read"
//	acl = "read"
type hclRules struct {
	Plugins           []hclRule `hcl:"plugin,block"`
	PluginPrefixes    []hclRule `hcl:"plugin_prefix,block"`
	Namespaces        []hclRule `hcl:"namespace,block"`
	NamespacePrefixes []hclRule `hcl:"namespace_prefix,block"`
	Operator          string    `hcl:"operator,optional"`
	ACL               string    `hcl:"acl,optional"`
}

type hclRule struct {
	Name   string `hcl:"name,label"`
	Policy string `hcl:"policy"`
}

// ErrInvalidRules wraps every refusal of a policy's rules.
var ErrInvalidRules = errors.New("invalid rules")

// ParseRules parses rules in HCL. Unknown blocks and attributes, unknown
// levels and a rule given twice are refused.
func ParseRules(src string) (*Rules, error) {
	var h hclRules
	if err := hclsimple.Decode("rules.hcl", []byte(src), nil, &h); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRules, err)
	}
	r := &Rules{}
	var err error
	set := func(kind string, in []hclRule, allowCall bool) map[string]Level {
		out := make(map[string]Level, len(in))
		for _, x := range in {
			l, perr := parseLevel(x.Policy, allowCall)
			if perr != nil && err == nil {
				err = fmt.Errorf("%w: %s %q: %v", ErrInvalidRules, kind, x.Name, perr)
			}
			if _, dup := out[x.Name]; dup && err == nil {
				err = fmt.Errorf("%w: %s %q is given twice", ErrInvalidRules, kind, x.Name)
			}
			out[x.Name] = l
		}
		return out
	}
	r.Plugins = set("plugin", h.Plugins, true)
	r.PluginPrefixes = set("plugin_prefix", h.PluginPrefixes, true)
	r.Namespaces = set("namespace", h.Namespaces, false)
	r.NamespacePrefixes = set("namespace_prefix", h.NamespacePrefixes, false)
	if err != nil {
		return nil, err
	}
	for _, x := range []struct {
		name string
		in   string
		out  **Level
	}{{"operator", h.Operator, &r.Operator}, {"acl", h.ACL, &r.ACL}} {
		if x.in == "" {
			continue
		}
		l, perr := parseLevel(x.in, false)
		if perr != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalidRules, x.name, perr)
		}
		*x.out = &l
	}
	return r, nil
}

// policyName is what a policy may be called.
var policyName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ValidPolicyName reports why name cannot name a policy, or nil.
func ValidPolicyName(name string) error {
	if !policyName.MatchString(name) {
		return fmt.Errorf("policy name %q: use 1 to 128 letters, digits, '-', '_' or '.', starting with a letter or digit", name)
	}
	return nil
}

// Built-in policies: they exist in every cluster and cannot be changed.
const (
	GlobalManagement = "global-management"
	ReadOnly         = "read-only"
)

// builtinRules are the built-in policies' rules as an operator reads them.
var builtinRules = map[string]string{
	GlobalManagement: "# every permission, the _sys namespace, bundles and store backup/restore included",
	ReadOnly: `plugin_prefix "" { policy = "read" }
namespace_prefix "" { policy = "read" }
operator = "read"
acl = "read"
`,
}

// builtinDescriptions describe the built-in policies.
var builtinDescriptions = map[string]string{
	GlobalManagement: "Builtin Policy that grants unlimited access",
	ReadOnly:         "Builtin Policy that reads everything but the _sys namespace",
}

// Authorizer answers what one token may do: the merge of its policies'
// rules. An explicit deny in any policy wins; otherwise the highest level
// given wins (Consul's merge).
type Authorizer struct {
	management bool
	plugins    table
	namespaces table
	operator   Level
	acl        Level
}

// table is exact and prefix rules for one kind of resource.
type table struct {
	exact    map[string]Level
	prefixes []prefixRule // longest first
}

type prefixRule struct {
	prefix string
	level  Level
}

func (t *table) lookup(name string) Level {
	if l, ok := t.exact[name]; ok {
		return l
	}
	for _, p := range t.prefixes {
		if strings.HasPrefix(name, p.prefix) {
			return p.level
		}
	}
	return Deny
}

// merge combines levels from two policies: deny wins, else the higher.
func merge(a, b Level, aSet bool) Level {
	if !aSet {
		return b
	}
	if a == Deny || b == Deny {
		return Deny
	}
	return max(a, b)
}

// newAuthorizer merges rules; management makes every answer Write.
func newAuthorizer(management bool, rules []*Rules) *Authorizer {
	a := &Authorizer{management: management}
	if management {
		return a
	}
	pe, pp := map[string]Level{}, map[string]Level{}
	ne, np := map[string]Level{}, map[string]Level{}
	mergeInto := func(dst, src map[string]Level) {
		for k, v := range src {
			old, ok := dst[k]
			dst[k] = merge(old, v, ok)
		}
	}
	opSet, aclSet := false, false
	for _, r := range rules {
		mergeInto(pe, r.Plugins)
		mergeInto(pp, r.PluginPrefixes)
		mergeInto(ne, r.Namespaces)
		mergeInto(np, r.NamespacePrefixes)
		if r.Operator != nil {
			a.operator = merge(a.operator, *r.Operator, opSet)
			opSet = true
		}
		if r.ACL != nil {
			a.acl = merge(a.acl, *r.ACL, aclSet)
			aclSet = true
		}
	}
	a.plugins = newTable(pe, pp)
	a.namespaces = newTable(ne, np)
	return a
}

func newTable(exact, prefixes map[string]Level) table {
	t := table{exact: exact}
	for p, l := range prefixes {
		t.prefixes = append(t.prefixes, prefixRule{p, l})
	}
	sort.Slice(t.prefixes, func(i, j int) bool { return len(t.prefixes[i].prefix) > len(t.prefixes[j].prefix) })
	return t
}

// Management reports whether the token may do everything.
func (a *Authorizer) Management() bool { return a.management }

// Plugin is the token's level on plugin name.
func (a *Authorizer) Plugin(name string) Level {
	if a.management {
		return Write
	}
	return a.plugins.lookup(name)
}

// Namespace is the token's level on store namespace ns. The system
// namespace is management's alone: no namespace rule reaches it.
func (a *Authorizer) Namespace(ns string) Level {
	if a.management {
		return Write
	}
	if ns == SystemNamespace || ns == "" {
		return Deny
	}
	return a.namespaces.lookup(ns)
}

// Operator is the token's level on node and cluster operations.
func (a *Authorizer) Operator() Level {
	if a.management {
		return Write
	}
	return a.operator
}

// ACL is the token's level on tokens and policies.
func (a *Authorizer) ACL() Level {
	if a.management {
		return Write
	}
	return a.acl
}
