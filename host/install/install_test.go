package install

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/intent"
	"github.com/plughost/plughost/internal/testenv"
	clusterv1 "github.com/plughost/plughost/proto/plughost/cluster/v1"
	"github.com/plughost/plughost/store"
)

// world is a catalog shared by test nodes, each with a plugins dir of its
// own and a BundleService on an in-memory listener.
type world struct {
	t     testing.TB
	st    *store.Store
	cat   *catalog.Catalog
	nodes map[string]*node
	built map[string]string // name@version -> bundle archive built by bundle.Build
	size  int               // of the executables bundle builds (0: 1.5 chunks)
}

type node struct {
	name    string
	plugins string
	srv     *Server
	ln      *bufconn.Listener
}

func newWorld(t testing.TB) *world {
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &world{t: t, st: st, cat: catalog.New(st), nodes: map[string]*node{}, built: map[string]string{}}
}

// node starts a node serving bundles with the given concurrency.
func (w *world) node(name string, concurrency int) *node {
	return w.nodeConfig(name, ServerConfig{Concurrency: concurrency})
}

// nodeConfig is node with more of the server's config.
func (w *world) nodeConfig(name string, cfg ServerConfig) *node {
	dir := w.t.TempDir()
	n := &node{name: name, plugins: filepath.Join(dir, "plugins"), ln: bufconn.Listen(1 << 20)}
	cfg.Node, cfg.PluginsDir, cfg.TempDir, cfg.Catalog = name, n.plugins, filepath.Join(dir, "tmp"), w.cat
	n.srv = NewServer(cfg)
	gs := grpc.NewServer()
	clusterv1.RegisterBundleServiceServer(gs, n.srv)
	go gs.Serve(n.ln)
	w.t.Cleanup(gs.Stop)
	w.nodes[name] = n
	return n
}

// bundle builds (once) and registers name's version, with an executable
// of size random bytes, larger than a chunk.
func (w *world) bundle(name, version string) string {
	ref := intent.HeldRef(name, version)
	if p, ok := w.built[ref]; ok {
		return p
	}
	dir := w.t.TempDir()
	exe := filepath.Join(dir, name)
	body := make([]byte, 3*ChunkSize/2+17)
	if w.size > 0 {
		body = make([]byte, w.size)
	}
	rand.Read(body)
	if err := os.WriteFile(exe, append([]byte("#!/bin/sh\n"), body...), 0o755); err != nil {
		w.t.Fatal(err)
	}
	m := &bundle.Manifest{Name: name, Version: version, APIVersions: []int{1}, Services: []string{"echo.v1.EchoService"}}
	path, err := bundle.Build(exe, m, filepath.Join(dir, "out"))
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.cat.Register(context.Background(), m, "test"); err != nil {
		w.t.Fatal(err)
	}
	w.built[ref] = path
	return path
}

// install installs the bundle at path into dir's plugins dir, as the
// agent's intake does after its checks.
func install(t testing.TB, path, plugins string) (*bundle.Manifest, error) {
	t.Helper()
	b, err := bundle.Open(path, filepath.Join(t.TempDir(), "unpacked"))
	if err != nil {
		return nil, err
	}
	m := b.Manifest
	return m, b.InstallTo(filepath.Join(plugins, m.Name, m.Version))
}

func (w *world) installOn(n *node, name, version string) {
	if _, err := install(w.t, w.bundle(name, version), n.plugins); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) entry(name, version string) *catalog.Entry {
	e, err := w.cat.Get(context.Background(), name, version)
	if err != nil {
		w.t.Fatal(err)
	}
	return e
}

// client returns a BundleService client of n.
func (w *world) client(n *node, opts ...grpc.DialOption) clusterv1.BundleServiceClient {
	c, err := grpc.NewClient("passthrough:///"+n.name, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return n.ln.DialContext(ctx) })}, opts...)...)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { c.Close() })
	return clusterv1.NewBundleServiceClient(c)
}

