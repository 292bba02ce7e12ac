package scaffold

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
)

// TestToolVersionsAreThisRepositorys keeps the scaffold's pins on the tools
// this repository generates its own code with.
func TestToolVersionsAreThisRepositorys(t *testing.T) {
	raw, err := os.ReadFile("../../tools/buf/package.json")
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct{ Dependencies map[string]string }
	if err := json.Unmarshal(raw, &pkg); err != nil {
		t.Fatal(err)
	}
	if got := pkg.Dependencies["@bufbuild/buf"]; got != BufVersion {
		t.Errorf("tools/buf/package.json pins buf %s, the scaffold %s", got, BufVersion)
	}
	raw, err = os.ReadFile("../../tools/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.Parse("tools/go.mod", raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"google.golang.org/protobuf":                    ProtocGenGoVersion,
		"google.golang.org/grpc/cmd/protoc-gen-go-grpc": ProtocGenGoGRPCVersion,
	}
	for _, r := range mf.Require {
		if v, ok := want[r.Mod.Path]; ok {
			if r.Mod.Version != v {
				t.Errorf("tools/go.mod has %s %s, the scaffold %s", r.Mod.Path, r.Mod.Version, v)
			}
			delete(want, r.Mod.Path)
		}
	}
	for path := range want {
		t.Errorf("tools/go.mod does not require %s", path)
	}
}

func TestWriteRefuses(t *testing.T) {
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"uppercase", Config{Name: "Greeter", Dir: t.TempDir()}, ErrInvalidName},
		{"underscore", Config{Name: "key_value", Dir: t.TempDir()}, ErrInvalidName},
		{"leading digit", Config{Name: "1kv", Dir: t.TempDir()}, ErrInvalidName},
		{"trailing dash", Config{Name: "kv-", Dir: t.TempDir()}, ErrInvalidName},
		{"double dash", Config{Name: "k--v", Dir: t.TempDir()}, ErrInvalidName},
		{"empty", Config{Name: "", Dir: t.TempDir()}, ErrInvalidName},
		{"dir not empty", Config{Name: "kv", Dir: full}, ErrDirNotEmpty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Write(tt.cfg); !errors.Is(err, tt.want) {
				t.Errorf("Write(%+v) = %v, want %v", tt.cfg, err, tt.want)
			}
		})
	}
	if _, err := Write(Config{Name: "kv", Module: "not a module path", Dir: t.TempDir()}); err == nil {
		t.Error("Write accepted the module path \"not a module path\"")
	}
}

func TestWriteNames(t *testing.T) {
	dir := t.TempDir()
	got, err := Write(Config{Name: "key-value", Module: "example.com/kv", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(files) {
		t.Errorf("wrote %v, want %d files", got, len(files))
	}
	proto, err := os.ReadFile(filepath.Join(dir, "proto", "keyvalue", "v1", "keyvalue.proto"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"package keyvalue.v1;", "service KeyValueService {"} {
		if !contains(proto, s) {
			t.Errorf("keyvalue.proto lacks %q:\n%s", s, proto)
		}
	}
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !contains(gomod, "module example.com/kv\n") || contains(gomod, "replace") {
		t.Errorf("go.mod:\n%s", gomod)
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }
