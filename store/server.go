package store

import (
	"bufio"
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/local"
)

// backupChunkBytes is the size of the chunks Backup streams.
const backupChunkBytes = 1 << 20

// Server serves a Store over gRPC: StoreService for any namespace (store/
// local's, over the Store), and StoreAdminService for operators. Hand a
// plugin only a Bind of it. Errors become gRPC status codes here and
// nowhere else.
type Server struct {
	*local.Server
	storev1.UnimplementedStoreAdminServiceServer
	store *Store
}

var (
	_ storev1.StoreServiceServer      = (*Server)(nil)
	_ storev1.StoreAdminServiceServer = (*Server)(nil)
)

// NewServer returns the gRPC server of s.
func NewServer(s *Store) *Server { return &Server{Server: local.NewServer(s), store: s} }

// Backup streams a backup in chunks. On a follower it streams the
// leader's.
func (srv *Server) Backup(req *storev1.BackupRequest, stream grpc.ServerStreamingServer[storev1.BackupResponse]) error {
	ctx := stream.Context()
	w := bufio.NewWriterSize(chunkWriter{stream}, backupChunkBytes)
	err := srv.store.Backup(ctx, w)
	if err == nil {
		return toStatus(w.Flush())
	}
	if !needsLeader(err) || forwarded(ctx) {
		return toStatus(err)
	}
	self, conn, _, err := srv.store.leaderTarget(ctx, "")
	switch {
	case err != nil:
		return toStatus(err)
	case self:
		if err := srv.store.Backup(ctx, w); err != nil {
			return toStatus(err)
		}
		return toStatus(w.Flush())
	}
	fctx := metadata.AppendToOutgoingContext(ctx, forwardedKey, srv.store.cfg.NodeID)
	rs, err := newClient(conn).admin.Backup(fctx, req)
	if err != nil {
		return leaderStatus(err, conn.Target())
	}
	for {
		msg, err := rs.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return leaderStatus(err, conn.Target())
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
}

// Restore receives a backup in chunks and restores it. On a follower it
// passes the chunks on to the leader.
func (srv *Server) Restore(stream grpc.ClientStreamingServer[storev1.RestoreRequest, storev1.RestoreResponse]) error {
	ctx := stream.Context()
	if !forwarded(ctx) && !srv.store.IsLeader() {
		self, conn, id, err := srv.store.leaderTarget(ctx, "")
		if err != nil {
			return toStatus(err)
		}
		if !self {
			return srv.forwardRestore(ctx, conn, id, stream)
		}
	}
	// force comes in the first message.
	first, err := stream.Recv()
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	cr := &chunkReader{stream: stream, buf: first.GetChunk(), done: first == nil}
	resp, err := srv.store.Restore(ctx, cr, RestoreOptions{Force: first.GetForce()})
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(resp)
}

// forwardRestore passes a restore on to the leader. Like any forwarded
// write, one whose answer is lost fails with ErrOutcomeUnknown.
func (srv *Server) forwardRestore(ctx context.Context, conn *grpc.ClientConn, leader string, stream grpc.ClientStreamingServer[storev1.RestoreRequest, storev1.RestoreResponse]) error {
	fctx := metadata.AppendToOutgoingContext(ctx, forwardedKey, srv.store.cfg.NodeID)
	var p peer.Peer
	cs, err := newClient(conn).admin.Restore(fctx, grpc.Peer(&p))
	if err != nil {
		return leaderStatus(err, conn.Target())
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := cs.Send(msg); err != nil {
			break // the leader ended the stream; CloseAndRecv says why
		}
	}
	resp, err := cs.CloseAndRecv()
	if err != nil {
		_, err = forwardFailure(ctx, err, forwardedCall{leader: leader, target: conn.Target(), write: true, sent: p.Addr != nil})
		return toStatus(err)
	}
	return stream.SendAndClose(resp)
}

// chunkWriter sends each write as one backup chunk.
type chunkWriter struct {
	stream grpc.ServerStreamingServer[storev1.BackupResponse]
}

func (w chunkWriter) Write(p []byte) (int, error) {
	if err := w.stream.Send(&storev1.BackupResponse{Chunk: p}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// chunkReader reads the chunks of a restore stream as one byte stream.
type chunkReader struct {
	stream grpc.ClientStreamingServer[storev1.RestoreRequest, storev1.RestoreResponse]
	buf    []byte
	done   bool // the client ended the stream
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		msg, err := r.stream.Recv()
		if err != nil {
			return 0, err // io.EOF when the client is done
		}
		r.buf = msg.GetChunk()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// toStatus maps the store's errors to gRPC status codes.
func toStatus(err error) error { return local.ToStatus(err) }
