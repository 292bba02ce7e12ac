package rollout

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/plughost/plughost/host/intent"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// Snapshots keeps the data of stateful plugins safe across rollouts. The
// controller calls Take before the first domain of a rollout of a plugin
// and records what it returns in the rollout (Rollout.Snapshot); after a
// rollback with RestoreData, once the old version serves again, it calls
// Restore with that rollout.
type Snapshots interface {
	Take(ctx context.Context, r *intent.Rollout) (*intent.RolloutSnapshot, error) // nil, nil: no data
	Restore(ctx context.Context, r *intent.Rollout) error
}

// A plugin's data is its store namespace, named as the plugin. A snapshot
// is the namespace's dump (store.NamespaceDump: a canonical encoding of its
// keys, values and expiry times at one revision), kept in the replicated
// store so that any leader can restore it, in chunks:
//
//	_sys rollsnap/<plugin>/<seq %010d>/<n %06d>
//
// Their values, joined in key order, are the dump; its SHA-256 is in the
// rollout's record. The newest Keep snapshots of a plugin are kept.
const PrefixSnapshot = "rollsnap/"

// SnapshotPrefix is where rollout seq of plugin keeps its snapshot.
func SnapshotPrefix(plugin string, seq int64) string {
	return fmt.Sprintf("%s%s/%010d/", PrefixSnapshot, plugin, seq)
}

// Errors of Restore.
var (
	// ErrNoSnapshot means the rollout has no snapshot to restore: its
	// plugin held no data when it began, or the snapshot was skipped.
	ErrNoSnapshot = errors.New("rollout: no snapshot")
	// ErrSnapshotGone means the snapshot was deleted since: only the
	// newest rollout_snapshot_keep of a plugin are kept.
	ErrSnapshotGone = errors.New("rollout: snapshot no longer kept")
	// ErrSnapshotCorrupt means the snapshot kept in the store does not
	// have the checksum recorded when it was taken. Nothing was changed.
	ErrSnapshotCorrupt = errors.New("rollout: snapshot corrupt")
)

// Snapshot defaults (agent config rollout_snapshot_keep and
// rollout_snapshot_max_bytes).
const (
	DefaultSnapshotKeep     = 3
	DefaultSnapshotMaxBytes = 64 << 20
	// DefaultSnapshotChunkBytes is the size of a chunk unless the store's
	// value limit is smaller.
	DefaultSnapshotChunkBytes = 256 << 10
	// txnEnvelopeBytes is what a chunk write's transaction holds besides
	// its chunks' values and keys.
	txnEnvelopeBytes = 4 << 10
	// maxTxnOps is the most operations the store takes in a transaction.
	maxTxnOps = 128
)

// SnapshotConfig configures StoreSnapshots.
type SnapshotConfig struct {
	// Keep is how many snapshots of a plugin are kept, newest first.
	Keep int
	// MaxBytes bounds the namespace a snapshot is taken of (keys and
	// values): above it, the rollout has none.
	MaxBytes int64
	// ChunkBytes is the size of the chunks a snapshot is kept in: at most
	// the store's max value bytes.
	ChunkBytes int
	// TxnBytes is the store's max_txn_bytes: the chunks are written in
	// transactions no larger.
	TxnBytes int
	Logger   hclog.Logger
	Clock    func() time.Time
}

// DefaultSnapshotConfig returns a configuration with every default.
func DefaultSnapshotConfig() SnapshotConfig {
	return SnapshotConfig{
		Keep:       DefaultSnapshotKeep,
		MaxBytes:   DefaultSnapshotMaxBytes,
		ChunkBytes: DefaultSnapshotChunkBytes,
		TxnBytes:   store.DefaultMaxTxnBytes,
	}
}

// Validate checks the configuration; zero fields mean their default.
func (c *SnapshotConfig) Validate() error {
	var errs []error
	if c.Keep < 0 {
		errs = append(errs, fmt.Errorf("rollout_snapshot_keep %d is negative (default %d)", c.Keep, DefaultSnapshotKeep))
	}
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("rollout_snapshot_max_bytes %d is negative (default %d)", c.MaxBytes, DefaultSnapshotMaxBytes))
	}
	if c.ChunkBytes < 0 || c.TxnBytes < 0 {
		errs = append(errs, fmt.Errorf("snapshot chunk bytes %d or txn bytes %d is negative", c.ChunkBytes, c.TxnBytes))
	}
	return errors.Join(errs...)
}