// fetcher returns the fetcher of a node named self, whose peers are the
// world's other nodes, all alive, and whose intake installs into plugins.
func (w *world) fetcher(self, plugins string, events *[]string) *Fetcher {
	var mu sync.Mutex
	return NewFetcher(FetcherConfig{
		Node: self,
		Peers: func() []Peer {
			var out []Peer
			for name := range w.nodes {
				out = append(out, Peer{Node: name, RPCAddr: name + ":1", Alive: true})
			}
			return out
		},
		Dial: func(ctx context.Context, _, node string) (net.Conn, error) {
			return w.nodes[node].ln.DialContext(ctx)
		},
		Intake: func(ctx context.Context, path, actor string) error {
			m, err := install(w.t, path, plugins)
			if err != nil {
				return err
			}
			if e := w.entry(m.Name, m.Version); e.SHA256 != m.SHA256 {
				return errors.New("not the catalog's digest")
			}
			return nil
		},
		TempDir: filepath.Join(w.t.TempDir(), "tmp"),
		Event: func(plugin, version, kind, reason string) {
			mu.Lock()
			*events = append(*events, kind+": "+reason)
			mu.Unlock()
		},
		RetryWait: 10 * time.Millisecond,
		Rounds:    2,
	})
}

// readAll reads a Fetch stream into one byte slice.
func readAll(t *testing.T, c clusterv1.BundleServiceClient, name, version string, offset int64) (data []byte, size int64, sum string, err error) {
	t.Helper()
	stream, err := c.Fetch(context.Background(), &clusterv1.FetchRequest{Name: name, Version: version, Offset: offset})
	if err != nil {
		return nil, 0, "", err
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return data, size, sum, nil
		}
		if err != nil {
			return nil, 0, "", err
		}
		if len(msg.GetData()) > ChunkSize {
			t.Fatalf("chunk of %d bytes, more than %d", len(msg.GetData()), ChunkSize)
		}
		if msg.GetOffset() != offset+int64(len(data)) {
			t.Fatalf("chunk at %d, want %d", msg.GetOffset(), offset+int64(len(data)))
		}
		data = append(data, msg.GetData()...)
		size, sum = msg.GetSize(), msg.GetArchiveSha256()
	}
}

func TestServeIsDeterministicAndResumable(t *testing.T) {
	w := newWorld(t)
	n1, n2 := w.node("n1", 2), w.node("n2", 2)
	w.installOn(n1, "greeter", "1.2.0")
	w.installOn(n2, "greeter", "1.2.0")
	whole, size, sum, err := readAll(t, w.client(n1), "greeter", "1.2.0", 0)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(whole)) != size || size <= ChunkSize {
		t.Fatalf("got %d bytes of %d announced (want more than one chunk)", len(whole), size)
	}
	// Another node holding the same files serves the same bytes: a fetch
	// resumes there.
	half := size / 2
	rest, size2, sum2, err := readAll(t, w.client(n2), "greeter", "1.2.0", half)
	if err != nil {
		t.Fatal(err)
	}
	if size2 != size || sum2 != sum || !bytes.Equal(rest, whole[half:]) {
		t.Fatalf("n2 from %d: %d bytes (size %d, sha256 %s), want n1's rest (size %d, sha256 %s)", half, len(rest), size2, sum2, size, sum)
	}
	// What is served is a bundle the intake takes.
	p := filepath.Join(t.TempDir(), bundle.FileName("greeter", "1.2.0"))
	if err := os.WriteFile(p, whole, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := bundle.Verify(p); err != nil {
		t.Fatalf("served archive: %v", err)
	}
	// The end of the archive is a valid offset (nothing left); past it is not.
	if data, _, _, err := readAll(t, w.client(n1), "greeter", "1.2.0", size); err != nil || len(data) != 0 {
		t.Fatalf("from the end: %d bytes, %v", len(data), err)
	}
	if _, _, _, err := readAll(t, w.client(n1), "greeter", "1.2.0", size+1); status.Code(err) != codes.OutOfRange || clusterv1.ErrorReason(err) != clusterv1.ReasonBadOffset {
		t.Fatalf("past the end: %v, want OUT_OF_RANGE %s", err, clusterv1.ReasonBadOffset)
	}
}

