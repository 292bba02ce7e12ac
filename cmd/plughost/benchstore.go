package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"strconv"
	"time"

	"google.golang.org/grpc"

	"github.com/plughost/plughost/host/loadgen"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// storeBenchJSON is `plughost bench store -format json`.
type storeBenchJSON struct {
	Op          string  `json:"op"`
	Clients     int     `json:"clients"`
	Conns       int     `json:"conns"`
	Total       int     `json:"total"`
	ValSize     int     `json:"val_size"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"total_seconds"`
	RequestsSec float64 `json:"requests_per_sec"`
	AvgMs       float64 `json:"average_ms"`
	P50Ms       float64 `json:"p50_ms"`
	P90Ms       float64 `json:"p90_ms"`
	P99Ms       float64 `json:"p99_ms"`
	SlowestMs   float64 `json:"slowest_ms"`
	FirstError  string  `json:"first_error,omitempty"`
}

// benchStore loads an agent's store API the way etcd's benchmark tool does
// (put, or linearizable range of one key) and prints the same summary.
func benchStore(ctx context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("bench store", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	clients := fs.Int("clients", 1, "concurrent clients")
	conns := fs.Int("conns", 1, "gRPC connections the clients share")
	total := fs.Int("total", 10000, "requests in all")
	valSize := fs.Int("val-size", 256, "value size in bytes (put)")
	keySize := fs.Int("key-size", 8, "key size in bytes")
	keySpace := fs.Int("key-space", 1, "keys to spread requests over")
	ns := fs.String("ns", "bench", "namespace")
	consistency := fs.String("consistency", "linearizable", "get: linearizable, session or stale")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	if fs.NArg() != 1 || (fs.Arg(0) != "put" && fs.Arg(0) != "get") {
		return usagef("bench store takes put or get")
	}
	if *clients < 1 || *conns < 1 || *total < 1 || *valSize < 0 || *keySpace < 1 || *keySize < 1 {
		return usagef("bench store: -clients, -conns, -total, -key-space and -key-size must be positive, -val-size not negative")
	}
	cons, err := parseConsistency(*consistency)
	if err != nil {
		return err
	}
	op := fs.Arg(0)

	cc := make([]storev1.StoreServiceClient, *conns)
	for i := range cc {
		conn, err := cf.dialLoad()
		if err != nil {
			return err
		}
		defer conn.Close()
		cc[i] = storev1.NewStoreServiceClient(conn)
	}
	key := func(i int) []byte {
		k := []byte(strconv.Itoa(i))
		if len(k) >= *keySize {
			return k
		}
		pad := make([]byte, *keySize-len(k))
		for j := range pad {
			pad[j] = '0'
		}
		return append(pad, k...)
	}
	value := make([]byte, *valSize)
	_, _ = rand.Read(value)
	if op == "get" {
		// etcd's range benchmark reads existing keys.
		for i := 0; i < *keySpace; i++ {
			if _, err := cc[0].Put(ctx, &storev1.PutRequest{Namespace: *ns, Key: key(i), Value: value}); err != nil {
				return fmt.Errorf("bench store: preparing key %d: %w", i, err)
			}
		}
	}
	var call func(ctx context.Context, c storev1.StoreServiceClient, k []byte) error
	if op == "put" {
		call = func(ctx context.Context, c storev1.StoreServiceClient, k []byte) error {
			_, err := c.Put(ctx, &storev1.PutRequest{Namespace: *ns, Key: k, Value: value}, grpc.WaitForReady(false))
			return err
		}
	} else {
		call = func(ctx context.Context, c storev1.StoreServiceClient, k []byte) error {
			_, err := c.Get(ctx, &storev1.GetRequest{Namespace: *ns, Key: k, Consistency: cons})
			return err
		}
	}
	res, err := loadgen.Run(ctx, loadgen.Config{Clients: *clients, Total: *total}, func(ctx context.Context, client int) error {
		k := 0
		if *keySpace > 1 {
			k = mrand.IntN(*keySpace)
		}
		return call(ctx, cc[client%len(cc)], key(k))
	})
	if err != nil {
		return err
	}
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	out := storeBenchJSON{
		Op: op, Clients: *clients, Conns: *conns, Total: *total, ValSize: *valSize,
		Requests: res.Ops, Errors: res.Errors, Seconds: res.Elapsed.Seconds(), RequestsSec: math.Round(res.OpsPerSec),
		AvgMs: ms(res.Avg), P50Ms: ms(res.P50), P90Ms: ms(res.P90), P99Ms: ms(res.P99), SlowestMs: ms(res.Max),
		FirstError: res.FirstError,
	}
	if cf.format == "json" {
		return printJSON(env.stdout, out)
	}
	w := env.stdout
	fmt.Fprintf(w, "Summary:\n")
	fmt.Fprintf(w, "  Total:\t%.4f secs.\n", out.Seconds)
	fmt.Fprintf(w, "  Slowest:\t%.4f secs.\n", out.SlowestMs/1e3)
	fmt.Fprintf(w, "  Average:\t%.4f secs.\n", out.AvgMs/1e3)
	fmt.Fprintf(w, "  Requests/sec:\t%.4f\n\n", res.OpsPerSec)
	fmt.Fprintf(w, "Latency distribution:\n")
	fmt.Fprintf(w, "  50%% in %.4f secs.\n", out.P50Ms/1e3)
	fmt.Fprintf(w, "  90%% in %.4f secs.\n", out.P90Ms/1e3)
	fmt.Fprintf(w, "  99%% in %.4f secs.\n", out.P99Ms/1e3)
	fmt.Fprintf(w, "\nErrors: %d\n", out.Errors)
	if out.FirstError != "" {
		fmt.Fprintf(w, "  first: %s\n", out.FirstError)
	}
	return nil
}
