package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
	"unicode/utf8"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

func runStore(ctx context.Context, env *cliEnv, args []string) error {
	sub, rest, err := subcommand("store", args)
	if err != nil {
		return err
	}
	// Each subcommand takes only the flags it uses, so that one given to
	// the wrong subcommand is refused rather than ignored.
	fs := flag.NewFlagSet("store "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var (
		ns, consistency  = new(string), new(string)
		ttl              = new(time.Duration)
		prefix, keysOnly = new(bool), new(bool)
		limit            = new(int)
	)
	needsNS := sub != "backup" && sub != "restore"
	if needsNS {
		fs.StringVar(ns, "ns", "", "namespace (a plugin's name, or _sys); required")
	}
	switch sub {
	case "get", "list":
		fs.StringVar(consistency, "consistency", "linearizable", "read consistency: linearizable, session or stale")
	case "put":
		fs.DurationVar(ttl, "ttl", 0, "expire the key after this long")
	case "delete":
		fs.BoolVar(prefix, "prefix", false, "delete every key with this prefix")
	}
	force := new(bool)
	if sub == "restore" {
		fs.BoolVar(force, "force", false, "replace a store that holds data (every namespace, and _sys with the plugin catalog, pins and history)")
	}
	if sub == "list" {
		fs.BoolVar(keysOnly, "keys-only", false, "keys without values")
		fs.IntVar(limit, "limit", 0, "at most this many keys (0: all)")
	}
	if err := parse(fs, rest); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	if needsNS && *ns == "" {
		return usagef("store %s: give -ns NAMESPACE", sub)
	}
	cons := storev1.Consistency_CONSISTENCY_UNSPECIFIED
	if *consistency != "" {
		if cons, err = parseConsistency(*consistency); err != nil {
			return err
		}
	}
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	c := storev1.NewStoreServiceClient(conn)
	w := env.stdout
	switch sub {
	case "get":
		if fs.NArg() != 1 {
			return usagef("store get takes KEY")
		}
		resp, err := c.Get(ctx, &storev1.GetRequest{Namespace: *ns, Key: []byte(fs.Arg(0)), Consistency: cons})
		if err != nil {
			return err
		}
		if resp.GetKv() == nil {
			return fmt.Errorf("key %q not found in namespace %q", fs.Arg(0), *ns)
		}
		if cf.format == "json" {
			return printJSON(w, kvJSON(resp.GetKv()))
		}
		_, err = w.Write(append(resp.GetKv().GetValue(), '\n'))
		return err
	case "put":
		if fs.NArg() != 2 {
			return usagef("store put takes KEY VALUE ('-' reads the value from stdin)")
		}
		val := []byte(fs.Arg(1))
		if fs.Arg(1) == "-" {
			if val, err = io.ReadAll(os.Stdin); err != nil {
				return err
			}
		}
		resp, err := c.Put(ctx, &storev1.PutRequest{Namespace: *ns, Key: []byte(fs.Arg(0)), Value: val, TtlMs: ttl.Milliseconds()})
		if err != nil {
			return err
		}
		if cf.format == "json" {
			return printJSON(w, map[string]any{"revision": resp.GetRevision()})
		}
		fmt.Fprintf(w, "ok, revision %d\n", resp.GetRevision())
		return nil
	case "delete":
		if fs.NArg() != 1 {
			return usagef("store delete takes KEY (or PREFIX with -prefix)")
		}
		var n int64
		var rev int64
		if *prefix {
			resp, err := c.DeleteRange(ctx, &storev1.DeleteRangeRequest{Namespace: *ns, Prefix: []byte(fs.Arg(0))})
			if err != nil {
				return err
			}
			n, rev = resp.GetDeleted(), resp.GetRevision()
		} else {
			resp, err := c.Delete(ctx, &storev1.DeleteRequest{Namespace: *ns, Key: []byte(fs.Arg(0))})
			if err != nil {
				return err
			}
			if resp.GetDeleted() {
				n = 1
			}
			rev = resp.GetRevision()
		}
		if cf.format == "json" {
			return printJSON(w, map[string]any{"deleted": n, "revision": rev})
		}
		fmt.Fprintf(w, "deleted %d, revision %d\n", n, rev)
		return nil
	case "list":
		if fs.NArg() > 1 {
			return usagef("store list takes [PREFIX]")
		}
		var all []*storev1.KeyValue
		var token []byte
		for {
			page := int32(1000)
			if *limit > 0 && *limit-len(all) < int(page) {
				page = int32(*limit - len(all))
			}
			resp, err := c.List(ctx, &storev1.ListRequest{Namespace: *ns, Prefix: []byte(fs.Arg(0)), Limit: page, PageToken: token, KeysOnly: *keysOnly, Consistency: cons})
			if err != nil {
				return err
			}
			all = append(all, resp.GetKvs()...)
			token = resp.GetNextPageToken()
			if len(token) == 0 || (*limit > 0 && len(all) >= *limit) {
				break
			}
		}
		if cf.format == "json" {
			out := make([]map[string]any, 0, len(all))
			for _, kv := range all {
				out = append(out, kvJSON(kv))
			}
			return printJSON(w, out)
		}
		var rows [][]string
		for _, kv := range all {
			rows = append(rows, []string{printable(kv.GetKey()), strconv.FormatInt(kv.GetModRevision(), 10), strconv.FormatInt(kv.GetVersion(), 10), clip(printable(kv.GetValue()), 60)})
		}
		return table(w, []string{"KEY", "MOD_REV", "VERSION", "VALUE"}, rows)
	case "backup":
		if fs.NArg() != 1 {
			return usagef("store backup takes FILE")
		}
		return storeBackup(ctx, env, storev1.NewStoreAdminServiceClient(conn), fs.Arg(0))
	}
	if fs.NArg() != 1 {
		return usagef("store restore takes FILE")
	}
	return storeRestore(ctx, env, storev1.NewStoreAdminServiceClient(conn), fs.Arg(0), *force)
}

func kvJSON(kv *storev1.KeyValue) map[string]any {
	out := map[string]any{
		"key": printable(kv.GetKey()), "create_revision": kv.GetCreateRevision(),
		"mod_revision": kv.GetModRevision(), "version": kv.GetVersion(),
	}
	if utf8.Valid(kv.GetValue()) {
		out["value"] = string(kv.GetValue())
	} else {
		out["value_base64"] = base64.StdEncoding.EncodeToString(kv.GetValue())
	}
	if kv.GetExpiresAtUnixMs() > 0 {
		out["expires_at"] = time.UnixMilli(kv.GetExpiresAtUnixMs()).UTC().Format(time.RFC3339Nano)
	}
	return out
}

func printable(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return "base64:" + base64.StdEncoding.EncodeToString(b)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func storeBackup(ctx context.Context, env *cliEnv, c storev1.StoreAdminServiceClient, path string) error {
	stream, err := c.Backup(ctx, &storev1.BackupRequest{})
	if err != nil {
		return err
	}
	// A backup holds every key of every namespace: 0600 whatever the umask,
	// and on a .partial file an earlier run left.
	tmp := path + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	var n int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f.Close()
			os.Remove(tmp)
			return err
		}
		if _, err := f.Write(msg.GetChunk()); err != nil {
			f.Close()
			os.Remove(tmp)
			return err
		}
		n += int64(len(msg.GetChunk()))
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "backup written to %s (%d bytes)\n", path, n)
	return nil
}

// storeRestore sends a backup to the agent. The agent refuses to replace a
// store that holds data unless force, naming what it would replace.
func storeRestore(ctx context.Context, env *cliEnv, c storev1.StoreAdminServiceClient, path string, force bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	stream, err := c.Restore(ctx)
	if err != nil {
		return err
	}
	// force goes first. A failed Send means the agent ended the stream:
	// CloseAndRecv says why.
	if stream.Send(&storev1.RestoreRequest{Force: force}) == nil {
		if err := sendChunks(f, func(b []byte) error { return stream.Send(&storev1.RestoreRequest{Chunk: b}) }); err != nil {
			return err
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "restored %d keys from %s, revision %d\n", resp.GetKeys(), path, resp.GetRevision())
	return nil
}
