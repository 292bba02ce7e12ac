package store

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/fsm"
	"github.com/plughost/plughost/store/local"
)

var backupNamespaces = []string{"app", "app-2", SystemNamespace, "later"}

func dump(t *testing.T, s *Store) map[string][]*storev1.KeyValue {
	t.Helper()
	out := make(map[string][]*storev1.KeyValue)
	for _, ns := range backupNamespaces {
		out[ns] = listAll(t, s, ns)
	}
	return out
}

func sameDump(t *testing.T, got, want map[string][]*storev1.KeyValue) {
	t.Helper()
	for _, ns := range backupNamespaces {
		if !equalKVs(got[ns], want[ns]) {
			t.Fatalf("namespace %q:\n got %v\nwant %v", ns, got[ns], want[ns])
		}
	}
}

func TestBackupRestoreRoundTrip(t *testing.T) {
	s := newMemStore(t)
	writeMix(t, s, "app", 20)
	writeMix(t, s, "app-2", 5)
	writeMix(t, s, SystemNamespace, 3)
	put(t, s, "app", "binary\x00\xff", "\x00\r\n$3\r\n") // bytes that look like the file format
	want := dump(t, s)
	var buf bytes.Buffer
	if err := s.Backup(testenv.Context(t, 20*time.Second), &buf); err != nil {
		t.Fatal(err)
	}
	backupRev := s.Revision()
	backup := buf.Bytes()

	// Change everything, then restore.
	put(t, s, "app", "key/0", "changed")
	if _, err := s.DeleteRange(testenv.Context(t, 20*time.Second), &storev1.DeleteRangeRequest{Namespace: "app-2", Prefix: []byte("key/")}); err != nil {
		t.Fatal(err)
	}
	put(t, s, "later", "k", "written after the backup")
	watcher := make(chan error, 1)
	start := s.Revision() + 1
	go func() {
		watcher <- s.Watch(testenv.Context(t, 20*time.Second), &storev1.WatchRequest{Namespace: "app", StartRevision: start}, func(*storev1.WatchResponse) error { return nil })
	}()
	testenv.Eventually(t, 5*time.Second, "the watch to start", func() bool { return s.fsm.Hub().Watchers() == 1 })

	resp, err := s.Restore(testenv.Context(t, 20*time.Second), bytes.NewReader(backup), RestoreOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	var keys int
	for _, kvs := range want {
		keys += len(kvs)
	}
	if resp.GetKeys() != int64(keys) || resp.GetRevision() <= backupRev || resp.GetRevision() != s.Revision() {
		t.Errorf("restore response %v: want %d keys at the current revision %d", resp, keys, s.Revision())
	}
	sameDump(t, dump(t, s), want)

	// A watch running across the restore ends and says why.
	select {
	case err := <-watcher:
		wantErr(t, err, ErrCompacted)
		if !strings.Contains(err.Error(), "backup") {
			t.Errorf("watch error does not mention the restore: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch across a restore did not end")
	}

	// The store works on after the restore: TTL index and usage rebuilt.
	if p := put(t, s, "app", "after", "v"); p.GetRevision() <= resp.GetRevision() {
		t.Errorf("write after restore at revision %d", p.GetRevision())
	}
	if u := s.fsm.Usage("later"); u != (fsm.Usage{}) {
		t.Errorf("usage of a namespace the backup lacks = %+v", u)
	}

	// A fresh store restored from the same file holds the same data.
	fresh := newMemStore(t)
	if _, err := fresh.Restore(testenv.Context(t, 20*time.Second), bytes.NewReader(backup), RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	sameDump(t, dump(t, fresh), want)

	// Backup of the restored store is the same file, revision aside.
	var again bytes.Buffer
	if err := fresh.Backup(testenv.Context(t, 20*time.Second), &again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes()[40:again.Len()-32], backup[40:len(backup)-32]) {
		t.Error("a backup of the restored store differs from the original backup")
	}
}

func TestRestoreRefusesCorruptBackup(t *testing.T) {
	s := newMemStore(t)
	writeMix(t, s, "app", 10)
	var buf bytes.Buffer
	if err := s.Backup(testenv.Context(t, 20*time.Second), &buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	put(t, s, "app", "live", "must survive")
	live := dump(t, s)
	liveRev := s.Revision()

	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		return b
	}
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "shorter than a header"},
		{"header only", good[:40], "shorter than a header"},
		{"truncated in the payload", good[:len(good)/2], "truncated"},
		{"last byte missing", good[:len(good)-1], "truncated"},
		{"trailing garbage", append(bytes.Clone(good), 'x'), "padded"},
		{"bad magic", flip(0), "magic"},
		{"future version", flip(11), "version"},
		{"flipped payload byte", flip(len(good) / 2), "checksum"},
		{"flipped revision", flip(20), "checksum"},
		{"flipped checksum", flip(len(good) - 1), "checksum"},
		{"not a backup", []byte(strings.Repeat("hello world ", 20)), "magic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Restore(testenv.Context(t, 20*time.Second), bytes.NewReader(tt.file), RestoreOptions{Force: true})
			wantErr(t, err, ErrCorruptBackup)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if s.Revision() != liveRev {
				t.Errorf("a refused restore reached the log: revision %d -> %d", liveRev, s.Revision())
			}
			sameDump(t, dump(t, s), live)
		})
	}
}

