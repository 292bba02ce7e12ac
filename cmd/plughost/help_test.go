package main

import (
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run 'go test -run %s -update' to write it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update to accept):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// TestHelp: for every command and subcommand, `plughost help CMD [SUB]`
// and `plughost CMD [SUB] -h` print the same help to stdout and exit 0:
// a synopsis with the positional arguments, the flags and an example.
func TestHelp(t *testing.T) {
	t.Setenv("PLUGHOST_ADDR", "")
	names := make([]string, 0, len(helps))
	for name := range helps {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			words := strings.Fields(name)
			out, errOut, code := runCLI(t, append([]string{"help"}, words...)...)
			if code != 0 || errOut != "" {
				t.Fatalf("help %s: exit %d, stderr %q", name, code, errOut)
			}
			for _, h := range []string{"-h", "-help", "--help"} {
				out2, errOut, code := runCLI(t, append(words, h)...)
				if code != 0 || errOut != "" || out2 != out {
					t.Fatalf("%s %s: exit %d, stderr %q, stdout differs from 'help %s':\n%s", name, h, code, errOut, name, out2)
				}
			}
			if !strings.HasPrefix(out, "Usage: plughost "+name) || !strings.Contains(out, "\nExample:\n  plughost "+words[0]) {
				t.Fatalf("help %s lacks the synopsis or the example:\n%s", name, out)
			}
			if synopsis, _, _ := strings.Cut(out, "\n"); !strings.HasSuffix(synopsis, helps[name].args) {
				t.Fatalf("help %s: the synopsis %q lacks the arguments %q", name, synopsis, helps[name].args)
			}
			golden(t, filepath.Join("help", strings.ReplaceAll(name, " ", "-")+".golden"), out)
		})
	}
	t.Run("top level", func(t *testing.T) {
		out, _, code := runCLI(t, "help")
		for _, args := range [][]string{{"-h"}, {"--help"}, {"help", "-h"}} {
			if out2, _, code2 := runCLI(t, args...); code2 != 0 || out2 != out {
				t.Fatalf("%q: exit %d, printed %q", args, code2, out2)
			}
		}
		if code != 0 {
			t.Fatalf("help: exit %d", code)
		}
		golden(t, "help/plughost.golden", out)
	})
	// Every group's help lists each of its subcommands, and each has help.
	for group, subs := range groups {
		out, _, _ := runCLI(t, append([]string{"help"}, strings.Fields(group)...)...)
		for _, s := range subs {
			if _, ok := helps[group+" "+s]; !ok || !strings.Contains(out, "\n  "+s+"  ") {
				t.Errorf("help %s does not list %s, or %s %s has no help", group, s, group, s)
			}
		}
	}
}

// TestHelpOfUnknownCommand is a usage error, not the top-level help.
func TestHelpOfUnknownCommand(t *testing.T) {
	for _, args := range [][]string{{"help", "frobnicate"}, {"help", "store", "frobnicate"}, {"store", "frobnicate", "-h"}} {
		out, errOut, code := runCLI(t, args...)
		if code != 2 || out != "" || !strings.Contains(errOut, "frobnicate") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 naming frobnicate", args, code, out, errOut)
		}
	}
}