func TestServeOnlyCatalogVersionsInstalledHere(t *testing.T) {
	w := newWorld(t)
	n1 := w.node("n1", 2)
	w.bundle("greeter", "1.2.0") // registered, not installed on n1
	c := w.client(n1)
	for _, tc := range []struct {
		name, version string
		code          codes.Code
	}{
		{"../plugins", "1.2.0", codes.InvalidArgument},
		{"greeter", "../../etc", codes.InvalidArgument},
		{"greeter", "1.2", codes.InvalidArgument},
		{"greeter", "9.9.9", codes.NotFound},
		{"other", "1.0.0", codes.NotFound},
		{"greeter", "1.2.0", codes.NotFound},
	} {
		_, _, _, err := readAll(t, c, tc.name, tc.version, 0)
		if status.Code(err) != tc.code {
			t.Errorf("%q %q: %v, want %s", tc.name, tc.version, err, tc.code)
		}
		if tc.code == codes.NotFound && clusterv1.ErrorReason(err) != clusterv1.ReasonNotHeld {
			t.Errorf("%q %q: reason %q, want %s", tc.name, tc.version, clusterv1.ErrorReason(err), clusterv1.ReasonNotHeld)
		}
	}
}

func TestServeConcurrencyLimit(t *testing.T) {
	w := newWorld(t)
	w.size = 4 << 20 // more than flow control and gRPC's write quota hold
	n1 := w.node("n1", 1)
	w.installOn(n1, "greeter", "1.2.0")
	c := w.client(n1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A first fetch that reads one chunk and then nothing holds the slot:
	// its small flow-control window stops the server's sends.
	slow := w.client(n1, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	held, err := slow.Fetch(ctx, &clusterv1.FetchRequest{Name: "greeter", Version: "1.2.0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.Recv(); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = readAll(t, c, "greeter", "1.2.0", 0)
	if status.Code(err) != codes.ResourceExhausted || clusterv1.ErrorReason(err) != clusterv1.ReasonServerBusy {
		t.Fatalf("second fetch: %v, want RESOURCE_EXHAUSTED %s", err, clusterv1.ReasonServerBusy)
	}
	cancel()
	if err := fetchWithin(t, c, "greeter", "1.2.0", 10*time.Second); err != nil {
		t.Fatalf("the slot was not given back: %v", err)
	}
}

// fetchWithin fetches name@version whole from c, again and again until it
// succeeds or d has passed, and returns the last error.
func fetchWithin(t *testing.T, c clusterv1.BundleServiceClient, name, version string, d time.Duration) error {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		_, _, _, err := readAll(t, c, name, version, 0)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServeEndsAStalledFetch: a peer that stops reading a fetch (frozen,
// or cut off, with its connection open) loses it after the send stall, and
// its slot serves the next fetch.
func TestServeEndsAStalledFetch(t *testing.T) {
	w := newWorld(t)
	w.size = 4 << 20 // more than flow control and gRPC's write quota hold
	n1 := w.nodeConfig("n1", ServerConfig{Concurrency: 1, SendStall: 300 * time.Millisecond})
	w.installOn(n1, "greeter", "1.2.0")
	slow := w.client(n1, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	held, err := slow.Fetch(ctx, &clusterv1.FetchRequest{Name: "greeter", Version: "1.2.0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.Recv(); err != nil {
		t.Fatal(err)
	}
	// It reads nothing more; the next fetch gets the slot once the stall
	// ended the first.
	if err := fetchWithin(t, w.client(n1), "greeter", "1.2.0", 10*time.Second); err != nil {
		t.Fatalf("the stalled fetch kept the slot: %v", err)
	}
	for err == nil {
		_, err = held.Recv()
	}
	if status.Code(err) != codes.DeadlineExceeded || clusterv1.ErrorReason(err) != clusterv1.ReasonSendStalled {
		t.Fatalf("the stalled fetch ended with %v, want DEADLINE_EXCEEDED %s", err, clusterv1.ReasonSendStalled)
	}
}

// corrupt replaces the installed executable on n with other bytes, as root
// can, keeping its mode.
func corrupt(t *testing.T, n *node, name, version string) {
	t.Helper()
	dir := filepath.Join(n.plugins, name, version)
	b, err := bundle.ReadInstalled(dir)
	if err != nil {
		t.Fatal(err)
	}
	tmp := b.Executable + ".new"
	if err := os.WriteFile(tmp, []byte("#!/bin/sh\necho altered\n"), 0o500); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, b.Executable); err != nil {
		t.Fatal(err)
	}
}

func TestFetchRefusesACorruptPeerAndUsesTheNext(t *testing.T) {
	w := newWorld(t)
	n1, n2 := w.node("n1", 2), w.node("n2", 2)
	w.installOn(n1, "greeter", "1.2.0")
	w.installOn(n2, "greeter", "1.2.0")
	self := "n3"
	first := PeerOrder(self, []string{"n1", "n2"})[0]
	corrupt(t, w.nodes[first], "greeter", "1.2.0")

	var events []string
	var progress []string
	plugins := filepath.Join(t.TempDir(), "plugins")
	f := w.fetcher(self, plugins, &events)
	defer f.Close()
	e := w.entry("greeter", "1.2.0")
	if err := f.Fetch(context.Background(), e, func(s string) { progress = append(progress, s) }); err != nil {
		t.Fatal(err)
	}
	got, err := bundle.Digest(filepath.Join(plugins, "greeter", "1.2.0", e.Manifest.Executable))
	if err != nil || got != e.SHA256 {
		t.Fatalf("installed executable sha256 %s (%v), want the catalog's %s", got, err, e.SHA256)
	}
	if len(events) != 1 || !strings.HasPrefix(events[0], "fetch-refused: node "+first+" served greeter 1.2.0") || !strings.Contains(events[0], e.SHA256) {
		t.Fatalf("events %q, want one fetch-refused naming %s and the catalog's digest", events, first)
	}
	bad, _ := bundle.Digest(filepath.Join(w.nodes[first].plugins, "greeter", "1.2.0", e.Manifest.Executable))
	if !strings.Contains(events[0], bad) {
		t.Fatalf("event %q does not name the digest %s that %s served", events[0], bad, first)
	}
	if last := progress[len(progress)-1]; !strings.Contains(last, "fetching greeter 1.2.0 from ") || !strings.HasSuffix(last, "100%") {
		t.Fatalf("last progress %q", last)
	}
}

func TestFetchWithoutPeersSaysSo(t *testing.T) {
	w := newWorld(t)
	w.bundle("greeter", "1.2.0")
	var events []string
	f := w.fetcher("n1", t.TempDir(), &events)
	defer f.Close()
	err := f.Fetch(context.Background(), w.entry("greeter", "1.2.0"), nil)
	if !errors.Is(err, ErrNoPeer) {
		t.Fatalf("fetch with no peer: %v, want ErrNoPeer", err)
	}
}

func TestFetchUsesHeldRecordsAndFetchesOnce(t *testing.T) {
	w := newWorld(t)
	n1, n2 := w.node("n1", 4), w.node("n2", 4)
	w.installOn(n2, "greeter", "1.2.0")
	_ = n1 // holds nothing: without the records it could be asked first
	var events []string
	plugins := filepath.Join(t.TempDir(), "plugins")
	f := w.fetcher("n3", plugins, &events)
	f.cfg.Held = func(ctx context.Context) ([]*intent.Held, error) {
		items, _, err := intent.New(w.st).Local().Held(ctx)
		var held []*intent.Held
		for i := range items {
			held = append(held, &items[i].Value)
		}
		return held, err
	}
	f.cfg.Rounds = 1
	defer f.Close()
	ctx := context.Background()
	db := intent.New(w.st)
	if err := db.PutHeld(ctx, &intent.Held{Node: "n2", Bundles: []string{"greeter@1.2.0"}}); err != nil {
		t.Fatal(err)
	}
	if err := db.PutHeld(ctx, &intent.Held{Node: "n1", Bundles: []string{}}); err != nil {
		t.Fatal(err)
	}
	e := w.entry("greeter", "1.2.0")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.Fetch(ctx, e, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		// Installing twice into the same place fails (InstallTo replaces
		// only what an install left): concurrent calls share one fetch.
		if err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
	}
	if len(events) != 0 {
		t.Fatalf("events %q, want none (n1, which holds nothing, is never asked)", events)
	}
}

// countingConn counts the bytes read from a connection and, past limit
// (when set), breaks it.
type countingConn struct {
	net.Conn
	mu    *sync.Mutex
	n     *int64
	limit int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	*c.n += int64(n)
	broken := c.limit > 0 && *c.n > c.limit
	c.mu.Unlock()
	if broken {
		c.Conn.Close()
		return n, errors.New("connection broken by the test")
	}
	return n, err
}

func TestFetchResumesOnTheNextPeer(t *testing.T) {
	w := newWorld(t)
	w.size = 2 << 20
	n1, n2 := w.node("n1", 2), w.node("n2", 2)
	w.installOn(n1, "greeter", "1.2.0")
	w.installOn(n2, "greeter", "1.2.0")
	_, size, _, err := readAll(t, w.client(n1), "greeter", "1.2.0", 0)
	if err != nil {
		t.Fatal(err)
	}
	self := "n3"
	order := PeerOrder(self, []string{"n1", "n2"})
	var events []string
	plugins := filepath.Join(t.TempDir(), "plugins")
	f := w.fetcher(self, plugins, &events)
	defer f.Close()
	var mu sync.Mutex
	read := map[string]*int64{order[0]: new(int64), order[1]: new(int64)}
	f.cfg.Dial = func(ctx context.Context, _, node string) (net.Conn, error) {
		c, err := w.nodes[node].ln.DialContext(ctx)
		if err != nil {
			return nil, err
		}
		limit := int64(0)
		if node == order[0] {
			limit = size / 2 // the first peer breaks halfway
		}
		return &countingConn{Conn: c, mu: &mu, n: read[node], limit: limit}, nil
	}
	e := w.entry("greeter", "1.2.0")
	if err := f.Fetch(context.Background(), e, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := bundle.Digest(filepath.Join(plugins, "greeter", "1.2.0", e.Manifest.Executable)); err != nil || got != e.SHA256 {
		t.Fatalf("installed executable sha256 %s (%v), want %s", got, err, e.SHA256)
	}
	mu.Lock()
	defer mu.Unlock()
	// The second peer sent only what the first had not: it was asked from
	// an offset, not from 0.
	if *read[order[0]] < size/2 || *read[order[1]] >= size-ChunkSize {
		t.Fatalf("%s sent %d bytes, %s %d, of an archive of %d: want the second to resume where the first broke", order[0], *read[order[0]], order[1], *read[order[1]], size)
	}
	t.Logf("%s sent %d bytes before it broke, %s %d, archive %d", order[0], *read[order[0]], order[1], *read[order[1]], size)
}

func TestFetchRefusesAnAlteredManifest(t *testing.T) {
	w := newWorld(t)
	n1, n2 := w.node("n1", 2), w.node("n2", 2)
	w.installOn(n1, "greeter", "1.2.0")
	w.installOn(n2, "greeter", "1.2.0")
	self := "n3"
	first := PeerOrder(self, []string{"n1", "n2"})[0]
	// The first peer's plugin.json asks for more memory; its executable
	// is the catalog's.
	dir := filepath.Join(w.nodes[first].plugins, "greeter", "1.2.0")
	b, err := bundle.ReadInstalled(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := *b.Manifest
	m.Resources.MemoryMB = 4096
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, bundle.ManifestFile+".new"), raw, 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, bundle.ManifestFile+".new"), filepath.Join(dir, bundle.ManifestFile)); err != nil {
		t.Fatal(err)
	}
	var events []string
	plugins := filepath.Join(t.TempDir(), "plugins")
	f := w.fetcher(self, plugins, &events)
	defer f.Close()
	e := w.entry("greeter", "1.2.0")
	if err := f.Fetch(context.Background(), e, nil); err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || !strings.Contains(events[0], "node "+first+" served greeter 1.2.0 with a plugin.json that is not the catalog's") {
		t.Fatalf("events %q, want one refusal of %s's plugin.json", events, first)
	}
	got, err := bundle.ReadInstalled(filepath.Join(plugins, "greeter", "1.2.0"))
	if err != nil || got.Manifest.Resources.MemoryMB == 4096 {
		t.Fatalf("installed manifest %+v (%v), want the catalog's", got.Manifest, err)
	}
}

func TestFetchStopsAtAnIntakeRefusal(t *testing.T) {
	w := newWorld(t)
	n1, n2 := w.node("n1", 2), w.node("n2", 2)
	w.installOn(n1, "greeter", "1.2.0")
	w.installOn(n2, "greeter", "1.2.0")
	var events []string
	f := w.fetcher("n3", t.TempDir(), &events)
	defer f.Close()
	intakes := 0
	refusal := errors.New("bundle is not signed")
	f.cfg.Intake = func(context.Context, string, string) error {
		intakes++
		return refusal
	}
	err := f.Fetch(context.Background(), w.entry("greeter", "1.2.0"), nil)
	if !errors.Is(err, refusal) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("fetch: %v, want the intake's refusal, not the peer's fault", err)
	}
	// The bytes were the catalog's: another peer would serve the same.
	if intakes != 1 || len(events) != 0 {
		t.Fatalf("%d intakes, events %q; want 1 and none", intakes, events)
	}
}

// TestSharedFetchOutlivesTheCallerThatStartedIt: callers of one version
// share one fetch; the caller that started it giving up (its plugin
// unassigned, its agent's keeper stopped) does not end it for the others.
func TestSharedFetchOutlivesTheCallerThatStartedIt(t *testing.T) {
	w := newWorld(t)
	n1 := w.node("n1", 2)
	w.installOn(n1, "greeter", "1.2.0")
	var events []string
	plugins := filepath.Join(t.TempDir(), "plugins")
	f := w.fetcher("n3", plugins, &events)
	defer f.Close()
	gate := make(chan struct{})
	dial := f.cfg.Dial
	f.cfg.Dial = func(ctx context.Context, addr, node string) (net.Conn, error) {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return dial(ctx, addr, node)
	}
	e := w.entry("greeter", "1.2.0")
	ref := intent.HeldRef(e.Name, e.Version)
	waiters := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.watchers[ref])
	}
	first, cancelFirst := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() { firstErr <- f.Fetch(first, e, func(string) {}) }()
	testenv.Eventually(t, 10*time.Second, "the first caller waiting", func() bool { return waiters() == 1 })
	secondErr := make(chan error, 1)
	go func() { secondErr <- f.Fetch(context.Background(), e, func(string) {}) }()
	testenv.Eventually(t, 10*time.Second, "the second caller waiting", func() bool { return waiters() == 2 })
	cancelFirst()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller that gave up got %v", err)
	}
	close(gate)
	if err := <-secondErr; err != nil {
		t.Fatalf("the caller still waiting got %v, want the bundle fetched", err)
	}
	if _, err := e.ExecutableIn(plugins); err != nil {
		t.Fatal(err)
	}
}

// TestCloseEndsFetchesUnderWay: an agent stopping closes its fetcher; the
// fetches under way end with it, and their callers are answered.
func TestCloseEndsFetchesUnderWay(t *testing.T) {
	w := newWorld(t)
	n1 := w.node("n1", 2)
	w.installOn(n1, "greeter", "1.2.0")
	var events []string
	f := w.fetcher("n3", filepath.Join(t.TempDir(), "plugins"), &events)
	f.cfg.Dial = func(ctx context.Context, addr, node string) (net.Conn, error) {
		<-ctx.Done() // a peer that never answers
		return nil, ctx.Err()
	}
	e := w.entry("greeter", "1.2.0")
	errc := make(chan error, 1)
	go func() { errc <- f.Fetch(context.Background(), e, func(string) {}) }()
	testenv.Eventually(t, 10*time.Second, "the fetch to start", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.calls) == 1
	})
	f.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("a fetch Close ended succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close returned, the fetch under way still runs and its caller waits")
	}
}
