package pebble

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/storetest"
)

// fullFS is the OS file system with a switch that makes every write and
// sync fail with ENOSPC, as a full disk does.
type fullFS struct {
	vfs.FS
	full atomic.Bool
}

type fullFile struct {
	vfs.File
	fs *fullFS
}

func (fs *fullFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return fullFile{f, fs}, nil
}

func (fs *fullFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if fs.full.Load() {
		return nil, &os.PathError{Op: "create", Path: name, Err: syscall.ENOSPC}
	}
	return fs.wrap(fs.FS.Create(name, c))
}

func (fs *fullFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.ReuseForWrite(oldname, newname, c))
}

func (fs *fullFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, o ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.OpenReadWrite(name, c, o...))
}

func (f fullFile) enospc(op string) error {
	return &os.PathError{Op: op, Path: "wal", Err: syscall.ENOSPC}
}

func (f fullFile) Write(p []byte) (int, error) {
	if f.fs.full.Load() {
		return 0, f.enospc("write")
	}
	return f.File.Write(p)
}

func (f fullFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fs.full.Load() {
		return 0, f.enospc("write")
	}
	return f.File.WriteAt(p, off)
}

func (f fullFile) Sync() error {
	if f.fs.full.Load() {
		return f.enospc("sync")
	}
	return f.File.Sync()
}

func (f fullFile) SyncData() error {
	if f.fs.full.Load() {
		return f.enospc("sync")
	}
	return f.File.SyncData()
}

func (f fullFile) SyncTo(n int64) (bool, error) {
	if f.fs.full.Load() {
		return false, f.enospc("sync")
	}
	return f.File.SyncTo(n)
}

// TestInjectedENOSPC, policy always: with writes failing, commits return
// errors (no panic, no exit) and acknowledged data stays readable; once
// space is back the store reopens itself and takes commits again; nothing
// acknowledged is lost.
func TestInjectedENOSPC(t *testing.T) {
	fs := &fullFS{FS: vfs.Default}
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{fs: fs})
	s.repairEvery = 0
	acked := commitN(t, s, 0, 50)

	fs.full.Store(true)
	var failed atomic.Int32
	var wg sync.WaitGroup
	for g := range 16 { // concurrent committers hit the failure together
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				b := s.NewBatch()
				b.PutMessage(uint64(1000+g*10+i), storetest.FullMessage(i))
				if err := b.Commit(true); err != nil {
					failed.Add(1)
					if !errors.Is(err, syscall.ENOSPC) && !strings.Contains(err.Error(), "no space") {
						t.Errorf("commit error %q does not say the disk is full", err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 80 {
		t.Fatalf("%d of 80 commits failed on a full disk, want all", failed.Load())
	}
	// Reads still work and hold everything acknowledged before.
	checkAcked(t, s, acked)

	fs.full.Store(false)
	more := commitN(t, s, 100, 20)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = mustOpen(t, dir, Options{})
	defer s.Close()
	checkAcked(t, s, append(acked, more...))
}

// TestInjectedENOSPCInterval: under policy interval a commit only hands the
// batch to pebble; the failure shows at the next background sync, after
// which commits fail until the disk has room again. What was committed
// between the last good sync and the failure may be lost: the policy's
// window.
func TestInjectedENOSPCInterval(t *testing.T) {
	fs := &fullFS{FS: vfs.Default}
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{Sync: store.SyncInterval, SyncInterval: 5 * time.Millisecond, fs: fs})
	s.repairEvery = 0
	acked := commitN(t, s, 0, 50)
	for n := s.passes.Load(); s.unsynced.Load() || s.passes.Load() < n+2; { // a whole sync pass after the flag cleared
		time.Sleep(time.Millisecond)
	}
	fs.full.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; ; i++ {
		b := s.NewBatch()
		b.PutMessage(uint64(1000+i), storetest.FullMessage(i))
		if err := b.Commit(true); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("commits still succeed 5 s after the disk filled")
		}
		time.Sleep(time.Millisecond)
	}
	checkAcked(t, s, acked)
	fs.full.Store(false)
	more := commitN(t, s, 100, 20)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = mustOpen(t, dir, Options{})
	defer s.Close()
	checkAcked(t, s, append(acked, more...))
}

// TestInjectedENOSPCNone: no sync, so a write error shows only when pebble
// next syncs (at Close); no panic, and the store opens again.
func TestInjectedENOSPCNone(t *testing.T) {
	fs := &fullFS{FS: vfs.Default}
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{Sync: store.SyncNone, fs: fs})
	commitN(t, s, 0, 10)
	fs.full.Store(true)
	for i := range 10 {
		b := s.NewBatch()
		b.PutMessage(uint64(1000+i), storetest.FullMessage(i))
		_ = b.Commit(true)
	}
	err := s.Close()
	t.Logf("Close on a full disk: %v", err)
	fs.full.Store(false)
	s = mustOpen(t, dir, Options{})
	storetest.LoadAll(t, s)
	s.Close()
}

