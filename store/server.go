package store

import (
	"bufio"
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// backupChunkBytes is the size of the chunks Backup streams.
const backupChunkBytes = 1 << 20

// Server serves a Store over gRPC: StoreService for any namespace, and
// StoreAdminService for operators. Hand a plugin only a Bind of it. Errors
// become gRPC status codes here and nowhere else.
type Server struct {
	storev1.UnimplementedStoreServiceServer
	storev1.UnimplementedStoreAdminServiceServer
	store *Store
}

var (
	_ storev1.StoreServiceServer      = (*Server)(nil)
	_ storev1.StoreAdminServiceServer = (*Server)(nil)
)

// NewServer returns the gRPC server of s.
func NewServer(s *Store) *Server { return &Server{store: s} }

// Get reads one key.
func (srv *Server) Get(ctx context.Context, req *storev1.GetRequest) (*storev1.GetResponse, error) {
	resp, err := srv.store.Get(ctx, req)
	return resp, toStatus(err)
}

// Put writes one key.
func (srv *Server) Put(ctx context.Context, req *storev1.PutRequest) (*storev1.PutResponse, error) {
	resp, err := srv.store.Put(ctx, req)
	return resp, toStatus(err)
}

// Delete removes one key.
func (srv *Server) Delete(ctx context.Context, req *storev1.DeleteRequest) (*storev1.DeleteResponse, error) {
	resp, err := srv.store.Delete(ctx, req)
	return resp, toStatus(err)
}

// DeleteRange removes every key with a prefix.
func (srv *Server) DeleteRange(ctx context.Context, req *storev1.DeleteRangeRequest) (*storev1.DeleteRangeResponse, error) {
	resp, err := srv.store.DeleteRange(ctx, req)
	return resp, toStatus(err)
}

// List reads keys a page at a time.
func (srv *Server) List(ctx context.Context, req *storev1.ListRequest) (*storev1.ListResponse, error) {
	resp, err := srv.store.List(ctx, req)
	return resp, toStatus(err)
}

// Txn runs a transaction.
func (srv *Server) Txn(ctx context.Context, req *storev1.TxnRequest) (*storev1.TxnResponse, error) {
	resp, err := srv.store.Txn(ctx, req)
	return resp, toStatus(err)
}

// Watch streams changes.
func (srv *Server) Watch(req *storev1.WatchRequest, stream grpc.ServerStreamingServer[storev1.WatchResponse]) error {
	return toStatus(srv.store.Watch(stream.Context(), req, stream.Send))
}

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
		self, conn, _, err := srv.store.leaderTarget(ctx, "")
		if err != nil {
			return toStatus(err)
		}
		if !self {
			return srv.forwardRestore(ctx, conn, stream)
		}
	}
	resp, err := srv.store.Restore(ctx, &chunkReader{stream: stream})
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(resp)
}

func (srv *Server) forwardRestore(ctx context.Context, conn *grpc.ClientConn, stream grpc.ClientStreamingServer[storev1.RestoreRequest, storev1.RestoreResponse]) error {
	fctx := metadata.AppendToOutgoingContext(ctx, forwardedKey, srv.store.cfg.NodeID)
	cs, err := newClient(conn).admin.Restore(fctx)
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
		return leaderStatus(err, conn.Target())
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
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
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

// toStatus maps the store's errors to gRPC status codes, keeping the
// message. Errors that already carry a status pass through.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	return status.Error(codeOf(err), err.Error())
}

func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, ErrInvalidNamespace), errors.Is(err, ErrInvalidRequest), errors.Is(err, ErrCorruptBackup):
		return codes.InvalidArgument
	case errors.Is(err, ErrValueTooLarge), errors.Is(err, ErrQuotaExceeded):
		return codes.ResourceExhausted
	case errors.Is(err, ErrCASFailed):
		return codes.FailedPrecondition
	case errors.Is(err, ErrCompacted):
		return codes.OutOfRange
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrClosed):
		return codes.Unavailable
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, io.ErrUnexpectedEOF):
		return codes.InvalidArgument
	}
	return codes.Internal
}
