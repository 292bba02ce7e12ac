package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestTableCellsCannotControlTheTerminal: cells carry text from other
// nodes and plugins (an instance's last error, a stored value): a control
// character in one is shown escaped, not sent to the operator's terminal,
// and cannot add lines or columns to the table.
func TestTableCellsCannotControlTheTerminal(t *testing.T) {
	var out bytes.Buffer
	hostile := "plugin said \x1b]0;pwned\x07\x1b[2J\rhello\nNODE\tFAKE\u202e"
	if err := table(&out, []string{"NODE", "ERROR"}, [][]string{{"n1", hostile}, {"n2", "fine: \"echo\" ok"}}); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if strings.ContainsAny(got, "\x1b\x07\r\u202e") {
		t.Errorf("a control character reached the output: %q", got)
	}
	if lines := strings.Count(got, "\n"); lines != 3 {
		t.Errorf("%d lines, want 3 (header and two rows):\n%s", lines, got)
	}
	for _, want := range []string{`plugin said \x1b]0;pwned\a\x1b[2J\rhello\nNODE\tFAKE\u202e`, `fine: "echo" ok`} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