func (c SnapshotConfig) withDefaults() SnapshotConfig {
	d := DefaultSnapshotConfig()
	if c.Keep == 0 {
		c.Keep = d.Keep
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = d.MaxBytes
	}
	if c.ChunkBytes == 0 {
		c.ChunkBytes = d.ChunkBytes
	}
	if c.TxnBytes == 0 {
		c.TxnBytes = d.TxnBytes
	}
	// A transaction holds at least one chunk.
	c.ChunkBytes = max(1, min(c.ChunkBytes, c.TxnBytes-txnEnvelopeBytes))
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c
}

// SnapshotStore is what StoreSnapshots needs of the store; *store.Store
// has it, on the leader.
type SnapshotStore interface {
	List(ctx context.Context, req *storev1.ListRequest) (*storev1.ListResponse, error)
	Txn(ctx context.Context, req *storev1.TxnRequest) (*storev1.TxnResponse, error)
	CaptureNamespace(ctx context.Context, ns string, maxBytes int64) (*store.NamespaceDump, error)
	RestoreNamespace(ctx context.Context, ns, source string, sum []byte) (rev, keys int64, err error)
	NamespaceUsage(ns string) (keys, bytes int64, quota store.Quota)
}

var _ SnapshotStore = (*store.Store)(nil)

// StoreSnapshots keeps rollout snapshots in the replicated store.
type StoreSnapshots struct {
	st  SnapshotStore
	cfg SnapshotConfig
}

var _ Snapshots = (*StoreSnapshots)(nil)

// NewSnapshots returns the snapshots of st. cfg must be valid.
func NewSnapshots(st SnapshotStore, cfg SnapshotConfig) *StoreSnapshots {
	return &StoreSnapshots{st: st, cfg: cfg.withDefaults()}
}

// Take snapshots the namespace of r's plugin: it reads the whole namespace
// at one revision, keeps it under SnapshotPrefix(r.Plugin, r.Seq) (any
// earlier attempt's chunks replaced), and deletes the plugin's snapshots
// older than the newest Keep. It returns nil when the namespace holds no
// data, and a snapshot with Skipped set, saying why and what to do, when
// it takes none (over MaxBytes, or the store's _sys quota refused it). An
// error is worth retrying: nothing the rollout can rely on was kept.
func (s *StoreSnapshots) Take(ctx context.Context, r *intent.Rollout) (*intent.RolloutSnapshot, error) {
	ns := r.Plugin
	d, err := s.st.CaptureNamespace(ctx, ns, s.cfg.MaxBytes)
	if err != nil {
		return nil, fmt.Errorf("rollout %s: snapshot of namespace %s: %w", r.ID, ns, err)
	}
	if d.Keys == 0 {
		return nil, nil
	}
	snap := &intent.RolloutSnapshot{Namespace: ns, Keys: int(d.Keys), Bytes: d.Bytes, Revision: d.Revision, Taken: s.cfg.Clock().UTC()}
	if d.Data == nil {
		snap.Skipped = fmt.Sprintf("namespace %s holds %s, more than rollout_snapshot_max_bytes (%s): no snapshot was taken, so this rollout cannot restore its data; raise rollout_snapshot_max_bytes in the agent config to snapshot it",
			ns, byteSize(d.Bytes), byteSize(s.cfg.MaxBytes))
		return snap, nil
	}
	// Snapshots live in _sys beside the catalog, intents and assignments:
	// they may fill at most half of its quota, so that those always have
	// room.
	_, sys, q := s.st.NamespaceUsage(store.SystemNamespace)
	if q.MaxBytes > 0 && sys+int64(len(d.Data)) > q.MaxBytes/2 {
		snap.Skipped = fmt.Sprintf("keeping the snapshot of namespace %s (%s) would take %s to %s of its %s quota, and snapshots may fill at most half of it: no snapshot was taken, so this rollout cannot restore its data; raise quotas.%s.max_bytes in the agent config, or lower rollout_snapshot_keep",
			ns, byteSize(int64(len(d.Data))), store.SystemNamespace, byteSize(sys+int64(len(d.Data))), byteSize(q.MaxBytes), store.SystemNamespace)
		return snap, nil
	}
	prefix := SnapshotPrefix(r.Plugin, r.Seq)
	if err := s.write(ctx, prefix, d.Data); err != nil {
		// Chunks of a snapshot no rollout records are of no use.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if derr := s.deletePrefixes(cctx, []string{prefix}); derr != nil {
			s.cfg.Logger.Warn("could not delete the chunks of a failed snapshot", "rollout", r.ID, "error", derr)
		}
		cancel()
		if errors.Is(err, store.ErrQuotaExceeded) {
			snap.Skipped = fmt.Sprintf("the store refused to keep the snapshot of namespace %s (%s): %v; raise the quota of %s (quotas.%s in the agent config) or lower rollout_snapshot_keep",
				ns, byteSize(d.Bytes), err, store.SystemNamespace, store.SystemNamespace)
			return snap, nil
		}
		return nil, fmt.Errorf("rollout %s: keeping the snapshot of namespace %s: %w", r.ID, ns, err)
	}
	sum := sha256.Sum256(d.Data)
	snap.SHA256 = hex.EncodeToString(sum[:])
	if err := s.prune(ctx, r.Plugin, r.Seq); err != nil {
		// The snapshot is kept; the next Take prunes again.
		s.cfg.Logger.Warn("could not delete old rollout snapshots", "plugin", r.Plugin, "error", err)
	}
	return snap, nil
}

