package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"golang.org/x/sync/semaphore"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/host/catalog"
	clusterv1 "github.com/plughost/plughost/proto/plughost/cluster/v1"
)

// Entries finds a registered version in the catalog.
type Entries interface {
	Get(ctx context.Context, name, version string) (*catalog.Entry, error)
}

// ServerConfig is what a Server needs.
type ServerConfig struct {
	Node       string
	PluginsDir string // installed bundles: <PluginsDir>/<name>/<version>/
	// TempDir holds the archives being served (a 0700 dir of the agent's).
	TempDir string
	// Catalog is read for the version asked for (this node's copy).
	Catalog Entries
	// Concurrency is how many fetches are served at once (agent config
	// bundle_serve_concurrency); 0 takes DefaultServeConcurrency.
	Concurrency int
	// SendStall is how long one chunk may wait for the fetching peer to
	// take it before the fetch is ended and its slot given back: a peer
	// frozen (SIGSTOP) or cut off mid-fetch stops reading but keeps its
	// connection open for as long as TCP does, up to a quarter of an
	// hour. 0 takes DefaultSendStall.
	SendStall time.Duration
	Logger    hclog.Logger
}

// DefaultSendStall is ServerConfig.SendStall's default.
const DefaultSendStall = 30 * time.Second

// Server is the BundleService of a node's cluster RPC port. It serves only
// what the catalog names and this node installed: the request names a
// version, never a path.
type Server struct {
	clusterv1.UnimplementedBundleServiceServer
	cfg ServerConfig
	sem *semaphore.Weighted
}

// NewServer returns a Server.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultServeConcurrency
	}
	if cfg.SendStall <= 0 {
		cfg.SendStall = DefaultSendStall
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Server{cfg: cfg, sem: semaphore.NewWeighted(int64(cfg.Concurrency))}
}

func (s *Server) fail(code codes.Code, reason, msg string, meta map[string]string) error {
	if meta == nil {
		meta = map[string]string{}
	}
	meta["node"] = s.cfg.Node
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: clusterv1.ErrorDomain, Reason: reason, Metadata: meta}); err == nil {
		st = d
	}
	return st.Err()
}

// Fetch streams the archive of an installed version from req's offset.
func (s *Server) Fetch(req *clusterv1.FetchRequest, stream clusterv1.BundleService_FetchServer) error {
	name, version := req.GetName(), req.GetVersion()
	if !bundle.ValidName(name) || !bundle.ValidVersion(version) {
		return status.Errorf(codes.InvalidArgument, "%q %q is not a plugin name and version", name, version)
	}
	if !s.sem.TryAcquire(1) {
		return s.fail(codes.ResourceExhausted, clusterv1.ReasonServerBusy,
			fmt.Sprintf("node %s serves %d bundle fetches already: fetch %s %s from another node or try again", s.cfg.Node, s.cfg.Concurrency, name, version),
			map[string]string{"limit": "bundle_serve_concurrency"})
	}
	defer s.sem.Release(1)
	ctx := stream.Context()
	notHeld := func(why string) error {
		return s.fail(codes.NotFound, clusterv1.ReasonNotHeld, fmt.Sprintf("node %s does not serve %s %s: %s", s.cfg.Node, name, version, why), nil)
	}
	e, err := s.cfg.Catalog.Get(ctx, name, version)
	if err != nil {
		return notHeld(err.Error())
	}
	exe, err := e.ExecutableIn(s.cfg.PluginsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return notHeld("it is not installed here")
	}
	if err != nil {
		s.cfg.Logger.Warn("a peer asked for a bundle whose installed copy is refused here", "plugin", name, "version", version, "error", err)
		return notHeld(err.Error())
	}
	if err := os.MkdirAll(s.cfg.TempDir, 0o700); err != nil {
		return status.Errorf(codes.Internal, "node %s: %v", s.cfg.Node, err)
	}
	a, err := buildArchive(filepath.Dir(exe), s.cfg.TempDir)
	if err != nil {
		s.cfg.Logger.Warn("cannot serve a bundle to a peer", "plugin", name, "version", version, "error", err)
		return notHeld(err.Error())
	}
	defer os.Remove(a.path)
	off := req.GetOffset()
	if off < 0 || off > a.size {
		return s.fail(codes.OutOfRange, clusterv1.ReasonBadOffset,
			fmt.Sprintf("offset %d is outside %s %s's archive of %d bytes on node %s: fetch from 0", off, name, version, a.size, s.cfg.Node), nil)
	}
	f, err := os.Open(a.path)
	if err != nil {
		return status.Errorf(codes.Internal, "node %s: %v", s.cfg.Node, err)
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return status.Errorf(codes.Internal, "node %s: %v", s.cfg.Node, err)
	}
	buf := make([]byte, ChunkSize)
	for first := true; ; first = false {
		n, err := io.ReadFull(f, buf)
		if n > 0 || first {
			if serr := s.send(stream, &clusterv1.FetchResponse{Size: a.size, ArchiveSha256: a.sha256, Offset: off, Data: buf[:n]}, name, version); serr != nil {
				return serr
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return status.Errorf(codes.Internal, "node %s: reading the archive: %v", s.cfg.Node, err)
		}
	}
}

// send sends one chunk, or gives up once the peer has not taken it for
// SendStall. A gRPC Send cannot be abandoned: it runs on a goroutine of
// its own, which ends when the handler's return ends the stream (so the
// chunk's buffer is not reused before then: the handler returns at once).
func (s *Server) send(stream clusterv1.BundleService_FetchServer, msg *clusterv1.FetchResponse, name, version string) error {
	done := make(chan error, 1)
	go func() { done <- stream.Send(msg) }()
	timer := time.NewTimer(s.cfg.SendStall)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		s.cfg.Logger.Warn("a peer stopped reading a bundle it fetched; the fetch is ended", "plugin", name, "version", version, "stalled", s.cfg.SendStall)
		return s.fail(codes.DeadlineExceeded, clusterv1.ReasonSendStalled,
			fmt.Sprintf("node %s ended the fetch of %s %s: the fetching node took nothing for %s", s.cfg.Node, name, version, s.cfg.SendStall), nil)
	}
}
