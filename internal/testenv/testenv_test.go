package testenv

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"
)

func TestWaitForReturnsOnceTheConditionHolds(t *testing.T) {
	n := 0
	WaitFor(t, 5*time.Second, "three polls", func() error {
		n++
		if n < 3 {
			return errors.New("not three")
		}
		return nil
	})
	if n != 3 {
		t.Fatalf("polled %d times, want 3", n)
	}
	start := time.Now()
	Eventually(t, 5*time.Second, "a short wait", func() bool { return time.Since(start) > 20*time.Millisecond })
}

func TestSyncBufferTakesConcurrentWriters(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				_, _ = b.Write([]byte("x"))
			}
		}()
	}
	wg.Wait()
	if got := len(b.String()); got != 800 {
		t.Fatalf("%d bytes, want 800", got)
	}
}

func TestMkdirTempIsRecorded(t *testing.T) {
	dir, err := MkdirTemp("testenv-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	dirsMu.Lock()
	defer dirsMu.Unlock()
	if len(dirs) == 0 || dirs[len(dirs)-1] != dir {
		t.Fatalf("MkdirTemp did not record %s for Main: %v", dir, dirs)
	}
}