// write keeps data in chunks under prefix, replacing what was there, in
// transactions of at most TxnBytes and maxTxnOps operations.
func (s *StoreSnapshots) write(ctx context.Context, prefix string, data []byte) error {
	if err := s.deletePrefixes(ctx, []string{prefix}); err != nil {
		return err
	}
	txn := &storev1.TxnRequest{Namespace: store.SystemNamespace}
	for n := 0; len(data) > 0; n++ {
		chunk := data[:min(len(data), s.cfg.ChunkBytes)]
		data = data[len(chunk):]
		op := &storev1.TxnOp{Op: &storev1.TxnOp_Put{Put: &storev1.TxnPut{Key: fmt.Appendf(nil, "%s%06d", prefix, n), Value: chunk}}}
		if len(txn.Success) >= maxTxnOps || (len(txn.Success) > 0 && proto.Size(txn)+proto.Size(op)+16 > s.cfg.TxnBytes) {
			if _, err := s.st.Txn(ctx, txn); err != nil {
				return err
			}
			txn = &storev1.TxnRequest{Namespace: store.SystemNamespace}
		}
		txn.Success = append(txn.Success, op)
	}
	_, err := s.st.Txn(ctx, txn)
	return err
}

// prune deletes the snapshots of plugin but the newest Keep, which hold
// seq's.
func (s *StoreSnapshots) prune(ctx context.Context, plugin string, seq int64) error {
	seqs, err := s.kept(ctx, plugin)
	if err != nil {
		return err
	}
	// Newest first; seq's own is kept whatever its number.
	slices.SortFunc(seqs, func(a, b int64) int { return cmp.Compare(b, a) })
	var old []string
	kept := 1
	for _, q := range seqs {
		if q == seq {
			continue
		}
		if kept < s.cfg.Keep {
			kept++
			continue
		}
		old = append(old, SnapshotPrefix(plugin, q))
	}
	return s.deletePrefixes(ctx, old)
}

