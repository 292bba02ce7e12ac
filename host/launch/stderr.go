package launch

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"

	hclog "github.com/hashicorp/go-hclog"
)

// rawStderr receives every line a plugin writes to stderr (go-plugin writes
// the line, then a newline). The SDK logs JSON, which go-plugin re-logs at
// its level; anything else — a Go panic, a runtime abort, a plugin that is
// not built on the SDK — go-plugin only logs at debug, so rawStderr logs it
// at warn where an operator sees it. It keeps the last lines, so that a
// plugin that dies during start can be reported with what it said.
type rawStderr struct {
	log  hclog.Logger
	line []byte

	mu    sync.Mutex // guards last and panic, which tail reads
	last  []string   // the last tailLines lines, oldest first
	panic string     // the first "panic: " or "fatal error: " line
}

// maxStderrLine bounds what one unterminated line may buffer.
const maxStderrLine = 64 << 10

// tailLines and maxTailLine bound what tail reports.
const (
	tailLines   = 3
	maxTailLine = 300
)

func (w *rawStderr) Write(p []byte) (int, error) {
	for _, b := range p {
		if b != '\n' {
			if len(w.line) < maxStderrLine {
				w.line = append(w.line, b)
			}
			continue
		}
		w.flush()
	}
	return len(p), nil
}

func (w *rawStderr) flush() {
	line := bytes.TrimSpace(w.line)
	w.line = w.line[:0]
	if len(line) == 0 {
		return
	}
	w.keep(line)
	if line[0] == '{' {
		return
	}
	w.log.Warn("plugin stderr", "line", string(line))
}

// keep remembers line for tail: the text of an SDK log line (its message
// and error), any other line as it is.
func (w *rawStderr) keep(line []byte) {
	text := string(line)
	if line[0] == '{' {
		var rec map[string]any
		if json.Unmarshal(line, &rec) != nil {
			return
		}
		msg, _ := rec["@message"].(string)
		if e, ok := rec["error"].(string); ok && e != "" {
			msg += ": " + e
		}
		if lvl, _ := rec["@level"].(string); msg == "" || (lvl != "error" && lvl != "warn") {
			return // the SDK's info and debug lines say nothing about a failure
		}
		text = msg
	}
	if len(text) > maxTailLine {
		text = text[:maxTailLine] + "…"
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.panic == "" && (strings.HasPrefix(text, "panic: ") || strings.HasPrefix(text, "fatal error: ")) {
		w.panic = text
	}
	w.last = append(w.last, text)
	if len(w.last) > tailLines {
		w.last = w.last[len(w.last)-tailLines:]
	}
}

// tail is what the plugin last said on stderr, on one line: a Go panic's
// first line if it panicked (the last lines are its stack), else its last
// lines. It is empty if the plugin said nothing worth repeating.
func (w *rawStderr) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.panic != "" {
		return w.panic
	}
	return strings.Join(w.last, " | ")
}
