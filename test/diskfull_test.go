package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// TestAgentFullDisk runs an agent whose data dir is on a 24 MiB tmpfs and
// fills that disk, leaving room to finish the raft log's segment but not
// to start the next: writes are refused with UNAVAILABLE naming the data
// dir, none acknowledged is lost, and once the disk has room again writes
// succeed on the same agent process.
func TestAgentFullDisk(t *testing.T) {
	buildAll(t)
	disk := t.TempDir()
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size=24m,mode=0700"); err != nil {
		t.Skipf("this test fills a small disk and needs to mount a tmpfs (as root): mount on %s: %v", disk, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(disk, 0); err != nil {
			if err := syscall.Unmount(disk, syscall.MNT_DETACH); err != nil {
				t.Errorf("unmount the test's tmpfs %s: %v", disk, err)
			}
		}
	})
	a := &Agent{
		t: t, DataDir: filepath.Join(disk, "data"), API: testenv.FreeAddr(t), HTTP: testenv.FreeAddr(t), RPC: testenv.FreeAddr(t), Serf: testenv.FreeAddr(t),
		Node: "n1",
	}
	a.Start()
	t.Cleanup(func() {
		a.Stop()
		removeCgroupParent(t, a.CgroupParent())
		if t.Failed() {
			t.Logf("agent log:\n%s", a.Log())
		}
	})
	store := storev1.NewStoreServiceClient(a.Conn())
	value := func(i int) []byte { return fmt.Appendf(bytes.Repeat([]byte{'v'}, 8<<10), "%d", i) }
	put := func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := store.Put(ctx, &storev1.PutRequest{Namespace: "app", Key: fmt.Appendf(nil, "k%d", i), Value: value(i)})
		return err
	}
	var acked []int
	for i := range 20 {
		if err := put(i); err != nil {
			t.Fatalf("put before the disk is full: %v", err)
		}
		acked = append(acked, i)
	}

	filler := filepath.Join(disk, "filler")
	fill(t, filler)
	fi, err := os.Stat(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filler, fi.Size()-256<<10); err != nil {
		t.Fatal(err)
	}
	// 8 MiB of writes at most: past the end of the log's 4 MiB segment.
	var refused error
	next := 20
	for ; next < 1000 && refused == nil; next++ {
		if err := put(next); err != nil {
			refused = err
			break
		}
		acked = append(acked, next)
	}
	if refused == nil {
		t.Fatal("1000 puts of 8 KiB on a 24 MiB disk all succeeded")
	}
	if st := status.Convert(refused); st.Code() != codes.Unavailable ||
		!strings.Contains(st.Message(), "no space left on device in "+a.DataDir) || !strings.Contains(st.Message(), "free space") {
		t.Fatalf("put on a full disk: %v; want UNAVAILABLE naming %s and what to do", refused, a.DataDir)
	}
	_, stderr, code := a.CLI("store", "put", "-ns", "app", "cli", strings.Repeat("v", 64<<10))
	if code != 1 || !strings.Contains(stderr, "no space left on device in "+a.DataDir) {
		t.Fatalf("store put on a full disk: exit %d, stderr %q", code, stderr)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "a put to succeed once the disk has room", func() error { return put(next) })
	acked = append(acked, next)
	select {
	case <-a.exited:
		t.Fatalf("the agent exited: %v", a.exitErr)
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, i := range acked {
		resp, err := store.Get(ctx, &storev1.GetRequest{Namespace: "app", Key: fmt.Appendf(nil, "k%d", i)})
		if err != nil || !bytes.Equal(resp.GetKv().GetValue(), value(i)) {
			t.Fatalf("acknowledged k%d: %v, %d bytes", i, err, len(resp.GetKv().GetValue()))
		}
	}
}

// fill writes path until its disk is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, chunk := range []int{1 << 20, 4 << 10, 1} {
		buf := make([]byte, chunk)
		for range 1 << 16 {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill %s: %v", path, err)
				}
				break
			}
		}
	}
}
