package sandbox

import (
	"fmt"
	"os"

	"github.com/moby/sys/reexec"
)

func init() { reexec.Register(trampolineName, trampoline) }

// Init runs the trampoline when this process was started as one, and then
// never returns; otherwise it returns false at once. Call it first thing in
// main, and in TestMain of tests that start sandboxed plugins:
//
//	func main() {
//		if sandbox.Init() {
//			return
//		}
//		...
//	}
func Init() bool { return reexec.Init() }

// trampoline is the process the agent starts for a sandboxed plugin: it
// takes away what the plugin must not have and executes it in place (the
// same pid, the same cgroup). Whatever fails ends it with status 126 and
// the reason on stderr, which the agent shows as the plugin's start error.
func trampoline() {
	err := enter(os.Args[1:])
	fmt.Fprintf(os.Stderr, "plughost sandbox: %v\n", err)
	os.Exit(126)
}
