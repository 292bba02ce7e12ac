package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	"github.com/plughost/plughost/host/intent"
	clusterv1 "github.com/plughost/plughost/proto/plughost/cluster/v1"
)

// Peer is another node a bundle can be fetched from.
type Peer struct {
	Node    string
	RPCAddr string // its cluster RPC port
	Alive   bool
}

// FetcherConfig is what a Fetcher needs.
type FetcherConfig struct {
	Node string // this node
	// Peers lists the cluster's other members (this node may be among
	// them: it is skipped).
	Peers func() []Peer
	// Held lists the bundles/<node> records.
	Held func(ctx context.Context) ([]*intent.Held, error)
	// Dial opens a connection to node's cluster gRPC server at addr
	// (clusterrpc.Mux.DialGRPC: mutual TLS, the peer's certificate must
	// name node).
	Dial func(ctx context.Context, addr, node string) (net.Conn, error)
	// Credentials are sent with every call (none for the agent's own: the
	// peer knows it by its server certificate).
	Credentials credentials.PerRPCCredentials
	// Intake verifies and installs the archive at path, as 'plughost
	// bundle add' does: digest against the catalog, signature when
	// trusted keys are set, probe. actor names where it came from.
	Intake func(ctx context.Context, path, actor string) error
	// TempDir holds the archives being received (a 0700 dir of the agent's).
	TempDir string
	// Event records what an operator should see in the plugin's events.
	Event  func(plugin, version, kind, reason string)
	Logger hclog.Logger
	// RetryWait is the pause between rounds over every peer (default 1 s);
	// Rounds bounds them (default 5).
	RetryWait time.Duration
	Rounds    int
}

// Fetcher fetches the bundles this node lacks from its peers.
type Fetcher struct {
	cfg FetcherConfig

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	// calls are the fetches under way, by intent.HeldRef; running counts
	// their goroutines.
	calls   map[string]*call
	running sync.WaitGroup
	// watchers are told the progress of the fetch of a version, by
	// intent.HeldRef: every caller that waits for it.
	watchers map[string]map[*func(string)]bool
}

// NewFetcher returns a Fetcher; Close closes its connections.
func NewFetcher(cfg FetcherConfig) *Fetcher {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.RetryWait <= 0 {
		cfg.RetryWait = time.Second
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = 5
	}
	if cfg.Event == nil {
		cfg.Event = func(string, string, string, string) {}
	}
	return &Fetcher{cfg: cfg, conns: map[string]*grpc.ClientConn{}, calls: map[string]*call{}, watchers: map[string]map[*func(string)]bool{}}
}

// Close ends the fetches under way, waits for them, and closes the
// connections to peers.
func (f *Fetcher) Close() error {
	f.mu.Lock()
	for _, c := range f.calls {
		c.cancel()
	}
	f.mu.Unlock()
	f.running.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, c := range f.conns {
		c.Close()
		delete(f.conns, k)
	}
	return nil
}

// Fetch fetches e's bundle from the peers that hold it and installs it
// through the intake. progress is told how far it got ("fetching greeter
// 1.2.0 from n2: 40%"). Concurrent calls for one version share one fetch,
// which runs while any of them waits for it (a caller that gives up does
// not end it for the others); each is told its progress and gets its
// outcome.
func (f *Fetcher) Fetch(ctx context.Context, e *catalog.Entry, progress func(string)) error {
	ref := intent.HeldRef(e.Name, e.Version)
	if progress != nil {
		f.mu.Lock()
		if f.watchers[ref] == nil {
			f.watchers[ref] = map[*func(string)]bool{}
		}
		f.watchers[ref][&progress] = true
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			delete(f.watchers[ref], &progress)
			if len(f.watchers[ref]) == 0 {
				delete(f.watchers, ref)
			}
			f.mu.Unlock()
		}()
	}
	c := f.join(ref, e)
	defer f.leave(ref, c)
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// call is a fetch under way and the callers waiting for it.
type call struct {
	done    chan struct{} // closed once err is set
	err     error
	cancel  context.CancelFunc
	waiters int
}