// TestRestoreRefusesStoreWithData: without Force, a restore into a store
// that holds data is refused, naming each namespace it would replace (_sys
// first), and nothing changes; with Force it replaces them.
func TestRestoreRefusesStoreWithData(t *testing.T) {
	s := newMemStore(t)
	put(t, s, "app", "in-backup", "v")
	var buf bytes.Buffer
	if err := s.Backup(testenv.Context(t, 20*time.Second), &buf); err != nil {
		t.Fatal(err)
	}
	put(t, s, SystemNamespace, "catalog/echo", "v")
	put(t, s, "zeta", "a", "v")
	put(t, s, "zeta", "b", "v")
	live, liveRev := dump(t, s), s.Revision()

	_, err := s.Restore(testenv.Context(t, 20*time.Second), bytes.NewReader(buf.Bytes()), RestoreOptions{})
	wantErr(t, err, ErrNotEmpty)
	want := "holds data in _sys (1 key), app (1 key), zeta (2 keys)"
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "-force") {
		t.Errorf("error %q does not name %q and force", err, want)
	}
	if s.Revision() != liveRev {
		t.Errorf("a refused restore reached the log: revision %d -> %d", liveRev, s.Revision())
	}
	sameDump(t, dump(t, s), live)

	if _, err := s.Restore(testenv.Context(t, 20*time.Second), bytes.NewReader(buf.Bytes()), RestoreOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if kv := get(t, s, "zeta", "a"); kv != nil {
		t.Errorf("a forced restore kept a key the backup lacks: %v", kv)
	}
}

// A backup without ACL records is not restored over a store whose ACLs
// are bootstrapped, force or not: it would reopen 'acl bootstrap'. One
// taken since is.
func TestRestoreKeepsACLBootstrapped(t *testing.T) {
	s := newMemStore(t)
	ctx := testenv.Context(t, 20*time.Second)
	put(t, s, "app", "k", "v")
	var preACL bytes.Buffer
	if err := s.Backup(ctx, &preACL); err != nil {
		t.Fatal(err)
	}
	put(t, s, SystemNamespace, SystemACLBootstrapKey, `{"accessor_id":"x"}`)
	var withACL bytes.Buffer
	if err := s.Backup(ctx, &withACL); err != nil {
		t.Fatal(err)
	}
	live, liveRev := dump(t, s), s.Revision()
	_, err := s.Restore(ctx, bytes.NewReader(preACL.Bytes()), RestoreOptions{Force: true})
	wantErr(t, err, ErrBackupWithoutACL)
	if !strings.Contains(err.Error(), "acl bootstrap") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Errorf("error %q does not say what it would reopen and that nothing changed", err)
	}
	if st := status.Convert(local.ToStatus(err)); st.Code() != codes.FailedPrecondition {
		t.Errorf("status %v, want FAILED_PRECONDITION", st.Proto())
	}
	if s.Revision() != liveRev {
		t.Errorf("a refused restore reached the log: revision %d -> %d", liveRev, s.Revision())
	}
	sameDump(t, dump(t, s), live)
	if _, err := s.Restore(ctx, bytes.NewReader(withACL.Bytes()), RestoreOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
}
