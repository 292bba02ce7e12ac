package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// runCLI runs the CLI in-process as main would and returns what it printed
// and its exit code.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code = exitCode(run(ctx, args, &out, &errOut), &errOut)
	return out.String(), errOut.String(), code
}

// TestParseInterspersed: parse takes flags before, between and after the
// positional arguments, stops at "--" and keeps a lone "-" positional.
func TestParseInterspersed(t *testing.T) {
	cases := []struct {
		args     []string
		s        string
		b        bool
		wantArgs []string
	}{
		{[]string{"a", "-s", "x", "b"}, "x", false, []string{"a", "b"}},
		{[]string{"-s", "x", "a", "b", "-b"}, "x", true, []string{"a", "b"}},
		{[]string{"a", "--", "-s", "x"}, "", false, []string{"a", "-s", "x"}},
		{[]string{"-b", "--", "a", "-s", "x"}, "", true, []string{"a", "-s", "x"}},
		{[]string{"-s", "--", "a", "-b"}, "--", true, []string{"a"}}, // "--" as -s's value
		{[]string{"-s=--", "a", "--", "-b"}, "--", false, []string{"a", "-b"}},
		{[]string{"a", "-", "-s", "x"}, "x", false, []string{"a", "-"}},
		{[]string{"--s", "x", "a"}, "x", false, []string{"a"}},
		{nil, "", false, nil},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			s := fs.String("s", "", "")
			b := fs.Bool("b", false, "")
			if err := parse(fs, tc.args); err != nil {
				t.Fatal(err)
			}
			if *s != tc.s || *b != tc.b || !slices.Equal(fs.Args(), tc.wantArgs) {
				t.Fatalf("-s %q -b %v args %q, want -s %q -b %v args %q", *s, *b, fs.Args(), tc.s, tc.b, tc.wantArgs)
			}
		})
	}
}

// TestFlagsAfterArguments gives every command and subcommand a flag after
// its positional arguments: the flag must take effect. An agent address
// nothing listens on shows -addr was read (the error names it); a bad
// value shows the flag was parsed (exit 2 naming it); an unknown flag is
// refused by name where a command has no flag to show it with.
func TestFlagsAfterArguments(t *testing.T) {
	t.Setenv("PLUGHOST_ADDR", "")
	const nowhere = "127.0.0.1:1"
	file := filepath.Join(t.TempDir(), "some.tar.gz")
	if err := os.WriteFile(file, []byte("not a bundle"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		want string
	}{
		// The command line: -d after the method is honoured.
		{[]string{"call", "-addr", nowhere, "echo.v1.EchoService/Echo", "-d", "@/nonexistent/request.json"}, 1, "/nonexistent/request.json"},
		{[]string{"call", "echo.v1.EchoService/Echo", "-addr", nowhere}, 1, nowhere},
		{[]string{"call", "-addr", nowhere, "echo.v1.EchoService/Echo", "-timeout", "soon"}, 2, "-timeout"},
		{[]string{"agent", "extra", "-max-procs", "all"}, 2, "-max-procs"},
		{[]string{"bundle", "build", "./greeter", "-memory-mb", "lots"}, 2, "-memory-mb"},
		{[]string{"bundle", "verify", file, "-nope"}, 2, "-nope"},
		{[]string{"bundle", "add", file, "-addr", nowhere}, 1, nowhere},
		{[]string{"plugin", "list", "extra", "-format", "yaml"}, 2, "-format"},
		{[]string{"plugin", "status", "echo", "-addr", nowhere}, 1, nowhere},
		{[]string{"plugin", "versions", "echo", "-addr", nowhere}, 1, nowhere},
		{[]string{"plugin", "pin", "echo", "1.0.0", "-addr", nowhere}, 1, nowhere},
		{[]string{"plugin", "pin", "echo", "1.0.0", "-detach=maybe"}, 2, "-detach"},
		{[]string{"plugin", "unpin", "echo", "-addr", nowhere}, 1, nowhere},
		{[]string{"plugin", "rollback", "echo", "-addr", nowhere}, 1, nowhere},
		{[]string{"plugin", "restart", "echo", "-addr", nowhere}, 1, nowhere},
		{[]string{"plugin", "history", "echo", "-addr", nowhere}, 1, nowhere},
		{[]string{"plugin", "events", "echo", "-n", "many"}, 2, "-n"},
		{[]string{"plugin", "events", "echo", "-addr", nowhere}, 1, nowhere},
		{[]string{"store", "get", "k", "-ns", "app", "-addr", nowhere}, 1, nowhere},
		{[]string{"store", "get", "k", "-ns", "app", "-consistency", "eventual"}, 2, "-consistency"},
		{[]string{"store", "put", "k", "v", "-ns", "app", "-addr", nowhere}, 1, nowhere},
		{[]string{"store", "put", "k", "v", "-ns", "app", "-ttl", "long"}, 2, "-ttl"},
		{[]string{"store", "delete", "k", "-ns", "app", "-prefix", "-addr", nowhere}, 1, nowhere},
		{[]string{"store", "list", "pre", "-ns", "app", "-addr", nowhere}, 1, nowhere},
		{[]string{"store", "list", "pre", "-ns", "app", "-limit", "few"}, 2, "-limit"},
		{[]string{"store", "backup", filepath.Join(t.TempDir(), "b.bak"), "-addr", nowhere}, 1, nowhere},
		{[]string{"store", "restore", file, "-addr", nowhere}, 1, nowhere},
		{[]string{"bench", "call", "extra", "-clients", "none"}, 2, "-clients"},
		{[]string{"bench", "upgrade", "extra", "-rate", "fast"}, 2, "-rate"},
		{[]string{"bench", "store", "put", "-clients", "0"}, 2, "-clients"},
		{[]string{"members", "extra", "-format", "yaml"}, 2, "-format"},
		{[]string{"nodes", "extra", "-format", "yaml"}, 2, "-format"},
		{[]string{"node", "drain", "n2", "-addr", nowhere}, 1, nowhere},
		{[]string{"node", "drain", "n2", "-wait", "-timeout", "soon"}, 2, "-timeout"},
		{[]string{"node", "eligible", "n2", "-addr", nowhere}, 1, nowhere},
		{[]string{"version", "extra", "-nope"}, 2, "-nope"},
		{[]string{"reaper", "extra", "-nope"}, 2, "-nope"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, errOut, code := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d naming %q", code, errOut, tc.code, tc.want)
			}
		})
	}
}

// TestFlagOfAnotherSubcommandIsRefused: each store subcommand takes only
// its own flags, so one meant for another is refused by name, not ignored.
func TestFlagOfAnotherSubcommandIsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"store", "get", "-ns", "app", "k", "-ttl", "1h"},
		{"store", "backup", "f", "-ns", "app"},
		{"store", "put", "-ns", "app", "k", "v", "-prefix"},
	} {
		_, errOut, code := runCLI(t, args...)
		flagName := args[len(args)-1]
		if args[len(args)-2] == "-ttl" || args[len(args)-2] == "-ns" {
			flagName = args[len(args)-2]
		}
		if code != 2 || !strings.Contains(errOut, "flag provided but not defined: "+flagName) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 naming %s", args, code, errOut, flagName)
		}
	}
}
