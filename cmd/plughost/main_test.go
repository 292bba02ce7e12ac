package main

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"

	hclog "github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/agent"
)

// TestUsageErrorsExitTwo runs command lines that cannot run as given: each
// must exit 2 and say what is wrong, without contacting any agent.
func TestUsageErrorsExitTwo(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"agent", "extra"}, "agent takes no arguments"},
		{[]string{"agent", "-tag", "novalue"}, `-tag "novalue": use key=value`},
		{[]string{"agent", "-log-level", "loud"}, `-log-level "loud"`},
		{[]string{"bundle"}, "use build, verify, add, keygen or sign"},
		{[]string{"bundle", "build"}, "give one plugin executable"},
		{[]string{"bundle", "add"}, "give one bundle"},
		{[]string{"plugin"}, "use init, list, status"},
		{[]string{"plugin", "pin", "echo"}, "plugin pin takes NAME VERSION"},
		{[]string{"plugin", "status"}, "plugin status takes NAME"},
		{[]string{"plugin", "list", "-format", "yaml"}, `-format "yaml"`},
		{[]string{"plugin", "list", "-nope"}, "flag provided but not defined"},
		{[]string{"call"}, "give SERVICE/METHOD"},
		{[]string{"call", "justaservice"}, "give SERVICE/METHOD"},
		{[]string{"store", "get", "k"}, "give -ns NAMESPACE"},
		{[]string{"store", "get", "-ns", "echo"}, "store get takes KEY"},
		{[]string{"store", "list", "-ns", "echo", "-consistency", "eventual"}, `-consistency "eventual"`},
		{[]string{"bench", "call", "-clients", "0"}, "-clients"},
		{[]string{"bench", "call", "-rounds", "0"}, "-rounds"},
		{[]string{"agent", "-max-procs", "x"}, "-max-procs"},
		{[]string{"bench", "call", "-duration", "50ms", "-rounds", "10"}, "-rounds"},
		{[]string{"bench", "upgrade"}, "give -to VERSION"},
		{[]string{"bench", "nothing"}, "bench nothing"},
		{[]string{"keygen", "extra"}, "keygen takes no arguments"},
		{[]string{"keyring"}, "give exactly one of -list, -install KEY, -use KEY or -remove KEY"},
		{[]string{"keyring", "-list", "-use", "k"}, "give exactly one of"},
		{[]string{"keyring", "-install"}, "flag needs an argument"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), tc.args, &out, &errOut)
			code := exitCode(err, &errOut)
			if code != 2 {
				t.Fatalf("exit %d, want 2 (err %v)", code, err)
			}
			if !strings.Contains(errOut.String(), tc.want) {
				t.Fatalf("stderr %q does not say %q", errOut.String(), tc.want)
			}

		})
	}
}

func TestVersionAndHelpExitZero(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"help"}} {
		var out, errOut bytes.Buffer
		if code := exitCode(run(context.Background(), args, &out, &errOut), &errOut); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut.String())
		}
		if !strings.Contains(out.String(), "plughost") {
			t.Fatalf("%v printed %q", args, out.String())
		}
	}
}

// TestHelpOfCommands: what issue 11 found. -h is a request, answered on
// stdout with exit 0; 'help CMD' is CMD's help, not the top-level one.
func TestHelpOfCommands(t *testing.T) {
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"store", "-h"}, []string{"Usage: plughost store <command>", "restore"}},
		{[]string{"help", "store"}, []string{"Usage: plughost store <command>", "restore"}},
		{[]string{"store", "get", "-h"}, []string{"Usage: plughost store get [flags] KEY", "-ns", "Example:"}},
		{[]string{"bench", "-h"}, []string{"store"}},
		{[]string{"call", "-h"}, []string{"SERVICE/METHOD", "-d", "Example:"}},
		{[]string{"plugin", "pin", "-help"}, []string{"NAME VERSION", "-detach", "Example:"}},
	}
	for _, tc := range cases {
		var out, errOut bytes.Buffer
		code := exitCode(run(context.Background(), tc.args, &out, &errOut), &errOut)
		if code != 0 {
			t.Errorf("%q: exit %d, want 0 (stderr %q)", tc.args, code, errOut.String())
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%q printed no %q:\n%s", tc.args, w, out.String())
			}
		}
	}
}

// TestUsageErrorPointsToTheCommandsHelp: a usage error ends by naming the
// help of the command it is about.
func TestUsageErrorPointsToTheCommandsHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		hint string
	}{
		{[]string{"store", "get", "-ns", "echo"}, "run 'plughost help store get' for usage\n"},
		{[]string{"plugin", "pin", "echo"}, "run 'plughost help plugin pin' for usage\n"},
		{[]string{"store", "frobnicate"}, "run 'plughost help store' for usage\n"},
		{[]string{"frobnicate"}, "run 'plughost help' for usage\n"},
	} {
		var out, errOut bytes.Buffer
		code := exitCode(run(context.Background(), tc.args, &out, &errOut), &errOut)
		if code != 2 || !strings.HasSuffix(errOut.String(), tc.hint) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 ending %q", tc.args, code, errOut.String(), tc.hint)
		}
	}
}

// TestAgentUnreachableExitsOne: a command that cannot reach its agent is an
// error (1), not a usage error, and names the address.
func TestAgentUnreachableExitsOne(t *testing.T) {
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5e9)
	defer cancel()
	err := run(ctx, []string{"plugin", "list", "-addr", "127.0.0.1:1"}, &out, &errOut)
	if code := exitCode(err, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(errOut.String(), "127.0.0.1:1") {
		t.Fatalf("stderr %q does not name the address", errOut.String())
	}
}

// The agent runs its Go code on half the CPUs by default, on what
// max_procs says when set, and leaves GOMAXPROCS from the environment be.
func TestSetMaxProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	available := runtime.GOMAXPROCS(0)
	log := hclog.NewNullLogger()

	t.Setenv("GOMAXPROCS", "")
	setMaxProcs(agent.Config{}, log)
	if got, want := runtime.GOMAXPROCS(0), agent.DefaultMaxProcs(available); got != want {
		t.Errorf("default: GOMAXPROCS %d, want %d", got, want)
	}
	setMaxProcs(agent.Config{MaxProcs: 3}, log)
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Errorf("max_procs 3: GOMAXPROCS %d", got)
	}
	runtime.GOMAXPROCS(5) // as the runtime reads it from the environment
	t.Setenv("GOMAXPROCS", "5")
	setMaxProcs(agent.Config{MaxProcs: 3}, log)
	if got := runtime.GOMAXPROCS(0); got != 5 {
		t.Errorf("GOMAXPROCS=5 in the environment: GOMAXPROCS %d", got)
	}
}
