package test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The acceptance tests of issue #15 (test/placement_*_test.go) run five
// agents in three fault domains:
//
//	n1 fd1 disk=ssd   n2 fd1   n3 fd2 disk=ssd   n4 fd2   n5 fd3
var domainOf = map[string]string{"n1": "fd1", "n2": "fd1", "n3": "fd2", "n4": "fd2", "n5": "fd3"}

// newDomainCluster starts the five agents above.
func newDomainCluster(t *testing.T) []*ClusterAgent {
	t.Helper()
	return NewClusterEach(t, 5, func(i int) []string {
		node := fmt.Sprint("n", i+1)
		args := []string{"-fault-domain", domainOf[node]}
		if node == "n1" || node == "n3" {
			args = append(args, "-tag", "disk=ssd")
		}
		return args
	})
}

// agentsByName indexes agents by node name.
func agentsByName(agents []*ClusterAgent) map[string]*ClusterAgent {
	m := map[string]*ClusterAgent{}
	for _, a := range agents {
		m[a.Node] = a
	}
	return m
}

// except is agents without the nodes named.
func except(agents []*ClusterAgent, nodes ...string) []*ClusterAgent {
	var out []*ClusterAgent
	for _, a := range agents {
		if !slices.Contains(nodes, a.Node) {
			out = append(out, a)
		}
	}
	return out
}

// placedInstance is one node's instance in 'plugin status -format json'.
type placedInstance struct {
	Node       string `json:"node"`
	Version    string `json:"version"`
	Role       string `json:"role"`
	Epoch      int64  `json:"epoch"`
	State      string `json:"state"`
	Healthy    bool   `json:"healthy"`
	NodeStatus string `json:"node_status"`
	LastError  string `json:"last_error"`
}

// placedStatus is 'plugin status NAME -format json', the parts these tests
// read.
type placedStatus struct {
	Name      string           `json:"name"`
	Cluster   []placedInstance `json:"cluster"`
	Placement *struct {
		Severity string `json:"severity"`
		Wanted   int    `json:"wanted"`
		Placed   int    `json:"placed"`
		Message  string `json:"message"`
	} `json:"placement"`
}

// pluginStatus runs 'plugin status NAME -format json' on a.
func placedStatusOf(a *ClusterAgent, name string) (placedStatus, error) {
	var s placedStatus
	out, errOut, code := a.CLI("plugin", "status", name, "-format", "json")
	if code != 0 {
		return s, fmt.Errorf("plugin status %s on %s: exit %d: %s", name, a.Node, code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return s, fmt.Errorf("plugin status %s on %s printed %q: %v", name, a.Node, out, err)
	}
	return s, nil
}

// serving is the instances of s that run healthy on an alive node, by
// node.
func (s placedStatus) serving() map[string]placedInstance {
	m := map[string]placedInstance{}
	for _, in := range s.Cluster {
		if in.State == "running" && in.Healthy && in.NodeStatus == "alive" {
			m[in.Node] = in
		}
	}
	return m
}

// nodes is the sorted names of the instances' nodes.
func nodesOf(m map[string]placedInstance) []string {
	var ns []string
	for n := range m {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

// placedBundle repacks the bundle at src with placement in its manifest
// (the executable, and so its digest, is the same).
func placedBundle(t testing.TB, src string, placement map[string]any) string {
	t.Helper()
	return repackManifest(t, src, func(m map[string]any) { m["placement"] = placement })
}

// fixtureBundleBuilt builds fixture dir as name@version and bundles it
// with the real 'plughost bundle build', which learns its services from the
// plugin.
func fixtureBundleBuilt(t *testing.T, dir, name, version string) string {
	t.Helper()
	exe := fixture(t, dir, name, version)
	out := t.TempDir()
	if b, err := exec.Command(filepath.Join(binDir, "plughost"), "bundle", "build", "-o", out, exe).CombinedOutput(); err != nil {
		t.Fatalf("plughost bundle build %s: %v\n%s", name, err, b)
	}
	return filepath.Join(out, name+"-"+version+".tar.gz")
}

// bundleAdd runs 'plughost bundle add' of path on a.
func bundleAdd(t *testing.T, a *ClusterAgent, path string) {
	t.Helper()
	if out, errOut, code := a.CLI("bundle", "add", path); code != 0 {
		t.Fatalf("bundle add %s on %s: exit %d\n%s%s", filepath.Base(path), a.Node, code, out, errOut)
	}
}

// callLoad is a closed-loop load: workers that call fn through the given
// agents in turn until Stop, counting successes and keeping failures.
type callLoad struct {
	mu     sync.Mutex
	ok     int
	failed []string
	spans  [][2]time.Time // start and end of each success
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

// failedCallPause is how long a worker of a callLoad waits after a failed
// call.
const failedCallPause = 20 * time.Millisecond

// startCalls starts workers calling fn through via in turn, each call with
// its own timeout, at most one call in flight a worker, until Stop or
// within has passed (a bound, in case Stop is never reached).
func startCalls(workers int, via []*ClusterAgent, within time.Duration, fn func(a *ClusterAgent, i int) error) *callLoad {
	l := &callLoad{stop: make(chan struct{})}
	deadline := time.Now().Add(within)
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := w; time.Now().Before(deadline); i += workers {
				select {
				case <-l.stop:
					return
				default:
				}
				a := via[i%len(via)]
				start := time.Now()
				err := fn(a, i)
				l.mu.Lock()
				if err != nil {
					l.failed = append(l.failed, fmt.Sprintf("%s via %s: %v", time.Now().Format("15:04:05.000"), a.Node, err))
				} else {
					l.ok++
					l.spans = append(l.spans, [2]time.Time{start, time.Now()})
				}
				l.mu.Unlock()
				if err != nil {
					// A client's pause before it tries again, so that a
					// failing service does not make a busy loop of it.
					select {
					case <-l.stop:
					case <-time.After(failedCallPause):
					}
				}
			}
		}()
	}
	return l
}

// counts returns the successes and failures so far.
func (l *callLoad) counts() (ok, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, len(l.failed)
}

// firstOkAfter is when the first call started after t0 succeeded, and
// the longest time a successful call took; ok is false when no call
// started after t0 succeeded.
func (l *callLoad) firstOkAfter(t0 time.Time) (first time.Time, longest time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, sp := range l.spans {
		if sp[0].After(t0) && (!ok || sp[1].Before(first)) {
			first, ok = sp[1], true
		}
		longest = max(longest, sp[1].Sub(sp[0]))
	}
	return first, longest, ok
}

// Stop stops the workers and waits for their calls in flight; it may be
// called again.
func (l *callLoad) Stop() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// failures is the first n failures, one a line.
func (l *callLoad) failures(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.failed[:min(n, len(l.failed))], "\n")
}
