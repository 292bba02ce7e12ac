package test

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
)

// TestH2spec runs h2spec, the HTTP/2 conformance checker pinned in
// tools/go.mod, against the agent's API port (plaintext, prior knowledge)
// and fails on every case that a plain grpc-go server on loopback passes
// and the agent does not. Cases grpc-go itself fails are not held against
// the agent: the relay hands some connections to the agent's own grpc-go
// server, and conformance here means behaving at least as well as it.
//
// A case h2spec gets no answer to fails after its timeout, and grpc-go
// leaves two dozen cases unanswered: to stay well under a minute both
// servers are checked at once, in groups run side by side, with a 2s
// timeout (grpc-go takes 1s to pass three of the http2/5.1 cases); a case
// only the agent failed is run again alone with 5s before it counts.
func TestH2spec(t *testing.T) {
	t.Parallel()
	h2spec := filepath.Join(t.TempDir(), "h2spec")
	build := exec.Command("go", "build", "-o", h2spec, "github.com/summerwind/h2spec/cmd/h2spec")
	build.Dir = filepath.Join(repoRoot(), "tools")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building h2spec from tools/go.mod: %v\n%s", err, b)
	}

	a := NewAgent(t, AgentOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	plain := grpc.NewServer()
	go func() { _ = plain.Serve(ln) }()
	defer plain.Stop()

	var base, got h2specResult
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); base = runH2specGroups(t, h2spec, ln.Addr().String()) }()
	go func() { defer wg.Done(); got = runH2specGroups(t, h2spec, a.API) }()
	wg.Wait()
	if t.Failed() {
		return
	}
	if want := h2specCount(t, h2spec); len(base.cases) != want || len(got.cases) != want {
		t.Fatalf("h2spec lists %d cases, the runs covered %d and %d: make h2specGroups cover every section", want, len(base.cases), len(got.cases))
	}

	var suspects []h2specCase
	for _, c := range base.cases {
		if c.passed && !got.passed(c.key()) {
			suspects = append(suspects, c)
		}
	}
	var regressed []string
	if len(suspects) > 0 {
		again := runH2specEach(t, h2spec, a.API, suspects)
		for _, c := range suspects {
			if again.passed(c.key()) {
				t.Logf("h2spec %s %s: passed when run alone with 5s to answer", c.id, c.desc)
				continue
			}
			regressed = append(regressed, fmt.Sprintf("%s %s: %s", c.id, c.desc, again.why(c.key())))
		}
	}
	t.Logf("h2spec: grpc-go passes %d of %d cases, the agent %d", base.passes(), len(base.cases), got.passes())
	if len(regressed) > 0 {
		t.Errorf("h2spec cases a plain grpc-go server passes and the agent fails (after 'make tools', '.bin/h2spec -p PORT ID' runs one):\n%s",
			strings.Join(regressed, "\n"))
	}
}

// h2specGroups split h2spec's sections into runs of at most about 16s
// each against grpc-go, most of it waiting for answers that never come.
var h2specGroups = [][]string{
	{"generic", "hpack", "http2/3", "http2/4", "http2/5.3", "http2/5.4", "http2/5.5", "http2/7"},
	{"http2/5.1"},
	{"http2/6"},
	{"http2/8"},
}

// runH2specGroups runs every h2spec case against addr, h2specGroups side
// by side, with a 2s timeout.
func runH2specGroups(t *testing.T, h2spec, addr string) h2specResult {
	results := make([]h2specResult, len(h2specGroups))
	var wg sync.WaitGroup
	for i, g := range h2specGroups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runH2spec(t, h2spec, addr, "2", g...)
		}()
	}
	wg.Wait()
	var all h2specResult
	for _, r := range results {
		all.cases = append(all.cases, r.cases...)
	}
	return all
}

// runH2specEach runs each of cases alone against addr with a 5s timeout,
// eight at a time.
func runH2specEach(t *testing.T, h2spec, addr string, cases []h2specCase) h2specResult {
	results := make([]h2specResult, len(cases))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = runH2spec(t, h2spec, addr, "5", c.id)
		}()
	}
	wg.Wait()
	var all h2specResult
	for _, r := range results {
		all.cases = append(all.cases, r.cases...)
	}
	return all
}

