package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// cmdHelp is what `plughost help CMD` and `plughost CMD -h` print besides
// the flags, which come from the command's own flag set.
type cmdHelp struct {
	args    string // positional arguments in the synopsis, e.g. "NAME VERSION"
	about   string // what the command does; its first line is its summary
	example string // one command line, maybe with a comment
}

// groups lists the subcommands of the commands that have them, in the
// order their help shows them.
var groups = map[string][]string{
	"bundle":        {"build", "verify", "add", "keygen", "sign"},
	"plugin":        {"init", "list", "status", "versions", "pin", "unpin", "rollback", "restart", "history", "events"},
	"store":         {"get", "put", "delete", "list", "backup", "restore"},
	"bench":         {"call", "upgrade", "store", "failover", "rollout"},
	"operator":      {"raft"},
	"node":          {"drain", "eligible"},
	"rollout":       {"list", "status", "pause", "resume", "abort"},
	"operator raft": {"list-peers", "remove-peer"},
	"tls":           {"ca", "cert"},
	"tls ca":        {"create"},
	"tls cert":      {"create"},
	"acl":           {"bootstrap", "token", "policy"},
	"acl token":     {"create", "list", "read", "delete"},
	"acl policy":    {"create", "list", "read", "delete"},
}

// helps holds the help of every command and subcommand, by the name its
// flag set carries.
var helps = map[string]cmdHelp{
	"agent": {
		about: `Run a node agent: it registers bundles, runs their plugins, routes calls to
them and serves the operator and store APIs. -dev runs a single node on
loopback with one raft voter.`,
		example: "plughost agent -dev -data-dir ./plughost-data",
	},
	"bundle": {
		about:   "Build, verify, add or sign a plugin bundle, or make a publisher key.",
		example: "plughost bundle build -o bundles/ ./greeter",
	},
	"bundle build": {
		args: "EXECUTABLE|DIR",
		about: `Build a bundle, <name>-<version>.tar.gz, from a plugin executable (or a
directory holding exactly one). The executable is started once to learn its
name, version and services. Stamp the version at build time with
-ldflags "-X main.version=1.2.3"; a binary without one is bundled as
0.0.0-dev, with a warning.`,
		example: "plughost bundle build -o bundles/ -memory-mb 64 ./greeter",
	},
	"bundle verify": {
		args: "BUNDLE...",
		about: `Check bundles' manifests, checksums and plugin API versions, and say who
signed each: a signature that does not verify fails. With -trusted-key, a
bundle must be signed by one of those keys, as an agent with trusted_keys
requires.`,
		example: "plughost bundle verify -trusted-key acme.pub bundles/greeter-1.0.0.tar.gz",
	},
	"bundle keygen": {
		about: `Make an ed25519 publisher key pair: PREFIX.key, the private key (PEM
PKCS#8, mode 0600), and PREFIX.pub, the public key (PEM PKIX) that agents
list in trusted_keys. Prints the key id.`,
		example: "plughost bundle keygen -o acme",
	},
	"bundle sign": {
		args: "BUNDLE",
		about: `Sign a bundle with a publisher's private key: the signature, plugin.sig,
covers plugin.json and the executable's sha256, and goes into the bundle
(the archive is rewritten with it; a directory gets the file). An agent with
trusted_keys runs only bundles signed by one of its keys.`,
		example: "plughost bundle sign -key acme.key bundles/greeter-1.0.0.tar.gz",
	},
	"bundle add": {
		args: "BUNDLE",
		about: `Upload a bundle to the agent, which verifies and registers it. An unpinned
plugin moves to its highest registered version.`,
		example: "plughost bundle add bundles/greeter-1.1.0.tar.gz",
	},
	"plugin": {
		about:   "List plugins, see their state and versions, and pin, unpin, roll back or restart them.",
		example: "plughost plugin status greeter",
	},
	"plugin init": {
		args: "NAME",
		about: `Write a new plugin module: its proto, buf config, main, server, a test on
the SDK's in-memory store and a Makefile with pinned tools. Then build it
with make generate, go mod tidy and make test in the new directory.`,
		example: "plughost plugin init -module github.com/acme/greeter greeter",
	},
	"plugin list": {
		about: `List the plugins with their desired and pinned versions and their instances
on every node of the cluster (node, version, role, state, health, since),
as each node reports them.`,
		example: "plughost plugin list -format json",
	},
	"plugin status": {
		args: "NAME",
		about: `Show a plugin's state: its instances on every node of the cluster, what
placement could not place (and why), and this node's instance in detail:
limits and sandbox enforced or not (and why), usage.`,
		example: "plughost plugin status greeter",
	},
	"plugin versions": {
		args:    "NAME",
		about:   "List a plugin's registered versions, marking the running, desired and pinned one.",
		example: "plughost plugin versions greeter",
	},
	"plugin pin": {
		args: "NAME VERSION",
		about: `Pin a plugin to a registered version. For a plugin that runs, this starts a
cluster rollout (one upgrade domain at a time, health-gated), which the
command follows, a line a change, until it completes (exit 0) or rolls
back, pauses or is superseded (exit 1, naming the node and the reason);
-detach returns once the pin is recorded. For a plugin that runs nowhere
yet, it follows the swap on the answering node. A pinned plugin stays on its
version when newer bundles are added, until 'plugin unpin'.`,
		example: "plughost plugin pin greeter 1.0.0",
	},
	"plugin unpin": {
		args: "NAME",
		about: `Remove a plugin's pin: it moves to its highest registered version, and to
newer ones as they are added; for a plugin that runs, by a cluster rollout
the command follows as 'plugin pin' does. A version that failed cluster-wide
is not rolled out again by an unpin: pin it to try it again.`,
		example: "plughost plugin unpin greeter",
	},
	"plugin rollback": {
		args: "NAME",
		about: `Roll a plugin back to the version it ran before, and pin it there ('plugin
unpin' lets it follow the highest version again): the from version of its
newest completed rollout, else the version that served before on a node.
For a plugin that runs, a cluster rollout the command follows as 'plugin
pin' does. -restore-data also restores the plugin's namespace to the
snapshot taken before the rollout it undoes, once the old version serves
again; without it, data is never touched.`,
		example: "plughost plugin rollback -restore-data greeter",
	},
	"plugin restart": {
		args:    "NAME",
		about:   "Restart a plugin's instances; this also clears a crash loop.",
		example: "plughost plugin restart greeter",
	},
	"plugin history": {
		args:    "NAME",
		about:   "Show a plugin's registrations, pins and swaps, with who did them, outcome and reason.",
		example: "plughost plugin history greeter",
	},
	"plugin events": {
		args:    "NAME",
		about:   "Show a plugin's instance events: starts, exits, OOM kills, health failures, backoffs.",
		example: "plughost plugin events -n 20 greeter",
	},
	"call": {
		args: "SERVICE/METHOD",
		about: `Call a plugin method through the agent with a JSON request and print the
reply as JSON, using the descriptors the agent's reflection serves.`,
		example: `plughost call echo.v1.EchoService/Echo -d '{"message":"hi"}'`,
	},
	"store": {
		about:   "Read and write keys of the replicated store, back it up and restore it.",
		example: "plughost store list -ns greeter",
	},
	"store get": {
		args:    "KEY",
		about:   "Print the value of KEY in namespace -ns.",
		example: "plughost store get -ns counter counters/e2e",
	},
	"store put": {
		args:    "KEY VALUE",
		about:   "Set KEY in namespace -ns to VALUE ('-' reads the value from stdin).",
		example: "plughost store put -ns app greeting hello -ttl 1h",
	},
	"store delete": {
		args:    "KEY",
		about:   "Delete KEY in namespace -ns, or with -prefix every key that starts with it.",
		example: "plughost store delete -ns app -prefix sessions/",
	},
	"store list": {
		args:    "[PREFIX]",
		about:   "List the keys of namespace -ns, or those that start with PREFIX.",
		example: "plughost store list -ns app -keys-only users/",
	},
	"store backup": {
		args:    "FILE",
		about:   "Write a checksummed backup of the whole store, every namespace and _sys, to FILE.",
		example: "plughost store backup store.bak",
	},
	"store restore": {
		args: "FILE",
		about: `Replace the whole store with a backup: every namespace, and _sys with the
plugin catalog, pins and history. A damaged file is refused with the data
untouched. A store that holds data is replaced only with -force: without it
the agent refuses, naming what the restore would replace.`,
		example: "plughost store restore -force store.bak",
	},
	"bench": {
		about:   "Load generators: routed calls, an upgrade under load, the store, a singleton's failover, a cluster rollout.",
		example: "plughost bench call -clients 1,64",
	},
	"bench call": {
		about: `Compare echo calls routed through the agent with direct ones. The direct
calls go to an echo process of the agent's version under the same limits;
the two paths take turns. Needs the echo plugin running on the agent.`,
		example: "plughost bench call -clients 1,64 -duration 5s",
	},
	"bench upgrade": {
		about: `Drive steady load at a plugin while pinning -to VERSION, and report what the
swap cost the callers. Without -method the load calls the plugin's first
unary method, found through the agent's reflection, and says which.`,
		example: "plughost bench upgrade -plugin greeter -to 1.1.0 -rate 200",
	},
	"bench failover": {
		about: `Start a cluster of -nodes agents on loopback (its own CA, gossip key, ACLs and
data under a temporary directory), run -exe as a singleton on it, call it
steadily through every node but the one running the active instance, kill
that node's agent and its plugins with SIGKILL, and report the time from the
kill to the first successful call, the calls that failed and those the
routers held meanwhile, and how many active instances there are afterwards.
One run without a standby and one with a warm standby (-standby).`,
		example: "plughost bench failover -exe .dev/exe/counter -d '{\"name\": \"visits\"}'",
	},
	"bench rollout": {
		about: `Start a cluster of -nodes agents on loopback (its own CA, gossip key, ACLs and
data under a temporary directory), each agent in an upgrade domain of its
own, install an every-node plugin, call it steadily through every node, pin
a newer version and follow the cluster rollout to its end. Report the total
time, each domain's, when a failure was seen and the rollout rolled back,
and the calls that failed or were held. -bad makes the target version bad;
-kill-node kills -9 an agent before or during the rollout and starts it
again afterwards, timing its convergence. Without -exe and -target-exe it
builds its plugin from the source tree it runs in.`,
		example: "plughost bench rollout -bad never-healthy -runs 3",
	},
	"bench store": {
		args:    "put|get",
		about:   "Load the store API the way etcd's benchmark tool does and print its summary.",
		example: "plughost bench store put -clients 200 -total 60000 -val-size 256",
	},
	"operator": {
		about:   "Inspect and repair the cluster's raft configuration.",
		example: "plughost operator raft list-peers",
	},
	"operator raft": {
		about:   "List the servers in the raft configuration, or remove one that is gone for good.",
		example: "plughost operator raft remove-peer n4",
	},
	"operator raft list-peers": {
		about: `List the servers in the raft configuration as the answering node sees it,
with each one's address, whether it leads and votes, and what gossip says of
it. It answers without a leader, to diagnose a lost quorum.`,
		example: "plughost operator raft list-peers -format json",
	},
	"operator raft remove-peer": {
		args: "ID",
		about: `Remove a server that is gone for good from the raft configuration, through
the leader. A server that gossip sees alive is refused unless -force: the
leader would add it back. Without a leader, recover with peers.json (see the
README, "Recovering from a lost quorum").`,
		example: "plughost operator raft remove-peer n4",
	},
	"tls": {
		about: `Make the cluster's certificate authority and the certificates of its agents
and CLI users. Agents verify each other with them (raft, forwarding, every
node-to-node connection) and may serve the API with them (-api-tls).`,
		example: "plughost tls ca create",
	},
	"tls ca": {
		about:   "Make the cluster's certificate authority.",
		example: "plughost tls ca create -dir /etc/plughost/tls",
	},
	"tls ca create": {
		about: `Make a new cluster CA (ECDSA P-256): plughost-agent-ca.pem, which every
agent and CLI is given as -ca-file, and plughost-agent-ca-key.pem, which
signs certificates and stays with whoever makes them. Existing files are
never overwritten.`,
		example: "plughost tls ca create -dir /etc/plughost/tls -days 1825",
	},
	"tls cert": {
		about:   "Make a server certificate for an agent or a client certificate for a CLI user.",
		example: "plughost tls cert create -server -node n1",
	},
	"tls cert create": {
		about: `Make a certificate signed by the cluster CA. -server -node NAME writes
plughost-server-NAME.pem and its key for the agent whose -node is NAME: it
names server.NAME.plughost, which is that node's identity to the others,
and localhost, 127.0.0.1 and the -additional-* names, which CLIs dialing an
-api-tls agent check. -client writes plughost-client-N.pem and its key for
a CLI user (-client-cert, -client-key). Keys are written 0600.`,
		example: "plughost tls cert create -server -node n1 -additional-ipaddress 10.0.0.1",
	},
	"keygen": {
		about: `Print a new gossip encryption key: 32 random bytes, base64. Give the same
key to every agent of a cluster with -encrypt (or "encrypt" in the config
file); an agent without it cannot join. Rotate keys with 'plughost keyring'.`,
		example: "plughost keygen",
	},
	"keyring": {
		about: `List, install, use or remove gossip encryption keys on every member at
once, through gossip; each member keeps its keyring in
<data-dir>/serf/keyring, so changes survive restarts. Members that failed
are named, and the command exits 1. To rotate: -install NEW, -use NEW,
-remove OLD.`,
		example: "plughost keyring -install \"$(plughost keygen)\"",
	},
	"acl": {
		about: `Bootstrap access control and manage ACL tokens and policies. Every call to an
agent needs a token; a token's policies say what it may do.`,
		example: "plughost acl token create -description deployer -policy greeter-operator",
	},
	"acl bootstrap": {
		about: `Create the cluster's first management token and print it, once per cluster.
Its secret ID is shown this once: keep it safe. A dev agent bootstraps by
itself and keeps its token in its data dir. Agents started with
-acl-initial-management-file bootstrap with that file's token instead, and
refuse this command, so no one can take a new cluster first.`,
		example: "plughost acl bootstrap",
	},
	"acl token": {
		about:   "Create, list, read or delete ACL tokens.",
		example: "plughost acl token list",
	},
	"acl token create": {
		about: `Create a token with the named policies and print it with its secret ID,
which is shown this once. History records the description as the actor.`,
		example: "plughost acl token create -description ci -policy read-only",
	},
	"acl token list": {
		about:   "List the tokens by accessor ID, without their secrets.",
		example: "plughost acl token list -format json",
	},
	"acl token read": {
		args:    "ACCESSOR_ID",
		about:   "Show one token, without its secret.",
		example: "plughost acl token read 6a1253d2-1785-24fd-91c2-f8e78c745511",
	},
	"acl token delete": {
		args:    "ACCESSOR_ID",
		about:   "Delete a token: calls with its secret are refused from then on.",
		example: "plughost acl token delete 6a1253d2-1785-24fd-91c2-f8e78c745511",
	},
	"acl policy": {
		about:   "Create, list, read or delete ACL policies.",
		example: "plughost acl policy list",
	},
	"acl policy create": {
		about: `Create a policy from rules in HCL. Rules: plugin "NAME" and plugin_prefix
"PREFIX" { policy = "deny|read|call|write" } (read: status, versions,
history, events; call: its gRPC services; write: pin, unpin, rollback,
restart), namespace "NS" and namespace_prefix "PREFIX" { policy =
"deny|read|write" } (store keys; _sys is management's alone), operator =
"read|write" (members, raft peers) and acl = "read|write". Exact rules win
over prefixes, the longest prefix wins, and a deny in any of a token's
policies wins. Bundles and store backup and restore need global-management.`,
		example: "plughost acl policy create -name greeter-operator -rules greeter.hcl",
	},
	"acl policy list": {
		about:   "List the policies, built-in global-management and read-only included.",
		example: "plughost acl policy list",
	},
	"acl policy read": {
		args:    "NAME",
		about:   "Show a policy's rules.",
		example: "plughost acl policy read read-only",
	},
	"acl policy delete": {
		args:    "NAME",
		about:   "Delete a policy no token uses.",
		example: "plughost acl policy delete greeter-operator",
	},
	"members": {
		about:   "List the cluster's members with their serf status, raft role and tags.",
		example: "plughost members -format json",
	},
	"nodes": {
		about: `List every node with its gossip status, fault and upgrade domain, tags,
eligibility for placement (drained or not) and the plugin instances it runs
(plugin@version, with /active or /standby for a singleton).`,
		example: "plughost nodes -format json",
	},
	"node": {
		about:   "Drain a node for maintenance, or make it eligible for placement again.",
		example: "plughost node drain n2",
	},
	"node drain": {
		args: "NODE",
		about: `Drain a node: it gets no new instances, and the placement controller moves
those it runs to other eligible nodes, each new instance serving before the
old one stops. The node stays a member (raft, gossip); watch the move with
plughost nodes, or give -wait to wait until the node runs nothing. Bring the
node back with plughost node eligible.`,
		example: "plughost node drain -wait n2",
	},
	"node eligible": {
		args:    "NODE",
		about:   "Make a drained node eligible for placement again.",
		example: "plughost node eligible n2",
	},
	"rollout": {
		about: `List and follow rollouts, the cluster-wide version changes of plugins that
run: the raft leader moves each one upgrade domain at a time, each domain
gated on its nodes being healthy, and rolls every domain back on failure.
Pause, resume or abort one.`,
		example: "plughost rollout status -follow greeter",
	},
	"rollout list": {
		about: `List rollouts, newest first: from and to version, what started them (pin,
unpin, rollback or a new bundle), their state, how many upgrade domains are
through, and why one failed or which nodes are pending.`,
		example: "plughost rollout list -plugin greeter",
	},
	"rollout status": {
		args: "[ID|PLUGIN]",
		about: `Show a rollout (by ID, or a plugin's newest; without either, the newest of
any plugin): a line per upgrade domain with a progress bar and its nodes'
phases, what remains of the health gates, its failure and pending nodes.
-follow follows it until it is finished: a live view when stdout is a
terminal, a line a change otherwise.`,
		example: "plughost rollout status -follow greeter-3",
	},
	"rollout pause": {
		args: "ID|PLUGIN",
		about: `Pause a running rollout: no further domain moves; what serves keeps
serving. 'rollout resume' goes on, 'rollout abort' rolls it back.`,
		example: "plughost rollout pause greeter",
	},
	"rollout resume": {
		args:    "ID|PLUGIN",
		about:   "Resume a paused rollout, the way it was going (forward, or back).",
		example: "plughost rollout resume greeter",
	},
	"rollout abort": {
		args: "ID|PLUGIN",
		about: `Roll a rollout back now: every domain it moved goes back to the version it
came from, newest first, health-gated as it came. The version is not marked
failed. With -restore-data, the plugin's namespace is restored to the
snapshot the rollout took before its first domain, once the old version
serves again; without it, data is never touched.`,
		example: "plughost rollout abort -restore-data greeter-3",
	},
	"version": {
		about:   "Print the version of plughost and the plugin API versions it speaks.",
		example: "plughost version",
	},
	"reaper": {
		about: `The agent's cgroup reaper, started by the agent itself: once the agent
exits, however, it kills what is left in the agent's own cgroup
<-cgroup-parent>/<-group> and removes it, and the parent if it is empty.`,
		example: "plughost reaper -cgroup-parent plughost -group agent-n1-1a2b3c4d 3<pipe",
	},
}

