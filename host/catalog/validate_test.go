package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// putRecord writes a raw record into the catalog, as anyone who can write
// _sys could.
func putRecord(t *testing.T, c *Catalog, key string, value []byte) {
	t.Helper()
	if _, err := c.st.Put(context.Background(), &storev1.PutRequest{Namespace: store.SystemNamespace, Key: []byte(key), Value: value}); err != nil {
		t.Fatal(err)
	}
}

// crafted returns a registered echo record, as JSON, changed by edit.
func crafted(t *testing.T, edit func(e map[string]any, m map[string]any)) []byte {
	t.Helper()
	b, err := json.Marshal(Entry{Name: "echo", Version: "1.0.0", SHA256: manifest("echo", "1.0.0", "ab").SHA256, Manifest: manifest("echo", "1.0.0", "ab")})
	if err != nil {
		t.Fatal(err)
	}
	var e map[string]any
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	edit(e, e["manifest"].(map[string]any))
	out, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCraftedRecordsAreRefusedOnRead(t *testing.T) {
	tests := []struct {
		name, key string
		edit      func(e, m map[string]any)
		want      string
	}{
		{"version with ../", "catalog/echo/../../x", func(e, m map[string]any) { e["version"], m["version"] = "../../x", "../../x" }, `version "../../x" is not strict semver`},
		{"absolute executable", "catalog/echo/1.0.0", func(e, m map[string]any) { m["executable"] = "/bin/sh" }, `executable "/bin/sh" must be a plain file name`},
		{"executable with ../", "catalog/echo/1.0.0", func(e, m map[string]any) { m["executable"] = "../../../../bin/sh" }, "must be a plain file name"},
		{"name differs from manifest", "catalog/echo/1.0.0", func(e, m map[string]any) { e["name"] = "other" }, `names plugin "other"`},
		{"digest differs from manifest", "catalog/echo/1.0.0", func(e, m map[string]any) { e["sha256"] = strings.Repeat("cd", 32) }, "gives sha256"},
		{"key differs from content", "catalog/echo/2.0.0", func(e, m map[string]any) {}, `whose key is "catalog/echo/1.0.0"`},
		{"unknown manifest field", "catalog/echo/1.0.0", func(e, m map[string]any) { m["command"] = "/bin/sh" }, `unknown field "command"`},
		{"no manifest", "catalog/echo/1.0.0", func(e, m map[string]any) { delete(e, "manifest") }, "it has no manifest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCatalog(t)
			ctx := context.Background()
			putRecord(t, c, tt.key, crafted(t, tt.edit))
			version := strings.TrimPrefix(tt.key, "catalog/echo/")
			_, err := c.Get(ctx, "echo", version)
			if !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("Get = %v, want ErrInvalidRecord", err)
			}
			for _, want := range []string{tt.key, tt.want, "no node runs it", "plughost store delete -ns _sys"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if vs, err := c.Versions(ctx, "echo"); err != nil || len(vs) != 0 {
				t.Errorf("Versions = %v, %v; want none", vs, err)
			}
			if refused, err := c.Refused(ctx, "echo"); err != nil || len(refused) != 1 || !errors.Is(refused[0], ErrInvalidRecord) {
				t.Errorf("Refused = %v, %v; want the record", refused, err)
			}
			if _, _, err := c.Desired(ctx, "echo"); !errors.Is(err, ErrUnknownPlugin) {
				t.Errorf("Desired = %v, want ErrUnknownPlugin", err)
			}
			if all, err := c.All(ctx); err != nil || len(all["echo"]) != 0 {
				t.Errorf("All = %v, %v", all, err)
			} else if _, listed := all["echo"]; !listed {
				t.Errorf("All does not list echo, whose only record was refused")
			}
		})
	}
}

// TestRefusedRecordLeavesTheRestServing: a crafted version beside real ones
// is left out; the real ones are what runs.
func TestRefusedRecordLeavesTheRestServing(t *testing.T) {
	c := newCatalog(t)
	ctx := context.Background()
	register(t, c, "1.0.0")
	putRecord(t, c, "catalog/echo/9.0.0", crafted(t, func(e, m map[string]any) {
		e["version"], m["version"], m["executable"] = "9.0.0", "9.0.0", "/bin/sh"
	}))
	e, _, err := c.Desired(ctx, "echo")
	if err != nil || e.Version != "1.0.0" {
		t.Fatalf("Desired = %v, %v; want 1.0.0", e, err)
	}
	if err := c.SetPin(ctx, "echo", "9.0.0", "test"); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("pinning the crafted version: %v, want ErrInvalidRecord", err)
	}
	// A crafted pin to it does not make it run either.
	putRecord(t, c, "pins/echo", []byte(`{"version":"9.0.0"}`))
	if _, _, err := c.Desired(ctx, "echo"); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("Desired with a pin to the crafted version: %v, want ErrInvalidRecord", err)
	}
}

func TestPluginOfKeyIgnoresInvalidNames(t *testing.T) {
	for key, want := range map[string]bool{"catalog/echo/1.0.0": true, "pins/echo": true, "catalog/../x": false, "catalog/Echo/1.0.0": false, "catalog//1.0.0": false} {
		if _, ok := PluginOfKey([]byte(key)); ok != want {
			t.Errorf("PluginOfKey(%q) ok = %v, want %v", key, ok, want)
		}
	}
}

func TestExecutableIn(t *testing.T) {
	storeDir := t.TempDir()
	e := &Entry{Name: "echo", Version: "1.0.0", SHA256: manifest("echo", "1.0.0", "ab").SHA256, Manifest: manifest("echo", "1.0.0", "ab")}
	dir := filepath.Join(storeDir, "echo", "1.0.0")

	if _, err := e.ExecutableIn(storeDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("not installed: %v, want fs.ErrNotExist", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "echo")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o500); err != nil {
		t.Fatal(err)
	}
	got, err := e.ExecutableIn(storeDir)
	if err != nil || got != exe {
		t.Fatalf("installed: %q, %v; want %q", got, err, exe)
	}

	// A symlink that leaves the store.
	outside := filepath.Join(t.TempDir(), "sh")
	if err := os.WriteFile(outside, []byte("#!/bin/sh\n"), 0o500); err != nil {
		t.Fatal(err)
	}
	os.Remove(exe)
	if err := os.Symlink(outside, exe); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ExecutableIn(storeDir); !errors.Is(err, ErrOutsideStore) || !strings.Contains(err.Error(), "resolves to "+outside) {
		t.Fatalf("symlink out of the store: %v, want ErrOutsideStore naming %s", err, outside)
	}
	// A symlinked version directory.
	os.RemoveAll(dir)
	if err := os.Symlink(filepath.Dir(outside), dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(outside, filepath.Join(filepath.Dir(outside), "echo")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ExecutableIn(storeDir); !errors.Is(err, ErrOutsideStore) {
		t.Fatalf("symlinked version dir: %v, want ErrOutsideStore", err)
	}
	// A file others may write.
	os.Remove(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o500); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(exe, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ExecutableIn(storeDir); !errors.Is(err, ErrOutsideStore) || !strings.Contains(err.Error(), "writable by others") {
		t.Fatalf("world-writable executable: %v", err)
	}
	// An entry that was never valid.
	bad := *e
	bad.Version = "../../x"
	if _, err := bad.ExecutableIn(storeDir); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("invalid entry: %v, want ErrInvalidRecord", err)
	}
}
