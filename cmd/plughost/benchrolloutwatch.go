package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/plughost/plughost/host/intent"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// sysWatch streams the puts of _sys keys under a prefix, each with the
// time the bench received it, from the moment watchSys returned.
type sysWatch struct {
	puts chan sysPut
	errs chan error
	stop context.CancelFunc
}

// sysPut is one put of a watched key.
type sysPut struct {
	kv *storev1.KeyValue
	at time.Time
}

// watchSys starts watching prefix in _sys through conn. A stream that
// breaks is resumed after the last revision it delivered, up to ten
// times in a row; then the error goes to errs.
func watchSys(ctx context.Context, conn *grpc.ClientConn, prefix string) (*sysWatch, error) {
	st := storev1.NewStoreServiceClient(conn)
	// The revision the answering node has applied: the watch starts just
	// after it, so that nothing written once watchSys returned is missed.
	g, err := st.Get(ctx, &storev1.GetRequest{Namespace: store.SystemNamespace, Key: []byte(prefix),
		Consistency: storev1.Consistency_CONSISTENCY_STALE})
	if err != nil {
		return nil, fmt.Errorf("reading the store revision: %w", err)
	}
	ctx, stop := context.WithCancel(ctx)
	w := &sysWatch{puts: make(chan sysPut, 4096), errs: make(chan error, 1), stop: stop}
	next := g.GetRevision() + 1
	go func() {
		for failures := 0; ctx.Err() == nil; {
			stream, err := st.Watch(ctx, &storev1.WatchRequest{Namespace: store.SystemNamespace, Prefix: []byte(prefix), StartRevision: next})
			for err == nil {
				var resp *storev1.WatchResponse
				if resp, err = stream.Recv(); err != nil {
					break
				}
				failures = 0
				at := time.Now()
				for _, ev := range resp.GetEvents() {
					if ev.GetType() != storev1.EventType_EVENT_TYPE_PUT {
						continue
					}
					select {
					case w.puts <- sysPut{kv: ev.GetKv(), at: at}:
					case <-ctx.Done():
						return
					}
				}
				next = resp.GetRevision() + 1
			}
			if ctx.Err() != nil {
				return
			}
			if failures++; failures == 10 {
				w.errs <- fmt.Errorf("watching %s in %s: %w", prefix, store.SystemNamespace, err)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return w, nil
}

// rolloutSeen is a rollout record as the bench received it.
type rolloutSeen struct {
	r  *intent.Rollout
	at time.Time
}

// medianRange is the median, least and greatest of vs.
func medianRange(vs []float64) (med, lo, hi float64) {
	if len(vs) == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}

// secs formats seconds for the text output; 0 (did not happen) is "-".
func secs(v float64) string {
	if v == 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + "s"
}

// versionCounts formats calls by answering version, by version.
func versionCounts(m map[string]int) string {
	var vs []string
	for v := range m {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	var out []string
	for _, v := range vs {
		out = append(out, fmt.Sprintf("%s %d", v, m[v]))
	}
	return orDash(strings.Join(out, ", "))
}