// join returns the fetch of ref under way, starting it if there is none.
func (f *Fetcher) join(ref string, e *catalog.Entry) *call {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.calls[ref]; c != nil {
		c.waiters++
		return c
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &call{done: make(chan struct{}), cancel: cancel, waiters: 1}
	f.calls[ref] = c
	f.running.Add(1)
	go func() {
		defer f.running.Done()
		c.err = f.fetch(ctx, e, func(msg string) { f.tell(ref, msg) })
		cancel()
		f.mu.Lock()
		if f.calls[ref] == c {
			delete(f.calls, ref)
		}
		f.mu.Unlock()
		close(c.done)
	}()
	return c
}

// leave ends a caller's wait for c; the last one to leave a fetch under
// way cancels it.
func (f *Fetcher) leave(ref string, c *call) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c.waiters--
	if c.waiters == 0 {
		c.cancel()
		if f.calls[ref] == c {
			delete(f.calls, ref) // a caller that comes now starts afresh
		}
	}
}

// tell passes a fetch's progress to every caller waiting for it.
func (f *Fetcher) tell(ref, msg string) {
	f.mu.Lock()
	fns := make([]func(string), 0, len(f.watchers[ref]))
	for fn := range f.watchers[ref] {
		fns = append(fns, *fn)
	}
	f.mu.Unlock()
	for _, fn := range fns {
		fn(msg)
	}
}

// peers lists the nodes to ask for e, in PeerOrder: those whose bundles
// record says they hold it, else every alive member; this node never.
func (f *Fetcher) peers(ctx context.Context, e *catalog.Entry) []Peer {
	var all, holders []Peer
	for _, p := range f.cfg.Peers() {
		if p.Node != f.cfg.Node && p.Alive && p.RPCAddr != "" {
			all = append(all, p)
		}
	}
	if f.cfg.Held != nil {
		if held, err := f.cfg.Held(ctx); err == nil {
			has := map[string]bool{}
			for _, h := range held {
				if h.Has(e.Name, e.Version) {
					has[h.Node] = true
				}
			}
			for _, p := range all {
				if has[p.Node] {
					holders = append(holders, p)
				}
			}
		}
	}
	out := holders
	if len(out) == 0 {
		out = all
	}
	byName := map[string]Peer{}
	names := make([]string, 0, len(out))
	for _, p := range out {
		byName[p.Node] = p
		names = append(names, p.Node)
	}
	ordered := make([]Peer, 0, len(out))
	for _, n := range PeerOrder(f.cfg.Node, names) {
		ordered = append(ordered, byName[n])
	}
	return ordered
}

// PeerOrder is the order in which node asks peers for a bundle: sorted by
// name, starting at a place that depends on node's name, so that nodes
// fetching at once spread over the peers.
func PeerOrder(node string, peers []string) []string {
	out := slices.Clone(peers)
	slices.Sort(out)
	if len(out) > 1 {
		h := fnv.New32a()
		h.Write([]byte(node))
		i := int(h.Sum32() % uint32(len(out)))
		out = append(out[i:], out[:i]...)
	}
	return out
}

// partial is an archive being received.
type partial struct {
	path   string
	file   *os.File
	have   int64
	size   int64
	sha256 string // of the whole archive, as the first peer said
	from   string // the peer that sent the first bytes
}

func (p *partial) reset() error {
	p.have, p.size, p.sha256, p.from = 0, 0, "", ""
	return p.file.Truncate(0)
}

