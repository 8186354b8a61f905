// Package pebble is Starling's durable store.Store on
// github.com/cockroachdb/pebble/v2: one pebble database in the data folder,
// a format marker key, records under a kind-prefixed key layout (codec.go)
// and versioned binary values.
//
// Commit(true) under sync policy "always" asks pebble for a synced write;
// pebble's commit pipeline groups concurrent synced writes into one WAL
// fsync (group commit), so many connections share one fsync. Under
// "interval" commits are written without sync and a goroutine syncs the WAL
// every SyncInterval; under "none" nothing syncs explicitly.
//
// Pebble treats a failed WAL write as fatal to the process (it calls
// Logger.Fatalf, which exits by default). This package turns that into an
// error returned by Commit: the failing database is marked broken, later
// commits reopen it (replaying its WAL) before writing, and Load keeps
// reading the last good state. See docs/durability.md.
package pebble

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/starling-mqtt/starling/internal/store"
)

// Options configure Open.
type Options struct {
	// Sync is the sync policy: store.SyncAlways (default when empty),
	// store.SyncInterval or store.SyncNone.
	Sync string
	// SyncInterval is how often the WAL is synced under SyncInterval;
	// default 100ms.
	SyncInterval time.Duration
	// Logger receives pebble's log lines and the store's own; default
	// slog.Default().
	Logger *slog.Logger
	// ReadOnly opens an existing store without writing to it (for
	// inspection); Commit then fails. The folder lock is still taken, so a
	// running broker's folder cannot be opened.
	ReadOnly bool

	fs vfs.FS // tests inject faults here; nil: the OS file system
}

// ErrLocked is returned (wrapped) by Open when another process, or this
// one, holds the data folder open.
var ErrLocked = errors.New("data folder is in use")

// DefaultSyncInterval is SyncInterval's default.
const DefaultSyncInterval = 100 * time.Millisecond

// Store is the pebble store. Use Open.
type Store struct {
	dir    string
	opts   Options
	policy string
	log    *slog.Logger
	lock   *pebble.Lock

	// mu guards db, broken and closed: commits and Load hold it shared,
	// Close and a reopen exclusively.
	mu     sync.RWMutex
	db     *pebble.DB
	broken error // the write error that broke db; nil when healthy
	closed bool
	// lastRepair is when a reopen of a broken db was last tried; tries are
	// at least repairEvery apart, commits in between fail at once.
	lastRepair  time.Time
	repairEvery time.Duration

	unsynced atomic.Bool   // a NoSync commit happened since the last sync (interval)
	passes   atomic.Uint64 // sync loop iterations completed (tests wait on it)
	stop     chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
	lastBG   atomic.Int64 // unix nanos of the last background error logged
}

// Open opens the store in dir, creating dir and an empty store when dir is
// missing or empty. A folder that holds something else, a pebble database
// that is not a Starling store, a store of another format or a corrupt store
// is an error that says so and what to do; Open never starts empty over
// existing data.
func Open(dir string, opts Options) (store.Store, error) {
	s, err := open(dir, opts)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func open(dir string, opts Options) (*Store, error) {
	switch opts.Sync {
	case "":
		opts.Sync = store.SyncAlways
	case store.SyncAlways, store.SyncInterval, store.SyncNone:
	default:
		return nil, fmt.Errorf("store: unknown sync policy %q (want %s, %s or %s)", opts.Sync, store.SyncAlways, store.SyncInterval, store.SyncNone)
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = DefaultSyncInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.fs == nil {
		opts.fs = vfs.Default
	}
	s := &Store{dir: dir, opts: opts, policy: opts.Sync, log: opts.Logger, repairEvery: time.Second}

	fresh, err := s.inspectDir()
	if err != nil {
		return nil, err
	}
	if fresh {
		if opts.ReadOnly {
			return nil, fmt.Errorf("store: %s holds no Starling store (the folder is missing or empty)", dir)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: create data folder: %w", err)
		}
	}
	lock, err := pebble.LockDirectory(dir, opts.fs)
	if err != nil {
		if isLockErr(err) {
			return nil, fmt.Errorf("store: %s: %w: another Starling (or `starling store`) has it open; stop it first, or inspect a copy of the folder", dir, ErrLocked)
		}
		return nil, fmt.Errorf("store: lock %s: %w", dir, err)
	}
	s.lock = lock
	db, err := s.openDB(!fresh, opts.ReadOnly)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s.db = db
	if err := s.checkMarker(); err != nil {
		db.Close()
		lock.Close()
		return nil, err
	}
	if s.policy == store.SyncInterval && !opts.ReadOnly {
		s.stop, s.stopped = make(chan struct{}), make(chan struct{})
		go s.syncLoop()
	}
	return s, nil
}

// inspectDir reports whether dir is missing or empty (a new store goes
// there), and refuses a non-empty folder without a pebble store in it.
func (s *Store) inspectDir() (fresh bool, err error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: read data folder: %w", err)
	}
	if len(entries) == 0 {
		return true, nil
	}
	for _, e := range entries {
		n := e.Name()
		if n == "CURRENT" || strings.HasPrefix(n, "MANIFEST-") || strings.HasPrefix(n, "marker.manifest.") {
			return false, nil
		}
	}
	return false, fmt.Errorf("store: %s is not a Starling data folder: it holds other files (%s, ...) and no store; "+
		"point -data at an empty or missing folder, or at a Starling data folder", s.dir, entries[0].Name())
}

func isLockErr(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) ||
		strings.Contains(err.Error(), "lock held")
}