// h2specCount is how many cases h2spec has in all.
func h2specCount(t *testing.T, h2spec string) int {
	out, err := exec.Command(h2spec, "--dryrun").CombinedOutput()
	if err != nil {
		t.Fatalf("h2spec --dryrun: %v\n%s", err, out)
	}
	return len(regexp.MustCompile(`(?m)^\s+[0-9]+: `).FindAll(out, -1))
}

// h2specResult is one h2spec run, case by case.
type h2specResult struct {
	cases []h2specCase
}

// h2specCase is one h2spec case: id is what selects it on h2spec's command
// line ("http2/5.1/1") when its whole group ran.
type h2specCase struct {
	group, id, desc, failure string
	passed                   bool
}

// key names a case whether or not its whole group ran.
func (c h2specCase) key() string { return c.group + " " + c.desc }

func (r h2specResult) passes() int {
	n := 0
	for _, c := range r.cases {
		if c.passed {
			n++
		}
	}
	return n
}

func (r h2specResult) find(key string) (h2specCase, bool) {
	i := slices.IndexFunc(r.cases, func(c h2specCase) bool { return c.key() == key })
	if i < 0 {
		return h2specCase{}, false
	}
	return r.cases[i], true
}

func (r h2specResult) passed(key string) bool {
	c, ok := r.find(key)
	return ok && c.passed
}

func (r h2specResult) why(key string) string {
	c, ok := r.find(key)
	if !ok {
		return "not run"
	}
	return strings.Join(strings.Fields(c.failure), " ")
}

// runH2spec runs h2spec's cases in sections (all without) against addr,
// waiting up to timeout seconds for each answer, and reads its JUnit
// report. h2spec exits 1 when a case fails, which is for the caller to
// judge; any other failure fails the test.
func runH2spec(t *testing.T, h2spec, addr, timeout string, sections ...string) h2specResult {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	args := append([]string{"-h", host, "-p", port, "-o", timeout, "-j", report}, sections...)
	out, err := exec.Command(h2spec, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		t.Errorf("h2spec %s against %s: %v\n%s", sections, addr, err, out)
		return h2specResult{}
	}
	data, err := os.ReadFile(report)
	if err != nil {
		t.Errorf("h2spec %s against %s wrote no report: %v\n%s", sections, addr, err, out)
		return h2specResult{}
	}
	var junit struct {
		Suites []struct {
			Package string `xml:"package,attr"`
			Cases   []struct {
				Desc    string    `xml:"classname,attr"`
				Failure *xmlInner `xml:"failure"`
				Error   *xmlInner `xml:"error"`
				Skipped *xmlInner `xml:"skipped"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	// h2spec copies what a peer sent (GOAWAY debug data, frame bytes) into
	// its failure messages unescaped, so the report may hold characters XML
	// does not allow.
	data = bytes.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' {
			return '\uFFFD'
		}
		return r
	}, data)
	if err := xml.Unmarshal(data, &junit); err != nil {
		t.Errorf("h2spec's report %s: %v", report, err)
		return h2specResult{}
	}
	var r h2specResult
	for _, s := range junit.Suites {
		for i, c := range s.Cases {
			hc := h2specCase{group: s.Package, id: fmt.Sprintf("%s/%d", s.Package, i+1), desc: c.Desc}
			switch {
			case c.Failure != nil:
				hc.failure = c.Failure.Content
			case c.Error != nil:
				hc.failure = c.Error.Content
			case c.Skipped != nil:
				hc.failure = "skipped"
			default:
				hc.passed = true
			}
			r.cases = append(r.cases, hc)
		}
	}
	if len(r.cases) == 0 {
		t.Errorf("h2spec %s against %s ran no case:\n%s", sections, addr, out)
	}
	return r
}

// xmlInner is an element's content as it stands.
type xmlInner struct {
	Content string `xml:",innerxml"`
}