// kept lists the seqs of the rollouts of plugin that keep a snapshot.
func (s *StoreSnapshots) kept(ctx context.Context, plugin string) ([]int64, error) {
	base := PrefixSnapshot + plugin + "/"
	var seqs []int64
	var token []byte
	for {
		resp, err := s.st.List(ctx, &storev1.ListRequest{Namespace: store.SystemNamespace, Prefix: []byte(base), KeysOnly: true, PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, kv := range resp.GetKvs() {
			rest := strings.TrimPrefix(string(kv.GetKey()), base)
			i := strings.IndexByte(rest, '/')
			if i < 0 {
				continue
			}
			q, err := strconv.ParseInt(rest[:i], 10, 64)
			if err != nil || (len(seqs) > 0 && seqs[len(seqs)-1] == q) {
				continue
			}
			seqs = append(seqs, q)
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			return seqs, nil
		}
	}
}

// deletePrefixes deletes every key under each prefix, maxTxnOps prefixes
// a transaction.
func (s *StoreSnapshots) deletePrefixes(ctx context.Context, prefixes []string) error {
	for len(prefixes) > 0 {
		batch := prefixes[:min(len(prefixes), maxTxnOps)]
		prefixes = prefixes[len(batch):]
		txn := &storev1.TxnRequest{Namespace: store.SystemNamespace}
		for _, p := range batch {
			txn.Success = append(txn.Success, &storev1.TxnOp{Op: &storev1.TxnOp_DeleteRange{DeleteRange: &storev1.TxnDeleteRange{Prefix: []byte(p)}}})
		}
		if _, err := s.st.Txn(ctx, txn); err != nil {
			return err
		}
	}
	return nil
}

// Restore replaces the namespace of r's plugin with the snapshot r took.
// It first reads the snapshot back and checks it against the checksum in
// r: a snapshot that fails it is refused (ErrSnapshotCorrupt) and nothing
// is changed. The namespace is then replaced in one entry of the store's
// log, which checks the checksum again: every node replaces it at one
// revision, and no reader sees it half restored. Restoring again changes
// nothing more.
func (s *StoreSnapshots) Restore(ctx context.Context, r *intent.Rollout) error {
	snap := r.Snapshot
	switch {
	case snap == nil:
		return fmt.Errorf("%w: rollout %s took no snapshot of namespace %s, which held no data when it began: there is nothing to restore, and the data was left as it is",
			ErrNoSnapshot, r.ID, r.Plugin)
	case snap.Skipped != "":
		return fmt.Errorf("%w: rollout %s took no snapshot (%s); the data was left as it is", ErrNoSnapshot, r.ID, snap.Skipped)
	}
	want, err := hex.DecodeString(snap.SHA256)
	if err != nil || len(want) != sha256.Size || snap.Namespace != r.Plugin {
		return fmt.Errorf("%w: rollout %s records a snapshot of namespace %q with checksum %q, not a snapshot of %s: nothing was restored",
			ErrSnapshotCorrupt, r.ID, snap.Namespace, snap.SHA256, r.Plugin)
	}
	prefix := SnapshotPrefix(r.Plugin, r.Seq)
	data, err := s.read(ctx, prefix)
	if err != nil {
		return fmt.Errorf("rollout %s: reading its snapshot: %w", r.ID, err)
	}
	if len(data) == 0 {
		return fmt.Errorf("%w: the snapshot of rollout %s (namespace %s, taken %s) was deleted: only the newest rollout_snapshot_keep (%d) snapshots of a plugin are kept; the data was left as it is",
			ErrSnapshotGone, r.ID, r.Plugin, snap.Taken.Format(time.RFC3339), s.cfg.Keep)
	}
	if got := sha256.Sum256(data); !bytes.Equal(got[:], want) {
		return fmt.Errorf("%w: the snapshot of rollout %s kept under %s/%s has SHA-256 %s, not the %s recorded when it was taken: it was altered or damaged, so nothing was restored and namespace %s keeps its current data",
			ErrSnapshotCorrupt, r.ID, store.SystemNamespace, prefix, hex.EncodeToString(got[:]), snap.SHA256, r.Plugin)
	}
	if _, _, err := s.st.RestoreNamespace(ctx, r.Plugin, prefix, want); err != nil {
		if errors.Is(err, store.ErrCorruptBackup) {
			return fmt.Errorf("%w: rollout %s: the store refused the snapshot, nothing was restored: %w", ErrSnapshotCorrupt, r.ID, err)
		}
		return fmt.Errorf("rollout %s: restoring namespace %s: %w", r.ID, r.Plugin, err)
	}
	return nil
}

// read joins the chunks under prefix, read linearizably.
func (s *StoreSnapshots) read(ctx context.Context, prefix string) ([]byte, error) {
	var data []byte
	var token []byte
	for {
		resp, err := s.st.List(ctx, &storev1.ListRequest{Namespace: store.SystemNamespace, Prefix: []byte(prefix), PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, kv := range resp.GetKvs() {
			data = append(data, kv.GetValue()...)
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			return data, nil
		}
	}
}

// byteSize spells n bytes for an operator.
func byteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