// openDB opens pebble in s.dir under s.lock.
func (s *Store) openDB(mustExist, readOnly bool) (*pebble.DB, error) {
	el := pebble.MakeLoggingEventListener(logger{s.log})
	el.BackgroundError = s.backgroundError
	po := &pebble.Options{
		FS:               s.opts.fs,
		Lock:             s.lock,
		Logger:           logger{s.log},
		EventListener:    &el,
		ErrorIfNotExists: mustExist,
		ReadOnly:         readOnly,
	}
	db, err := guard(func() (*pebble.DB, error) { return pebble.Open(s.dir, po) })
	if err != nil {
		return nil, fmt.Errorf("store: open %s: cannot read the store (%w); it is corrupt or was written by an incompatible version: "+
			"restore the folder from a backup, or move it aside to start empty (losing its sessions, queued and retained messages)", s.dir, err)
	}
	return db, nil
}

// checkMarker checks the format marker, writing it into a new store.
func (s *Store) checkMarker() error {
	v, closer, err := s.db.Get(markerKey)
	if err == nil {
		marker := string(v)
		closer.Close()
		if marker == formatMarker {
			return nil
		}
		if strings.HasPrefix(marker, "starling-store ") {
			return fmt.Errorf("store: %s holds a store of format %q; this Starling reads %q: run the Starling version that wrote it, or move the folder aside to start empty", s.dir, marker, formatMarker)
		}
		return fmt.Errorf("store: %s holds a database with an unknown format marker %q, not a Starling store: point -data at another folder", s.dir, marker)
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return fmt.Errorf("store: read format marker in %s: %w", s.dir, err)
	}
	// No marker: only a database with no keys at all is ours (created, then
	// stopped before the marker was written).
	it, err := s.db.NewIter(nil)
	if err != nil {
		return fmt.Errorf("store: read %s: %w", s.dir, err)
	}
	empty := !it.First()
	err = errors.Join(it.Error(), it.Close())
	if err != nil {
		return fmt.Errorf("store: read %s: %w", s.dir, err)
	}
	if !empty {
		return fmt.Errorf("store: %s holds a pebble database that is not a Starling store (no format marker): point -data at another folder", s.dir)
	}
	if s.opts.ReadOnly {
		return fmt.Errorf("store: %s holds an empty store without a format marker", s.dir)
	}
	if err := s.apply(func(b *pebble.Batch) { b.Set(markerKey, []byte(formatMarker), nil) }, pebble.Sync); err != nil {
		return fmt.Errorf("store: write format marker: %w", err)
	}
	return nil
}

// fatal is what logger.Fatalf panics with; guard turns it into an error.
type fatal struct{ msg string }

// logger adapts pebble's Logger to slog. Fatalf panics instead of exiting:
// pebble calls it on a failed WAL write, in the committing goroutine, where
// guard recovers it.
type logger struct{ l *slog.Logger }

func (l logger) Infof(format string, args ...any) {
	l.l.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (l logger) Errorf(format string, args ...any) {
	l.l.Error("pebble: " + fmt.Sprintf(format, args...))
}

func (l logger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.l.Error("pebble: fatal: " + msg)
	panic(fatal{msg})
}

// guard calls f, turning a pebble fatal into an error.
func guard[T any](f func() (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = errors.New(f.msg)
		}
	}()
	return f()
}

// backgroundError logs pebble's background errors (a flush that cannot
// write, typically) at most once every 10 s: pebble retries at once.
func (s *Store) backgroundError(err error) {
	now := time.Now().UnixNano()
	last := s.lastBG.Load()
	if now-last < int64(10*time.Second) || !s.lastBG.CompareAndSwap(last, now) {
		return
	}
	s.log.Error("store: background write failed, retrying", "dir", s.dir, "err", err)
}

