package agent

import (
	"os"
	"path/filepath"
	"testing"
)

func TestOpenForWrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "echo-1.0.0.tar.gz")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if busy, ok := openForWrite(p); !ok || !busy {
		t.Errorf("open for writing: openForWrite = %v, %v; want true, true", busy, ok)
	}
	r, err := os.Open(p) // a reader does not count
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if busy, ok := openForWrite(p); !ok || busy {
		t.Errorf("closed: openForWrite = %v, %v; want false, true", busy, ok)
	}
}
