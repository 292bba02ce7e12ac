// Package testenv is what the project's tests share: polling with a
// deadline, a buffer that concurrent writers may share, contexts bound to a
// test, and temp dirs that outlive one test but not the test binary.
//
// A package whose tests make such dirs runs them through Main:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// WaitFor polls cond until it returns nil, failing the test with cond's
// last error once within has passed. Polls start 1 ms apart and back off
// to 50 ms, so a condition that holds soon is seen soon, and one that takes
// seconds costs little.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	wait := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", within, what, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// Eventually is WaitFor for a condition that says only whether it holds.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitFor(t, within, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

var errNotYet = errors.New("not yet")

// Context returns a context that ends after d or when the test ends.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// SyncBuffer is a bytes.Buffer that exec's copying goroutines and a test
// may use at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	dirsMu sync.Mutex
	dirs   []string
)

// MkdirTemp makes a temp dir that Main removes once every test of the
// package ran: for what tests share, such as binaries built once. A test's
// own dirs come from t.TempDir.
func MkdirTemp(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	dirsMu.Lock()
	dirs = append(dirs, dir)
	dirsMu.Unlock()
	return dir, nil
}

// Main runs the package's tests, removes the dirs MkdirTemp made, and exits
// with the tests' code.
func Main(m *testing.M) {
	code := m.Run()
	dirsMu.Lock()
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: removing %s: %v\n", d, err)
		}
	}
	dirsMu.Unlock()
	os.Exit(code)
}
