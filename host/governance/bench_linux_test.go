package governance

import (
	"fmt"
	"os/exec"
	"testing"
)

// The two benchmarks start and wait for a trivial child (true); their
// difference is what governance adds to a plugin start.

func BenchmarkStartWithoutCgroup(b *testing.B) {
	trueBin := lookTrue(b)
	for b.Loop() {
		cmd := exec.Command(trueBin)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStartWithCgroup(b *testing.B) {
	requireRoot(b)
	trueBin := lookTrue(b)
	m := newTestManager(b, Config{})
	requireCgroups(b, m)
	limits := Limits{MemoryBytes: 64 << 20, CPU: 0.5, Pids: 64}
	b.Logf("mode %s", m.Mode())

	// What a plugin start costs in all: make the cgroup, start into it,
	// and remove it after the child ends.
	b.Run("new+start+delete", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			g, err := m.New(fmt.Sprintf("bench-%d", i), limits)
			if err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(trueBin)
			if err := g.Start(cmd, cmd.Start); err != nil {
				b.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
			if err := g.Delete(); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The placement alone: start into a cgroup that exists.
	b.Run("start", func(b *testing.B) {
		g, err := m.New("bench-start", limits)
		if err != nil {
			b.Fatal(err)
		}
		defer g.Delete()
		for b.Loop() {
			cmd := exec.Command(trueBin)
			if err := g.Start(cmd, cmd.Start); err != nil {
				b.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func lookTrue(b *testing.B) string {
	p, err := exec.LookPath("true")
	if err != nil {
		b.Skipf("no true binary: %v", err)
	}
	return p
}
