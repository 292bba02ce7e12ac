package install

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkFetch fetches a 16 MiB bundle from a peer (over an in-memory
// connection) and installs it: the archive built by the server, streamed,
// checked and opened by the intake.
func BenchmarkFetch(b *testing.B) {
	w := newWorld(b)
	w.size = 16 << 20
	n1 := w.node("n1", 4)
	w.installOn(n1, "greeter", "1.2.0")
	e := w.entry("greeter", "1.2.0")
	dir := b.TempDir()
	var events []string
	f := w.fetcher("n2", filepath.Join(dir, "plugins"), &events)
	defer f.Close()
	b.SetBytes(int64(w.size))
	b.ResetTimer()
	for b.Loop() {
		if err := f.Fetch(context.Background(), e, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.RemoveAll(filepath.Join(dir, "plugins")); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
