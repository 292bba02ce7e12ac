package cluster

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/serf/serf"
)

// Serf tags carrying a node's identity (area: nodes).
const (
	TagFaultDomain   = "fault_domain"   // the node's fault domain
	TagUpgradeDomain = "upgrade_domain" // the node's upgrade domain
)

// Limits of a node's identity: names, tag keys and values are short
// printable strings, and all of it fits serf's 512 bytes of member
// metadata with room for the tags plughost sets itself.
const (
	MaxDomainLen     = 64
	MaxTagKeyLen     = 32
	MaxTagValueLen   = 64
	MaxOperatorTags  = 16
	MaxTagBytesTotal = 256 // sum of the operator tags' keys and values
)

var (
	namePattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	domainPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$`)
	tagKeyPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,31}$`)
	tagValPattern = regexp.MustCompile(`^[A-Za-z0-9._:/@+-]{1,64}$`)
)

// ReservedTag reports whether key is a serf tag plughost sets itself,
// which an operator's -tag may not use.
func ReservedTag(key string) bool {
	switch key {
	case TagRole, TagAPI, TagRPC, TagRaftState, TagFaultDomain, TagUpgradeDomain:
		return true
	}
	return false
}

// ReservedTags lists the reserved tag keys, sorted, for messages.
func ReservedTags() []string {
	return []string{TagAPI, TagFaultDomain, TagRaftState, TagRole, TagRPC, TagUpgradeDomain}
}

// ValidateNodeName checks a node name: letters, digits, '.', '_' or '-',
// starting with a letter or digit, at most 63 characters.
func ValidateNodeName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("node name %q: use letters, digits, '.', '_' or '-', at most 63, starting with a letter or digit", name)
	}
	return nil
}

// ValidateDomain checks a fault or upgrade domain name; what names the
// setting for the message ("-fault-domain").
func ValidateDomain(what, name string) error {
	if !domainPattern.MatchString(name) {
		return fmt.Errorf("%s %q: use letters, digits, '.', '_', ':', '/' or '-', at most %d, starting with a letter or digit",
			what, name, MaxDomainLen)
	}
	return nil
}

// ValidateTags checks operator tags: keys are letters, digits, '_' or '-'
// starting with a letter (so a placement constraint can name them), values
// letters, digits and '.', '_', ':', '/', '@', '+', '-'; plughost's own
// keys are refused.
func ValidateTags(tags map[string]string) error {
	var errs []error
	total := 0
	for _, k := range slicesSorted(tags) {
		v := tags[k]
		total += len(k) + len(v)
		switch {
		case ReservedTag(k):
			errs = append(errs, fmt.Errorf("tag %q is reserved for plughost (reserved: %s); pick another key", k, strings.Join(ReservedTags(), ", ")))
		case !tagKeyPattern.MatchString(k):
			errs = append(errs, fmt.Errorf("tag key %q: use letters, digits, '_' or '-', at most %d, starting with a letter", k, MaxTagKeyLen))
		case !tagValPattern.MatchString(v):
			errs = append(errs, fmt.Errorf("tag %s=%q: a value is 1 to %d letters, digits or '.', '_', ':', '/', '@', '+', '-'", k, v, MaxTagValueLen))
		}
	}
	if len(tags) > MaxOperatorTags {
		errs = append(errs, fmt.Errorf("%d tags: a node has at most %d", len(tags), MaxOperatorTags))
	}
	if total > MaxTagBytesTotal {
		errs = append(errs, fmt.Errorf("tags take %d bytes of keys and values; at most %d fit the gossip's member metadata", total, MaxTagBytesTotal))
	}
	return errors.Join(errs...)
}

func slicesSorted(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Node is one member's identity and state, as gossip carries it, for
// placement and for the operator's `plughost nodes`.
type Node struct {
	Name          string            `json:"name"`
	FaultDomain   string            `json:"fault_domain"`
	UpgradeDomain string            `json:"upgrade_domain"`
	Tags          map[string]string `json:"tags"`   // operator tags only
	Status        string            `json:"status"` // serf: alive, leaving, left, failed
	APIAddr       string            `json:"api_address"`
	RPCAddr       string            `json:"rpc_address"`
	// Invalid says why the identity the node gossips was refused ("" when
	// it was not): its domains or tags break the rules of ValidateDomain
	// and ValidateTags. Such a node must not be given work.
	Invalid string `json:"invalid,omitempty"`
}

// Alive reports whether gossip sees the node up.
func (n Node) Alive() bool { return n.Status == serf.StatusAlive.String() }

// Nodes lists every member with a valid name, sorted by name, with the
// identity it gossips. Tags from peers are checked as hostile input: a
// node whose domains or tags break the rules keeps only its name, status
// and addresses, and says why in Invalid.
func (c *Cluster) Nodes() []Node {
	members := c.serf.Members()
	out := make([]Node, 0, len(members))
	for _, m := range members {
		if ValidateNodeName(m.Name) != nil {
			continue
		}
		out = append(out, nodeOf(m.Name, m.Status.String(), m.Tags))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// nodeOf reads a member's identity from its serf tags. A domain not
// gossiped (an agent from before domains) is the node's name.
func nodeOf(name, status string, tags map[string]string) Node {
	n := Node{Name: name, Status: status, Tags: map[string]string{}}
	if a := tags[TagAPI]; validAddr(a) {
		n.APIAddr = a
	}
	if a := tags[TagRPC]; validAddr(a) {
		n.RPCAddr = a
	}
	fd, ud := tags[TagFaultDomain], tags[TagUpgradeDomain]
	if fd == "" {
		fd = name
	}
	if ud == "" {
		ud = name
	}
	op := map[string]string{}
	for k, v := range tags {
		if !ReservedTag(k) {
			op[k] = v
		}
	}
	err := errors.Join(ValidateDomain(TagFaultDomain, fd), ValidateDomain(TagUpgradeDomain, ud), ValidateTags(op))
	if err != nil {
		n.Invalid = err.Error()
		return n
	}
	n.FaultDomain, n.UpgradeDomain = fd, ud
	maps.Copy(n.Tags, op)
	return n
}

// validAddr reports whether a is a host:port with a numeric port.
func validAddr(a string) bool {
	if len(a) > 300 {
		return false
	}
	_, p, err := net.SplitHostPort(a)
	if err != nil {
		return false
	}
	_, err = strconv.ParseUint(p, 10, 16)
	return err == nil
}