func (f *Fetcher) fetch(ctx context.Context, e *catalog.Entry, progress func(string)) error {
	what := e.Name + " " + e.Version
	if err := os.MkdirAll(f.cfg.TempDir, 0o700); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(f.cfg.TempDir, "fetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, bundle.FileName(e.Name, e.Version))
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer file.Close()
	p := &partial{path: path, file: file}

	var last error
	for round := 0; round < f.cfg.Rounds; round++ {
		if round > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(f.cfg.RetryWait):
			}
		}
		peers := f.peers(ctx, e)
		if len(peers) == 0 {
			last = fmt.Errorf("%s is registered in the cluster but no other alive node can serve its bundle: %w (add it with 'plughost bundle add' on any node)", what, ErrNoPeer)
			continue
		}
		for _, peer := range peers {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			progress(fmt.Sprintf("fetching %s from %s", what, peer.Node))
			err := f.receive(ctx, peer, e, p, progress)
			if err == nil {
				err = f.verify(ctx, peer, e, p)
				var refused intakeError
				if errors.As(err, &refused) {
					return err
				}
				if err == nil {
					f.cfg.Logger.Info("bundle fetched from a peer and installed", "plugin", e.Name, "version", e.Version, "peer", peer.Node, "bytes", p.size)
					return nil
				}
				// Nothing of these bytes is kept: the next peer starts afresh.
				if rerr := p.reset(); rerr != nil {
					return rerr
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			last = err
			if !errors.Is(err, ErrCorrupt) {
				f.cfg.Logger.Warn("fetching a bundle from a peer failed; trying the next", "plugin", e.Name, "version", e.Version, "peer", peer.Node, "received", p.have, "error", err)
			}
		}
	}
	return fmt.Errorf("fetching %s from peers: %w", what, last)
}

// verify checks the received archive against the catalog, then hands it
// to the intake, which checks it again as it checks any bundle.
func (f *Fetcher) verify(ctx context.Context, peer Peer, e *catalog.Entry, p *partial) error {
	what := e.Name + " " + e.Version
	got, manifest, err := inspectArchive(p.path, e.Manifest.Executable)
	switch {
	case err != nil:
		err = fmt.Errorf("node %s served %s as an archive that cannot be read (%v): %w", peer.Node, what, err, ErrCorrupt)
	case got == "":
		err = fmt.Errorf("node %s served %s without its executable %q: %w", peer.Node, what, e.Manifest.Executable, ErrCorrupt)
	case got != e.SHA256:
		err = fmt.Errorf("node %s served %s whose executable has sha256 %s, but the catalog says %s: %w (its installed copy is damaged or altered: remove %s on %s and add the bundle again there)",
			peer.Node, what, got, e.SHA256, ErrCorrupt, filepath.Join("plugins", e.Name, e.Version), peer.Node)
	case !sameManifest(manifest, e.Manifest):
		err = fmt.Errorf("node %s served %s with a %s that is not the catalog's: %w (its installed copy is damaged or altered: remove %s on %s and add the bundle again there)",
			peer.Node, what, bundle.ManifestFile, ErrCorrupt, filepath.Join("plugins", e.Name, e.Version), peer.Node)
	default:
		// The catalog's bytes, whoever served them: a refusal here would
		// be the same from every peer.
		if err := f.cfg.Intake(ctx, p.path, "fetched from "+peer.Node); err != nil {
			return fmt.Errorf("%s, fetched from %s, is refused by this node's bundle intake: %w", what, peer.Node, intakeError{err})
		}
		return nil
	}
	if err != nil && errors.Is(err, ErrCorrupt) {
		f.cfg.Logger.Error("refused the bundle a peer served; fetching it from the next", "plugin", e.Name, "version", e.Version, "peer", peer.Node,
			"sha256", got, "catalog_sha256", e.SHA256, "error", err)
		f.cfg.Event(e.Name, e.Version, "fetch-refused", err.Error())
	}
	return err
}

// sameManifest reports whether the plugin.json a peer served says what the
// catalog's manifest says.
func sameManifest(raw []byte, want *bundle.Manifest) bool {
	if raw == nil {
		return false
	}
	m, err := bundle.ParseManifest(raw)
	if err != nil {
		return false
	}
	a, errA := m.Marshal()
	b, errB := want.Marshal()
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// intakeError is a refusal of the intake: no other peer is asked.
type intakeError struct{ error }

func (e intakeError) Unwrap() error { return e.error }

// conn returns the connection to a peer's cluster gRPC server.
func (f *Fetcher) conn(peer Peer) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := peer.Node + "@" + peer.RPCAddr
	if c, ok := f.conns[key]; ok {
		return c, nil
	}
	opts := []grpc.DialOption{
		// The connection Dial opens is mutual TLS already.
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return f.cfg.Dial(ctx, addr, peer.Node)
		}),
	}
	if f.cfg.Credentials != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(f.cfg.Credentials))
	}
	c, err := grpc.NewClient("passthrough:///"+peer.RPCAddr, opts...)
	if err != nil {
		return nil, err
	}
	f.conns[key] = c
	return c, nil
}