// helpRequest is returned for -h or -help: run prints the help of the
// command named (with the flags of fs, when it has any) and exits 0.
type helpRequest struct {
	name string
	fs   *flag.FlagSet
}

func (h *helpRequest) Error() string { return h.name + ": help requested" }

func isHelpFlag(s string) bool { return s == "-h" || s == "-help" || s == "--help" }

// subcommand splits args of a command with subcommands into the
// subcommand and its arguments. It answers -h with the group's help.
func subcommand(group string, args []string) (string, []string, error) {
	subs := groups[group]
	if len(args) == 0 {
		return "", nil, usagef("%s: use %s", group, orList(subs))
	}
	if isHelpFlag(args[0]) {
		return "", nil, &helpRequest{name: group}
	}
	if !slices.Contains(subs, args[0]) {
		return "", nil, usagef("%s %s: use %s", group, args[0], orList(subs))
	}
	return args[0], args[1:], nil
}

func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// runHelp is `plughost help [COMMAND [SUBCOMMAND]]`: it asks the command
// itself for its help, so that the flags shown are those it parses.
func runHelp(args []string, stdout io.Writer) ([]string, bool, error) {
	if len(args) == 0 || isHelpFlag(args[0]) {
		fmt.Fprint(stdout, usage)
		return nil, false, nil
	}
	if _, ok := helps[args[0]]; !ok {
		return nil, false, usagef("help: unknown command %q", args[0])
	}
	if len(args) > 3 {
		return nil, false, usagef("help takes a command and maybe a subcommand, got %q", args)
	}
	return append(append([]string{}, args...), "-h"), true, nil
}

