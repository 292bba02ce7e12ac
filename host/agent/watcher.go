package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	hclog "github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/bundle"
)

// settle is how long a dropped bundle must stay unchanged before it is
// read, so that a copy still in progress is not refused as corrupt.
const settle = 150 * time.Millisecond

// watcher takes in bundles dropped into the bundles dir.
type watcher struct {
	dir, refused string
	install      func(ctx context.Context, path string) error
	log          hclog.Logger

	seen map[string]sighting // by path
}

type sighting struct {
	fp        fingerprint
	since     time.Time
	processed bool
}

type fingerprint struct {
	size  int64
	mtime time.Time
	n     int
}

// run scans at start, on every change in the dir, and every 2 s.
func (w *watcher) run(ctx context.Context) {
	w.seen = map[string]sighting{}
	fsw, err := fsnotify.NewWatcher()
	var events chan fsnotify.Event
	if err == nil {
		if err := fsw.Add(w.dir); err == nil {
			events = fsw.Events
		} else {
			w.log.Warn("watching the bundles dir failed; scanning every 2s", "dir", w.dir, "error", err)
		}
		defer fsw.Close()
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
			// Several events come per copy; scan once they pause briefly.
			timer.Reset(20 * time.Millisecond)
			continue
		case <-timer.C:
		}
		pending := w.scan(ctx)
		next := 2 * time.Second
		if pending {
			next = 50 * time.Millisecond
		}
		timer.Reset(next)
	}
}

// scan processes every settled bundle and reports whether some are still
// settling.
func (w *watcher) scan(ctx context.Context) (pending bool) {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		w.log.Warn("reading the bundles dir failed", "dir", w.dir, "error", err)
		return false
	}
	now := time.Now()
	present := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".tmp") || filepath.Join(w.dir, name) == w.refused {
			continue
		}
		if !e.IsDir() && !strings.HasSuffix(name, ".tar.gz") {
			continue
		}
		path := filepath.Join(w.dir, name)
		present[path] = true
		fp, ok := fingerprintOf(path)
		if !ok {
			continue
		}
		s, known := w.seen[path]
		if !known || s.fp != fp {
			w.seen[path] = sighting{fp: fp, since: now}
			pending = true
			continue
		}
		if s.processed {
			continue
		}
		if now.Sub(s.since) < settle {
			pending = true
			continue
		}
		s.processed = true
		w.seen[path] = s
		if err := w.install(ctx, path); err != nil {
			if ctx.Err() != nil {
				return false
			}
			moved, rerr := bundle.Refuse(path, w.refused, err)
			if rerr != nil {
				w.log.Error("bundle refused, and moving it aside failed", "bundle", path, "reason", err, "error", rerr)
			} else {
				w.log.Error("bundle refused", "bundle", path, "moved_to", moved, "reason", err)
				delete(w.seen, path)
			}
		}
	}
	for p := range w.seen {
		if !present[p] {
			delete(w.seen, p)
		}
	}
	return pending
}

// fingerprintOf summarizes a file, or a directory's files, so a change in
// progress is noticed.
func fingerprintOf(path string) (fingerprint, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return fingerprint{}, false
	}
	if !fi.IsDir() {
		return fingerprint{size: fi.Size(), mtime: fi.ModTime()}, true
	}
	fp := fingerprint{mtime: fi.ModTime()}
	entries, err := os.ReadDir(path)
	if err != nil {
		return fingerprint{}, false
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			return fingerprint{}, false
		}
		fp.n++
		fp.size += info.Size()
		if info.ModTime().After(fp.mtime) {
			fp.mtime = info.ModTime()
		}
	}
	return fp, true
}
