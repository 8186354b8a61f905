package pebble

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/storetest"
)

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

// rawPebble opens dir with pebble directly, bypassing the store.
func rawPebble(t *testing.T, dir string) *pebble.DB {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{Logger: logger{quiet()}})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestOpenCreates(t *testing.T) {
	for _, dir := range []string{filepath.Join(t.TempDir(), "a", "b"), t.TempDir()} {
		s := mustOpen(t, dir, Options{})
		b := s.NewBatch()
		b.PutSession(storetest.FullSession("x"))
		if err := b.Commit(true); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		db := rawPebble(t, dir)
		v, c, err := db.Get(markerKey)
		if err != nil || string(v) != formatMarker {
			t.Errorf("marker = %q, %v", v, err)
		}
		if c != nil {
			c.Close()
		}
		db.Close()
	}
}

func TestOpenRefusesForeignFolder(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hello"), 0o600)
	_, err := Open(dir, Options{Logger: quiet()})
	wantErr(t, err, dir, "not a Starling data folder", "notes.txt")
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("Open wrote into a foreign folder: %d entries", len(ents))
	}
}

func TestOpenRefusesOtherPebble(t *testing.T) {
	dir := t.TempDir()
	db := rawPebble(t, dir)
	db.Set([]byte("someone-else's key"), []byte("v"), pebble.Sync)
	db.Close()
	_, err := Open(dir, Options{Logger: quiet()})
	wantErr(t, err, dir, "not a Starling store", "no format marker")

	// A marker of another format.
	dir = t.TempDir()
	mustOpen(t, dir, Options{}).Close()
	db = rawPebble(t, dir)
	db.Set(markerKey, []byte("starling-store v2"), pebble.Sync)
	db.Close()
	_, err = Open(dir, Options{Logger: quiet()})
	wantErr(t, err, `"starling-store v2"`, `"starling-store v1"`, "run the Starling version that wrote it")

	db = rawPebble(t, dir)
	db.Set(markerKey, []byte("something"), pebble.Sync)
	db.Close()
	_, err = Open(dir, Options{Logger: quiet()})
	wantErr(t, err, "unknown format marker", "not a Starling store")
}

func TestOpenCorrupt(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	b := s.NewBatch()
	b.PutSession(storetest.FullSession("x"))
	b.Commit(true)
	s.Close()
	manifests, _ := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
	if len(manifests) == 0 {
		t.Fatal("no MANIFEST")
	}
	for _, m := range manifests {
		if err := os.WriteFile(m, []byte(strings.Repeat("garbage!", 100)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Open(dir, Options{Logger: quiet()})
	wantErr(t, err, dir, "corrupt", "restore the folder from a backup", "move it aside")
}

func TestLoadUnknownValueVersion(t *testing.T) {
	dir := t.TempDir()
	mustOpen(t, dir, Options{}).Close()
	db := rawPebble(t, dir)
	v := encodeSession(storetest.FullSession("c"))
	v[0] = 9
	db.Set(sessionKey("c"), v, pebble.Sync)
	db.Close()
	s := mustOpen(t, dir, Options{})
	defer s.Close()
	_, err := storetest.Load(s)
	wantErr(t, err, "format version 9", "reads version 1", `\x01c\x00`)
}

func TestLoadUnknownKind(t *testing.T) {
	dir := t.TempDir()
	mustOpen(t, dir, Options{}).Close()
	db := rawPebble(t, dir)
	db.Set([]byte{0x40, 'x'}, []byte{1}, pebble.Sync)
	db.Close()
	s := mustOpen(t, dir, Options{})
	defer s.Close()
	_, err := storetest.Load(s)
	wantErr(t, err, "unknown kind 0x40")
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	_, err := Open(dir, Options{Logger: quiet()})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	wantErr(t, err, dir, "in use", "stop it first")
	_, err = Open(dir, Options{Logger: quiet(), ReadOnly: true})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("read-only Open of a held folder = %v, want ErrLocked", err)
	}
	s.Close()
	mustOpen(t, dir, Options{}).Close()
}

func TestReadOnly(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	_, err := Open(missing, Options{Logger: quiet(), ReadOnly: true})
	wantErr(t, err, "holds no Starling store")
	if _, serr := os.Stat(missing); serr == nil {
		t.Error("a read-only Open created the folder")
	}

	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	b := s.NewBatch()
	b.PutSession(storetest.FullSession("x"))
	b.Commit(false) // in the WAL only, not flushed
	s.Close()
	s = mustOpen(t, dir, Options{ReadOnly: true})
	defer s.Close()
	c := storetest.LoadAll(t, s)
	if !storetest.Equal(c.Session("x"), storetest.FullSession("x")) {
		t.Errorf("read-only Load: %+v", c.Sessions)
	}
	b = s.NewBatch()
	b.PutSession(storetest.FullSession("y"))
	wantErr(t, b.Commit(true), "read-only")
}

func TestNulInClientID(t *testing.T) {
	s := mustOpen(t, t.TempDir(), Options{})
	defer s.Close()
	b := s.NewBatch()
	b.PutMessage(1, storetest.FullMessage(1))
	b.PutInbound("a\x00b", 1)
	wantErr(t, b.Commit(true), "U+0000")
	c := storetest.LoadAll(t, s)
	if len(c.Messages) != 0 {
		t.Error("part of a refused batch was written")
	}
}

func TestBadSyncPolicy(t *testing.T) {
	_, err := Open(t.TempDir(), Options{Sync: "sometimes"})
	wantErr(t, err, `unknown sync policy "sometimes"`)
}

func TestIntervalSyncLoop(t *testing.T) {
	s := mustOpen(t, t.TempDir(), Options{Sync: store.SyncInterval, SyncInterval: 5 * time.Millisecond})
	for i := range 20 {
		b := s.NewBatch()
		b.PutMessage(uint64(i), storetest.FullMessage(i))
		if err := b.Commit(true); err != nil {
			t.Fatal(err)
		}
		if i%5 == 0 {
			for n := s.passes.Load(); s.unsynced.Load() || s.passes.Load() < n+2; { // the loop synced: a whole pass after the flag cleared
				time.Sleep(time.Millisecond)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.stopped:
	default:
		t.Error("sync loop still running after Close")
	}
}
