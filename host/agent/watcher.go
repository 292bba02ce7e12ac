package agent

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	hclog "github.com/hashicorp/go-hclog"

	"github.com/plughost/plughost/host/bundle"
)

// settle is how long a dropped bundle must stay unchanged (same size and
// modification time, no write event) before it is read, so that a copy still
// in progress, even one that pauses for a second, is not refused as corrupt.
// Every change restarts the wait. On Linux a file that some process holds
// open for writing is not read at all, however long it stays unchanged (see
// openForWrite); where that check answers for every file of the bundle, a
// paused writer is seen through it, and the bundle only needs to be
// unchanged for quickSettle, which covers a writer that closes and reopens
// the file between writes.
const (
	settle      = 2 * time.Second
	quickSettle = 250 * time.Millisecond
)

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
	told      bool // that it waits for a writer to close the file
}

type fingerprint struct {
	size    int64
	mtime   time.Time
	n       int
	writing bool // some process has a file of it open for writing
	unsure  bool // whether a file is open for writing could not be told
}

// settleTime is how long a bundle with this fingerprint must stay unchanged.
func (fp fingerprint) settleTime() time.Duration {
	if fp.unsure {
		return settle
	}
	return quickSettle
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
		case ev := <-events:
			w.touched(ev.Name)
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

// touched restarts the wait of a bundle that an event says changed.
func (w *watcher) touched(path string) {
	if s, ok := w.seen[path]; ok && !s.processed {
		s.since = time.Now()
		w.seen[path] = s
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
		path := filepath.Join(w.dir, name)
		if e.Type()&fs.ModeSymlink != 0 {
			if w.isBundleLink(path) {
				present[path] = true
				w.refuseLink(path)
			}
			continue
		}
		if !e.IsDir() && !strings.HasSuffix(name, ".tar.gz") {
			continue
		}
		present[path] = true
		fp, ok := fingerprintOf(path)
		if !ok {
			continue
		}
		s, known := w.seen[path]
		if !known || s.fp != fp || fp.writing {
			if !known || s.fp != fp {
				s = sighting{fp: fp, since: now}
			} else if !s.told && now.Sub(s.since) >= fp.settleTime() {
				w.log.Info("bundle is still open for writing; waiting for the writer to close it", "bundle", path)
				s.told = true
			}
			w.seen[path] = s
			pending = true
			continue
		}
		if s.processed {
			continue
		}
		if now.Sub(s.since) < fp.settleTime() {
			pending = true
			continue
		}
		s.processed = true
		w.seen[path] = s
		if err := w.install(ctx, path); err != nil {
			if ctx.Err() != nil {
				return false
			}
			// A writer that came back while the bundle was read made it look
			// corrupt: wait for it to finish instead of refusing.
			if again, ok := fingerprintOf(path); ok && (again != fp || again.writing) {
				w.seen[path] = sighting{fp: again, since: time.Now()}
				pending = true
				continue
			}
			w.refuse(path, err)
		}
	}
	for p := range w.seen {
		if !present[p] {
			delete(w.seen, p)
		}
	}
	return pending
}

// refuse moves the bundle at path aside with the reason.
func (w *watcher) refuse(path string, reason error) {
	moved, err := bundle.Refuse(path, w.refused, reason)
	if err != nil {
		w.log.Error("bundle refused, and moving it aside failed", "bundle", path, "reason", reason, "error", err)
		return
	}
	w.log.Error("bundle refused", "bundle", path, "moved_to", moved, "reason", reason)
	delete(w.seen, path)
}

// isBundleLink reports whether the symlink at path stands where a bundle
// would: its name is an archive's, or it points at a directory. Other links,
// like other files, are not the watcher's business.
func (w *watcher) isBundleLink(path string) bool {
	if strings.HasSuffix(path, ".tar.gz") {
		return true
	}
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// refuseLink refuses the symlink at path, once: the watcher installs only
// what was put in the bundles dir itself, and never follows a link there.
func (w *watcher) refuseLink(path string) {
	if s, ok := w.seen[path]; ok && s.processed {
		return
	}
	w.seen[path] = sighting{processed: true}
	target, err := os.Readlink(path)
	if err != nil {
		target = "?"
	}
	w.refuse(path, fmt.Errorf("bundle %s is a symlink to %s: links in %s are not followed; copy or move the bundle itself into %s",
		filepath.Base(path), target, w.dir, w.dir))
}

// fingerprintOf summarizes a file, or a directory's files, so a change in
// progress is noticed: their sizes, the latest modification time, and
// whether one is open for writing.
func fingerprintOf(path string) (fingerprint, bool) {
	fi, err := os.Lstat(path)
	if err != nil {
		return fingerprint{}, false
	}
	if !fi.IsDir() {
		busy, ok := isWriting(path, fi)
		return fingerprint{size: fi.Size(), mtime: fi.ModTime(), writing: busy, unsure: !ok}, true
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
		busy, ok := isWriting(filepath.Join(path, e.Name()), info)
		fp.writing = fp.writing || busy
		fp.unsure = fp.unsure || !ok
	}
	return fp, true
}

// isWriting reports whether the regular file at path is open for writing,
// and whether that could be told (a directory or a link is never written).
func isWriting(path string, fi fs.FileInfo) (busy, ok bool) {
	if !fi.Mode().IsRegular() {
		return false, true
	}
	return openForWrite(path)
}