// apply commits the ops fill adds to a fresh pebble batch, with s.mu held
// (shared or exclusive) and s.db healthy.
func (s *Store) apply(fill func(b *pebble.Batch), wo *pebble.WriteOptions) error {
	db := s.db
	_, err := guard(func() (struct{}, error) {
		b := db.NewBatch()
		fill(b)
		err := b.Commit(wo)
		if err == nil {
			err = b.Close()
		}
		return struct{}{}, err
	})
	return err
}

// syncLoop syncs the WAL every SyncInterval when something was written
// without sync since the last time.
func (s *Store) syncLoop() {
	defer close(s.stopped)
	t := time.NewTicker(s.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.syncOnce()
		s.passes.Add(1)
	}
}

// syncOnce syncs the WAL if anything was committed since the last sync.
func (s *Store) syncOnce() {
	if !s.unsynced.Swap(false) {
		return
	}
	s.mu.RLock()
	if s.closed || s.broken != nil {
		s.mu.RUnlock()
		return
	}
	db := s.db
	_, err := guard(func() (struct{}, error) { return struct{}{}, db.LogData(nil, pebble.Sync) })
	s.mu.RUnlock()
	if err != nil {
		s.unsynced.Store(true)
		s.markBroken(db, err)
		s.log.Error("store: background sync failed", "dir", s.dir, "err", err)
	}
}

// markBroken records that db failed a write.
func (s *Store) markBroken(db *pebble.DB, err error) {
	s.mu.Lock()
	if s.db == db && s.broken == nil {
		s.broken = err
	}
	s.mu.Unlock()
}

// repair reopens a broken database, s.mu held exclusively. Pebble cannot
// write again through a database whose WAL write failed, so it is closed and
// opened again, which replays its WAL. Pebble's Open waits for the flush of
// the replayed WAL and retries a failing flush forever, so repair first
// checks that the folder has room (probe); until it has, the broken
// database stays open for Load and commits fail at once.
func (s *Store) repair() error {
	if time.Since(s.lastRepair) < s.repairEvery {
		return s.broken
	}
	s.lastRepair = time.Now()
	if err := s.probe(); err != nil {
		return fmt.Errorf("%w (still failing: %v)", s.broken, err)
	}
	if old := s.db; old != nil {
		if _, err := guard(func() (struct{}, error) { return struct{}{}, old.Close() }); err != nil {
			s.log.Warn("store: close after a write failure", "dir", s.dir, "err", err)
		}
		s.db = nil
	}
	db, err := s.openDB(true, false)
	if err != nil {
		// Load reports the store unavailable until a reopen works.
		return fmt.Errorf("reopen after %v: %w", s.broken, err)
	}
	s.log.Info("store: reopened after a write failure", "dir", s.dir, "was", s.broken)
	s.db, s.broken = db, nil
	return nil
}

// probe writes and syncs a file as large as the folder's WALs plus 1 MiB
// (what reopening needs to flush them), then removes it.
func (s *Store) probe() error {
	fs := s.opts.fs
	need := int64(1 << 20)
	if names, err := fs.List(s.dir); err == nil {
		for _, n := range names {
			if strings.HasSuffix(n, ".log") {
				if fi, err := fs.Stat(fs.PathJoin(s.dir, n)); err == nil {
					need += fi.Size()
				}
			}
		}
	}
	name := fs.PathJoin(s.dir, "starling-space-probe")
	f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	defer fs.Remove(name)
	chunk := make([]byte, 64<<10)
	for n := int64(0); n < need; n += int64(len(chunk)) {
		if _, err = f.Write(chunk); err != nil {
			break
		}
	}
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// Close stops the sync loop, syncs and closes the database and releases the
// folder lock. Later calls return store.ErrClosed.
func (s *Store) Close() error {
	if s.stop != nil {
		s.stopOnce.Do(func() { close(s.stop) })
		<-s.stopped
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("store: close: %w", store.ErrClosed)
	}
	s.closed = true
	var err error
	if s.db != nil {
		if s.policy != store.SyncAlways && s.broken == nil && !s.opts.ReadOnly {
			_, err = guard(func() (struct{}, error) { return struct{}{}, s.db.LogData(nil, pebble.Sync) })
		}
		_, cerr := guard(func() (struct{}, error) { return struct{}{}, s.db.Close() })
		err = errors.Join(err, cerr)
		s.db = nil
	}
	err = errors.Join(err, s.lock.Close())
	if err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Dir returns the data folder.
func (s *Store) Dir() string { return filepath.Clean(s.dir) }
