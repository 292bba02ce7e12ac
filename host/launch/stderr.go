package launch

import (
	"bytes"

	hclog "github.com/hashicorp/go-hclog"
)

// rawStderr receives every line a plugin writes to stderr (go-plugin writes
// the line, then a newline). The SDK logs JSON, which go-plugin re-logs at
// its level; anything else — a Go panic, a runtime abort, a plugin that is
// not built on the SDK — go-plugin only logs at debug, so rawStderr logs it
// at warn where an operator sees it.
type rawStderr struct {
	log  hclog.Logger
	line []byte
}

// maxStderrLine bounds what one unterminated line may buffer.
const maxStderrLine = 64 << 10

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
	if len(line) == 0 || line[0] == '{' {
		return
	}
	w.log.Warn("plugin stderr", "line", string(line))
}
