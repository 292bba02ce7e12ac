package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
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
		{[]string{"bundle"}, "use build, verify or add"},
		{[]string{"bundle", "build"}, "give one plugin executable"},
		{[]string{"bundle", "add"}, "give one bundle"},
		{[]string{"plugin"}, "use list, status"},
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
		{[]string{"bench", "call", "-duration", "50ms", "-rounds", "10"}, "-rounds"},
		{[]string{"bench", "upgrade"}, "give -to VERSION"},
		{[]string{"bench", "nothing"}, "bench nothing"},
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
