// Command plughost is the plughost agent and its operator CLI.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/sandbox"
	"github.com/plughost/plughost/store"
)

func main() {
	// A sandboxed plugin starts as this binary run again (the trampoline).
	if sandbox.Init() {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// usageError marks a command line that cannot be run as given (exit 2).
// cmd names the command whose help to point to, when known.
type usageError struct{ msg, cmd string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

// errSilent is returned after the command already said what went wrong.
var errSilent = errors.New("")

// exitCode prints err and maps it to the exit code: 0 ok, 1 error, 2 usage.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "plughost:", ue.msg)
		fmt.Fprintf(stderr, "run '%s' for usage\n", strings.Join(append([]string{"plughost", "help"}, strings.Fields(ue.cmd)...), " "))
		return 2
	}
	if errors.Is(err, errSilent) {
		return 1
	}
	err = store.ExplainMessageSize(err) // the agent's message limit: say what sets it
	if st, ok := status.FromError(err); ok && st.Code() != 0 {
		fmt.Fprintf(stderr, "plughost: %s (%s)\n", st.Message(), st.Code())
		return 1
	}
	fmt.Fprintln(stderr, "plughost:", err)
	return 1
}

const usage = `plughost runs infrastructure services as versioned gRPC plugins.

Usage: plughost <command> [flags] [args]
       plughost help <command> [<subcommand>]

  agent        run a node agent (-dev for a single node on loopback)
  bundle       build, verify or add a plugin bundle
  plugin       list, status, versions, pin, unpin, rollback, restart, history, events
  call         call a plugin method with JSON (SERVICE/METHOD -d JSON)
  store        get, put, delete, list, backup, restore keys (-ns NAMESPACE)
  bench        load generators: call, upgrade, store
  members      list the cluster's members with their raft roles
  nodes        list nodes with their domains, tags, eligibility and what they run
  node         drain, eligible: take a node out of placement and back
  rollout      list, status, pause, resume, abort: cluster-wide version changes
  operator     raft list-peers, remove-peer: repair a cluster's raft configuration
  keygen       make a new gossip encryption key (for agent -encrypt)
  keyring      list, install, use or remove gossip keys on every member
  tls          ca create, cert create: the cluster CA and its certificates
  acl          bootstrap, token, policy: who may do what
  version      print the version

Commands that talk to an agent take -addr (default $PLUGHOST_ADDR, else
127.0.0.1:7400) and -token (default $PLUGHOST_TOKEN, else a dev agent's
own token found on this host); listings take -format json. Flags may stand before or
after a command's arguments; '--' ends them. Exit codes: 0 ok, 1 error,
2 usage.
`

// run is the whole CLI, so tests can drive it in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("no command given")
	}
	if isHelpFlag(args[0]) || args[0] == "help" {
		rest, asked, err := runHelp(args[1:], stdout)
		if !asked || err != nil {
			return err
		}
		args = rest
	}
	err := dispatch(ctx, &cliEnv{stdout: stdout, stderr: stderr}, args[0], args[1:])
	var h *helpRequest
	if errors.As(err, &h) {
		return printHelp(stdout, h)
	}
	var ue *usageError
	if errors.As(err, &ue) && ue.cmd == "" {
		ue.cmd = commandOf(args)
	}
	return err
}

// commandOf is the longest command or subcommand that has help at the
// start of args, or "" when args start with none.
func commandOf(args []string) string {
	name := ""
	for i := range args {
		next := strings.Join(args[:i+1], " ")
		if _, ok := helps[next]; !ok {
			break
		}
		name = next
	}
	return name
}

func dispatch(ctx context.Context, env *cliEnv, cmd string, rest []string) error {
	switch cmd {
	case "agent":
		return runAgent(ctx, env, rest)
	case "bundle":
		return runBundle(ctx, env, rest)
	case "plugin":
		return runPlugin(ctx, env, rest)
	case "call":
		return runCall(ctx, env, rest)
	case "store":
		return runStore(ctx, env, rest)
	case "bench":
		return runBench(ctx, env, rest)
	case "members":
		return runMembers(ctx, env, rest)
	case "nodes":
		return runNodes(ctx, env, rest)
	case "node":
		return runNode(ctx, env, rest)
	case "rollout":
		return runRollout(ctx, env, rest)
	case "operator":
		return runOperator(ctx, env, rest)
	case "keygen":
		return runKeygen(ctx, env, rest)
	case "keyring":
		return runKeyring(ctx, env, rest)
	case "tls":
		return runTLS(ctx, env, rest)
	case "acl":
		return runACL(ctx, env, rest)
	case "reaper":
		return runReaper(ctx, env, rest)
	case "version", "-version", "--version":
		return runVersion(ctx, env, rest)
	}
	return usagef("unknown command %q", cmd)
}
