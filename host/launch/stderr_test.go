package launch

import (
	"bytes"
	"strings"
	"testing"

	hclog "github.com/hashicorp/go-hclog"
)

func TestRawStderrLogsWhatIsNotJSON(t *testing.T) {
	var out bytes.Buffer
	w := &rawStderr{log: hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Warn})}
	// go-plugin writes each line, then the newline, in separate writes.
	for _, line := range []string{`{"@level":"info","@message":"hello"}`, "panic: runtime error: index out of range", "", "goroutine 1 [running]:"} {
		w.Write([]byte(line))
		w.Write([]byte{'\n'})
	}
	got := out.String()
	if strings.Contains(got, "hello") {
		t.Errorf("a JSON line was logged again: %q", got)
	}
	for _, want := range []string{"panic: runtime error: index out of range", "goroutine 1 [running]:"} {
		if !strings.Contains(got, want) || !strings.Contains(got, "[WARN]") {
			t.Errorf("%q not logged at warn: %q", want, got)
		}
	}
	if strings.Count(got, "plugin stderr") != 2 {
		t.Errorf("want exactly two lines logged: %q", got)
	}
}