// printHelp writes the help of the command h names.
func printHelp(w io.Writer, h *helpRequest) error {
	ch := helps[h.name]
	var b strings.Builder
	subs, isGroup := groups[h.name]
	switch {
	case isGroup:
		fmt.Fprintf(&b, "Usage: plughost %s <command> [flags] [args]\n\n%s\n\nCommands:\n", h.name, ch.about)
		width := 0
		for _, s := range subs {
			width = max(width, len(s))
		}
		for _, s := range subs {
			fmt.Fprintf(&b, "  %-*s  %s\n", width, s, firstSentence(helps[h.name+" "+s].about))
		}
		fmt.Fprintf(&b, "\nRun 'plughost help %s <command>' for its arguments, flags and an example.\n", h.name)
	default:
		synopsis := "plughost " + h.name
		if hasFlags(h.fs) {
			synopsis += " [flags]"
		}
		if ch.args != "" {
			synopsis += " " + ch.args
		}
		fmt.Fprintf(&b, "Usage: %s\n\n%s\n", synopsis, ch.about)
		if hasFlags(h.fs) {
			b.WriteString("\nFlags (before or after the arguments; '--' ends them):\n")
			h.fs.SetOutput(&b)
			h.fs.PrintDefaults()
			h.fs.SetOutput(io.Discard)
		}
	}
	fmt.Fprintf(&b, "\nExample:\n  %s\n", ch.example)
	_, err := io.WriteString(w, b.String())
	return err
}

// firstSentence is what a group's help lists for a subcommand.
func firstSentence(about string) string {
	about = strings.ReplaceAll(about, "\n", " ")
	if i := strings.Index(about, ". "); i >= 0 {
		return about[:i+1]
	}
	return about
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	if fs != nil {
		fs.VisitAll(func(*flag.Flag) { n++ })
	}
	return n > 0
}
