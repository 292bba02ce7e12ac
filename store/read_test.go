package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plughost/plughost/internal/testenv"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

func keysOf(kvs []*storev1.KeyValue) string {
	var ks []string
	for _, kv := range kvs {
		ks = append(ks, string(kv.GetKey()))
	}
	return strings.Join(ks, ",")
}

func TestList(t *testing.T) {
	s := newMemStore(t)
	for _, k := range []string{"a", "b/1", "b/2", "b/3", "c", "d", "\xff", "\xff\xff"} {
		put(t, s, "app", k, "value-of-"+k)
	}
	put(t, s, "app-x", "b/9", "other namespace")
	put(t, s, "ap", "b/8", "other namespace")

	tests := []struct {
		name string
		req  *storev1.ListRequest
		want string
	}{
		{"whole namespace", &storev1.ListRequest{}, "a,b/1,b/2,b/3,c,d,\xff,\xff\xff"},
		{"prefix", &storev1.ListRequest{Prefix: []byte("b/")}, "b/1,b/2,b/3"},
		{"prefix all 0xff", &storev1.ListRequest{Prefix: []byte("\xff")}, "\xff,\xff\xff"},
		{"prefix matching nothing", &storev1.ListRequest{Prefix: []byte("zz")}, ""},
		{"range", &storev1.ListRequest{Start: []byte("b/2"), End: []byte("d")}, "b/2,b/3,c"},
		{"start only", &storev1.ListRequest{Start: []byte("c")}, "c,d,\xff,\xff\xff"},
		{"end only", &storev1.ListRequest{End: []byte("b/2")}, "a,b/1"},
		{"empty range", &storev1.ListRequest{Start: []byte("d"), End: []byte("c")}, ""},
		{"limit", &storev1.ListRequest{Limit: 2}, "a,b/1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Namespace = "app"
			resp, err := s.List(testenv.Context(t, 20*time.Second), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := keysOf(resp.GetKvs()); got != tt.want {
				t.Errorf("keys %q, want %q", got, tt.want)
			}
			for _, kv := range resp.GetKvs() {
				if string(kv.GetValue()) != "value-of-"+string(kv.GetKey()) || kv.GetVersion() != 1 || kv.GetModRevision() == 0 {
					t.Errorf("kv %v", kv)
				}
			}
			if resp.GetRevision() != s.Revision() {
				t.Errorf("revision %d, store at %d", resp.GetRevision(), s.Revision())
			}
		})
	}

	t.Run("pages", func(t *testing.T) {
		for _, req := range []*storev1.ListRequest{
			{Limit: 3},
			{Limit: 1, Prefix: []byte("b/")},
			{Limit: 2, Start: []byte("b/2"), End: []byte("\xff\xff")},
		} {
			req.Namespace = "app"
			all, err := s.List(testenv.Context(t, 20*time.Second), &storev1.ListRequest{Namespace: "app", Prefix: req.Prefix, Start: req.Start, End: req.End})
			if err != nil {
				t.Fatal(err)
			}
			var got []*storev1.KeyValue
			for pages := 0; ; pages++ {
				resp, err := s.List(testenv.Context(t, 20*time.Second), req)
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.GetKvs()) > int(req.Limit) {
					t.Fatalf("page of %d > limit %d", len(resp.GetKvs()), req.Limit)
				}
				got = append(got, resp.GetKvs()...)
				if len(resp.GetNextPageToken()) == 0 {
					break
				}
				req.PageToken = resp.GetNextPageToken()
			}
			if keysOf(got) != keysOf(all.GetKvs()) {
				t.Errorf("paged %q, whole %q", keysOf(got), keysOf(all.GetKvs()))
			}
		}
	})

	t.Run("keys only", func(t *testing.T) {
		resp, err := s.List(testenv.Context(t, 20*time.Second), &storev1.ListRequest{Namespace: "app", Prefix: []byte("b/"), KeysOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if keysOf(resp.GetKvs()) != "b/1,b/2,b/3" {
			t.Fatalf("keys %q", keysOf(resp.GetKvs()))
		}
		for _, kv := range resp.GetKvs() {
			if kv.GetValue() != nil || kv.GetModRevision() == 0 {
				t.Errorf("keys-only kv %v", kv)
			}
		}
	})

	for _, tt := range []struct {
		name string
		req  *storev1.ListRequest
	}{
		{"prefix and start", &storev1.ListRequest{Namespace: "app", Prefix: []byte("b"), Start: []byte("a")}},
		{"prefix and end", &storev1.ListRequest{Namespace: "app", Prefix: []byte("b"), End: []byte("c")}},
		{"negative limit", &storev1.ListRequest{Namespace: "app", Limit: -1}},
		{"bad token", &storev1.ListRequest{Namespace: "app", PageToken: []byte{9, 'a'}}},
		{"unknown consistency", &storev1.ListRequest{Namespace: "app", Consistency: 9}},
	} {
		t.Run("invalid "+tt.name, func(t *testing.T) {
			_, err := s.List(testenv.Context(t, 20*time.Second), tt.req)
			wantErr(t, err, ErrInvalidRequest)
		})
	}
}

func TestListDefaultPageAndByteCap(t *testing.T) {
	s := newMemStore(t)
	// DefaultListLimit+1 small keys: the default page stops one short.
	var wg sync.WaitGroup
	errs := make(chan error, DefaultListLimit+1)
	for i := 0; i <= DefaultListLimit; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Put(context.Background(), &storev1.PutRequest{Namespace: "many", Key: fmt.Appendf(nil, "k%05d", i)})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	resp, err := s.List(testenv.Context(t, 20*time.Second), &storev1.ListRequest{Namespace: "many"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetKvs()) != DefaultListLimit || len(resp.GetNextPageToken()) == 0 {
		t.Errorf("default page: %d keys, token %q", len(resp.GetKvs()), resp.GetNextPageToken())
	}
	if n := len(listAll(t, s, "many")); n != DefaultListLimit+1 {
		t.Errorf("listed %d keys, want %d", n, DefaultListLimit+1)
	}

	// Ten 512 KiB values are more than a page may carry: the page ends
	// early, with a token, and paging still yields everything.
	for i := range 10 {
		if _, err := s.Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: "big", Key: fmt.Appendf(nil, "v%d", i), Value: make([]byte, DefaultMaxValueBytes)}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err = s.List(testenv.Context(t, 20*time.Second), &storev1.ListRequest{Namespace: "big", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetKvs()); n == 0 || n >= 10 || len(resp.GetNextPageToken()) == 0 {
		t.Errorf("page of large values: %d keys, token %q", n, resp.GetNextPageToken())
	}
	if n := len(listAll(t, s, "big")); n != 10 {
		t.Errorf("listed %d large values, want 10", n)
	}
}

func TestReadConsistency(t *testing.T) {
	s := newMemStore(t)
	p := put(t, s, "app", "k", "v")
	for _, c := range []storev1.Consistency{
		storev1.Consistency_CONSISTENCY_UNSPECIFIED,
		storev1.Consistency_CONSISTENCY_LINEARIZABLE,
		storev1.Consistency_CONSISTENCY_SESSION,
		storev1.Consistency_CONSISTENCY_STALE,
	} {
		t.Run(c.String(), func(t *testing.T) {
			resp, err := s.Get(testenv.Context(t, 20*time.Second), &storev1.GetRequest{Namespace: "app", Key: []byte("k"), Consistency: c, MinRevision: p.GetRevision()})
			if err != nil {
				t.Fatal(err)
			}
			if string(resp.GetKv().GetValue()) != "v" || resp.GetRevision() < p.GetRevision() {
				t.Errorf("read %v at revision %d", resp.GetKv(), resp.GetRevision())
			}
		})
	}

	t.Run("session waits for min revision", func(t *testing.T) {
		want := s.Revision() + 1
		got := make(chan *storev1.GetResponse, 1)
		go func() {
			resp, err := s.Get(testenv.Context(t, 20*time.Second), &storev1.GetRequest{Namespace: "app", Key: []byte("k"), Consistency: storev1.Consistency_CONSISTENCY_SESSION, MinRevision: want})
			if err != nil {
				t.Error(err)
			}
			got <- resp
		}()
		select {
		case r := <-got:
			t.Fatalf("session read for revision %d answered early: %v", want, r)
		default:
		}
		put(t, s, "app", "k", "v2")
		r := <-got
		if r.GetRevision() < want || string(r.GetKv().GetValue()) != "v2" {
			t.Errorf("session read = %v", r)
		}
	})

	t.Run("session wait bounded by ctx", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		_, err := s.Get(ctx, &storev1.GetRequest{Namespace: "app", Key: []byte("k"), Consistency: storev1.Consistency_CONSISTENCY_SESSION, MinRevision: s.Revision() + 1000})
		wantErr(t, err, context.DeadlineExceeded)
	})
}

func TestFollowerRefusesWritesAndLinearizableReads(t *testing.T) {
	// A node without a cluster never has a leader.
	cfg := DefaultConfig()
	cfg.InMemory = true
	tm := testTiming
	cfg.timing = &tm
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Put(testenv.Context(t, 20*time.Second), &storev1.PutRequest{Namespace: "app", Key: []byte("k")})
	wantErr(t, err, ErrNotLeader)
	_, err = s.Get(testenv.Context(t, 20*time.Second), &storev1.GetRequest{Namespace: "app", Key: []byte("k")})
	wantErr(t, err, ErrNotLeader)
	resp, err := s.Get(testenv.Context(t, 20*time.Second), &storev1.GetRequest{Namespace: "app", Key: []byte("k"), Consistency: storev1.Consistency_CONSISTENCY_STALE})
	if err != nil || resp.GetKv() != nil {
		t.Errorf("stale read on a follower: %v, %v", resp, err)
	}
	err = s.Backup(testenv.Context(t, 20*time.Second), &strings.Builder{})
	wantErr(t, err, ErrNotLeader)
}

func TestVerifierCoalesces(t *testing.T) {
	var calls atomic.Int32
	gate1, gate2 := make(chan struct{}), make(chan struct{})
	roundErr := errors.New("answer of a later round")
	var wg sync.WaitGroup
	v := newVerifier(func() error {
		switch calls.Add(1) {
		case 1:
			<-gate1
			return nil
		case 2:
			<-gate2
		}
		return roundErr
	}, &wg)
	defer wg.Wait()

	// The first caller starts round 1, which blocks.
	first := make(chan error, 1)
	go func() { first <- v.verify(context.Background()) }()
	testenv.Eventually(t, 5*time.Second, "round 1 to start", func() bool { return calls.Load() == 1 })

	// Callers arriving during round 1 must not be answered by it.
	const late = 200
	lateErrs := make(chan error, late)
	for range late {
		go func() { lateErrs <- v.verify(context.Background()) }()
	}
	testenv.Eventually(t, 5*time.Second, "late callers to wait", func() bool { return v.waiting.Load() == late+1 })
	close(gate1)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// Round 2 started as round 1 ended and holds every late caller.
	testenv.Eventually(t, 5*time.Second, "round 2 to start", func() bool { return calls.Load() == 2 })
	close(gate2)
	for range late {
		if err := <-lateErrs; !errors.Is(err, roundErr) {
			t.Fatalf("late caller got %v, want round 2's answer", err)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d leadership checks for %d callers, want 2", n, late+1)
	}
}