// commitN commits n synced batches from message id start and returns their
// ids.
func commitN(t *testing.T, s store.Store, start, n int) []uint64 {
	t.Helper()
	var ids []uint64
	for i := range n {
		id := uint64(start + i)
		b := s.NewBatch()
		b.PutMessage(id, storetest.FullMessage(int(id)))
		b.PutOutbound("c", id, storetest.FullOutbound(id))
		if err := b.Commit(true); err != nil {
			t.Fatalf("commit %d: %v", id, err)
		}
		ids = append(ids, id)
	}
	return ids
}

func checkAcked(t *testing.T, s store.Store, ids []uint64) {
	t.Helper()
	c := storetest.LoadAll(t, s)
	for _, id := range ids {
		if !storetest.Equal(c.Messages[id], storetest.FullMessage(int(id))) || c.Outbound["c"][id] == nil {
			t.Fatalf("acknowledged batch %d lost", id)
		}
	}
}

// TestFullTmpfs fills a real 8 MiB tmpfs (root only; skipped when mount is
// not permitted) until commits fail, then checks the same as above.
func TestFullTmpfs(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	dir := filepath.Join(mnt, "data")
	s := mustOpen(t, dir, Options{})
	s.repairEvery = 0
	acked := commitN(t, s, 0, 20)

	// Leave little room, then write until a commit fails.
	filler := filepath.Join(mnt, "filler")
	f, _ := os.Create(filler)
	chunk := bytes.Repeat([]byte{1}, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	var commitErr error
	big := bytes.Repeat([]byte("x"), 32<<10)
	for i := range 10000 {
		id := uint64(10_000 + i)
		b := s.NewBatch()
		b.PutMessage(id, &store.Message{Topic: "t", Payload: big})
		if err := b.Commit(true); err != nil {
			commitErr = err
			break
		}
		acked = append(acked, id)
	}
	if commitErr == nil {
		t.Fatal("no commit failed on a full tmpfs")
	}
	if !errors.Is(commitErr, syscall.ENOSPC) && !strings.Contains(commitErr.Error(), "no space") {
		t.Errorf("commit error %q does not say the disk is full", commitErr)
	}
	t.Logf("commit error on a full disk: %v", commitErr)
	// Still failing while full, and no panic.
	b := s.NewBatch()
	b.PutMessage(1, storetest.FullMessage(1))
	if err := b.Commit(true); err == nil {
		t.Log("a commit succeeded while the disk was full (pebble had room in a preallocated WAL block)")
	}
	os.Remove(filler)
	more := commitN(t, s, 50_000, 5)
	if err := s.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	s = mustOpen(t, dir, Options{})
	defer s.Close()
	c := storetest.LoadAll(t, s)
	for _, id := range append(acked, more...) {
		if c.Messages[id] == nil {
			t.Fatalf("acknowledged message %d lost (%d messages loaded)", id, len(c.Messages))
		}
	}
}
