// Package scaffold writes a new plugin module: its proto, the buf.yaml and
// buf.gen.yaml that generate Go from it, a main that is one sdk.Serve call,
// a server and a test with sdk/sdktest. `plughost plugin init` runs it.
package scaffold

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"go/format"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"text/template"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
)

// The tool versions the scaffold's Makefile pins: the ones this repository
// generates its own code with (tools/buf/package.json, tools/go.mod).
const (
	BufVersion             = "1.73.0"
	ProtocGenGoVersion     = "v1.36.12"
	ProtocGenGoGRPCVersion = "v1.6.2"
)

// plughostModule is the module a plugin requires.
const plughostModule = "github.com/plughost/plughost"

//go:embed template
var templates embed.FS

// files maps each template to the path it is written to; {{.ProtoPackage}}
// in a path is replaced.
var files = map[string]string{
	"go.mod.tmpl":         "go.mod",
	"buf.yaml.tmpl":       "buf.yaml",
	"buf.gen.yaml.tmpl":   "buf.gen.yaml",
	"proto.tmpl":          "proto/{{.ProtoPackage}}/v1/{{.ProtoPackage}}.proto",
	"main.go.tmpl":        "main.go",
	"server.go.tmpl":      "server.go",
	"server_test.go.tmpl": "server_test.go",
	"Makefile.tmpl":       "Makefile",
	"README.md.tmpl":      "README.md",
}

// Config is what to write.
type Config struct {
	// Name is the plugin's name: [a-z][a-z0-9-]{0,62}, as the agent wants.
	Name string
	// Module is the Go module path; it defaults to example.com/NAME.
	Module string
	// Dir is where to write; it defaults to ./NAME and must not exist or be
	// empty.
	Dir string
	// PlughostVersion is the version of github.com/plughost/plughost to
	// require; empty leaves it to `go mod tidy`, which takes the latest.
	PlughostVersion string
	// Replace, when set, is a local checkout of plughost that go.mod
	// replaces the module with.
	Replace string
}

// Errors of Write.
var (
	ErrInvalidName = errors.New("invalid plugin name")
	ErrDirNotEmpty = errors.New("directory is not empty")
)

// data is what the templates see.
type data struct {
	Config
	ProtoPackage           string // the name without dashes: "key-value" -> "keyvalue"
	GoPackage              string // the generated package's import name: keyvaluev1
	Service                string // KeyValueService
	BufVersion             string
	ProtocGenGoVersion     string
	ProtocGenGoGRPCVersion string
}

// Write writes the plugin module cfg describes and returns the paths it
// wrote, relative to cfg.Dir, sorted.
func Write(cfg Config) ([]string, error) {
	if err := validName(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.Module == "" {
		cfg.Module = "example.com/" + cfg.Name
	}
	if err := module.CheckPath(cfg.Module); err != nil {
		return nil, fmt.Errorf("module path %q: %w", cfg.Module, err)
	}
	if cfg.Dir == "" {
		cfg.Dir = cfg.Name
	}
	if cfg.Replace != "" {
		abs, err := filepath.Abs(cfg.Replace)
		if err != nil {
			return nil, err
		}
		cfg.Replace = abs
		if cfg.PlughostVersion == "" {
			cfg.PlughostVersion = "v0.0.0"
		}
	}
	if err := emptyDir(cfg.Dir); err != nil {
		return nil, err
	}
	d := data{
		Config:                 cfg,
		ProtoPackage:           strings.ReplaceAll(cfg.Name, "-", ""),
		BufVersion:             BufVersion,
		ProtocGenGoVersion:     ProtocGenGoVersion,
		ProtocGenGoGRPCVersion: ProtocGenGoGRPCVersion,
	}
	d.GoPackage = d.ProtoPackage + "v1"
	for part := range strings.SplitSeq(cfg.Name, "-") {
		d.Service += strings.ToUpper(part[:1]) + part[1:]
	}
	d.Service += "Service"

	var written []string
	for tmpl, path := range files {
		path = strings.ReplaceAll(path, "{{.ProtoPackage}}", d.ProtoPackage)
		out, err := render(tmpl, d)
		if err != nil {
			return nil, err
		}
		if strings.HasSuffix(path, ".go") {
			if out, err = format.Source(out); err != nil {
				return nil, fmt.Errorf("scaffold: %s: %w", path, err)
			}
		}
		full := filepath.Join(cfg.Dir, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(full, out, 0o644); err != nil {
			return nil, err
		}
		written = append(written, path)
	}
	slices.Sort(written)
	return written, nil
}

func render(name string, d data) ([]byte, error) {
	t, err := template.ParseFS(templates, "template/"+name)
	if err != nil {
		return nil, fmt.Errorf("scaffold: %s: %w", name, err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, d); err != nil {
		return nil, fmt.Errorf("scaffold: %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

// validName accepts the names the agent accepts for a plugin.
func validName(name string) error {
	ok := len(name) > 0 && len(name) <= 63 && name[0] >= 'a' && name[0] <= 'z' &&
		!strings.HasSuffix(name, "-") && !strings.Contains(name, "--")
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("%w %q: use lowercase letters, digits and single dashes, starting with a letter (like key-value)", ErrInvalidName, name)
	}
	return nil
}

// emptyDir refuses a dir that holds anything.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("%w: %s: choose a new directory with -dir", ErrDirNotEmpty, dir)
	}
	return nil
}

// BuildVersion is the release of plughost this binary was built from, or ""
// for a development build (go build in a checkout).
func BuildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	v := bi.Main.Version
	if bi.Main.Path != plughostModule || !semver.IsValid(v) || strings.Contains(v, "+dirty") {
		return ""
	}
	return v
}