// receive appends what peer serves of e's archive to p, from p.have on,
// until p holds the whole archive and its SHA-256 is the one announced.
func (f *Fetcher) receive(ctx context.Context, peer Peer, e *catalog.Entry, p *partial, progress func(string)) error {
	c, err := f.conn(peer)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := time.AfterFunc(idleTimeout, cancel)
	defer idle.Stop()
	for attempt := 0; attempt < 2; attempt++ {
		stream, err := clusterv1.NewBundleServiceClient(c).Fetch(ctx, &clusterv1.FetchRequest{Name: e.Name, Version: e.Version, Offset: p.have})
		if err != nil {
			return err
		}
		restart, err := f.readStream(stream, peer, e, p, progress, idle)
		if err != nil {
			if ctx.Err() != nil && status.Code(err) == codes.Canceled {
				return fmt.Errorf("node %s sent nothing for %s", peer.Node, idleTimeout)
			}
			return err
		}
		if !restart {
			return f.checkWhole(peer, p)
		}
	}
	return fmt.Errorf("node %s's archive of %s %s changed while it was sent", peer.Node, e.Name, e.Version)
}

// readStream writes a Fetch stream into p. restart reports that the peer
// serves other bytes than p began with: p was emptied, to fetch from 0.
func (f *Fetcher) readStream(stream clusterv1.BundleService_FetchClient, peer Peer, e *catalog.Entry, p *partial, progress func(string), idle *time.Timer) (restart bool, err error) {
	lastPct := int64(-1)
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		idle.Reset(idleTimeout)
		size, sum := msg.GetSize(), msg.GetArchiveSha256()
		switch {
		case size <= 0 || size > MaxArchive:
			return false, fmt.Errorf("node %s announced an archive of %d bytes (at most %d are taken)", peer.Node, size, int64(MaxArchive))
		case len(sum) != 64:
			return false, fmt.Errorf("node %s announced no archive sha256", peer.Node)
		}
		if p.sha256 == "" {
			p.size, p.sha256, p.from = size, sum, peer.Node
		} else if p.sha256 != sum || p.size != size {
			if p.have == 0 || msg.GetOffset() == 0 {
				p.size, p.sha256, p.from = size, sum, peer.Node
			} else {
				// Another build of the same files (another agent version):
				// what was received cannot be continued.
				f.cfg.Logger.Info("a peer serves other archive bytes than the one a fetch began with; fetching from 0", "plugin", e.Name, "version", e.Version, "peer", peer.Node, "from", p.from)
				return true, p.reset()
			}
		}
		data := msg.GetData()
		if msg.GetOffset() != p.have {
			return false, fmt.Errorf("node %s sent bytes at offset %d, %d were expected", peer.Node, msg.GetOffset(), p.have)
		}
		if int64(len(data)) > ChunkSize || p.have+int64(len(data)) > p.size {
			return false, fmt.Errorf("node %s sent more than the %d bytes it announced", peer.Node, p.size)
		}
		if _, err := p.file.WriteAt(data, p.have); err != nil {
			return false, err
		}
		p.have += int64(len(data))
		if pct := p.have * 100 / p.size; pct != lastPct {
			lastPct = pct
			progress(fmt.Sprintf("fetching %s %s from %s: %d%%", e.Name, e.Version, peer.Node, pct))
		}
	}
}

// checkWhole checks that p holds the whole archive with the announced
// SHA-256; otherwise it is emptied.
func (f *Fetcher) checkWhole(peer Peer, p *partial) error {
	if p.have != p.size || p.size == 0 {
		return fmt.Errorf("node %s ended the stream after %d of %d bytes", peer.Node, p.have, p.size)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(p.file, 0, p.size)); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != p.sha256 {
		err := fmt.Errorf("the archive received (from %s, then %s) has sha256 %s, not the %s announced", p.from, peer.Node, got, p.sha256)
		if rerr := p.reset(); rerr != nil {
			return rerr
		}
		return err
	}
	return nil
}
