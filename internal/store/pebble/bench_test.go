package pebble

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// syncCountFS counts the syncs of WAL files: with group commit, concurrent
// synced commits share them.
type syncCountFS struct {
	vfs.FS
	syncs atomic.Int64
}

type syncCountFile struct {
	vfs.File
	n *atomic.Int64
}

func (f syncCountFile) Sync() error                  { f.n.Add(1); return f.File.Sync() }
func (f syncCountFile) SyncData() error              { f.n.Add(1); return f.File.SyncData() }
func (f syncCountFile) SyncTo(n int64) (bool, error) { f.n.Add(1); return f.File.SyncTo(n) }

func (fs *syncCountFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return syncCountFile{f, &fs.syncs}, nil
}

func (fs *syncCountFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs *syncCountFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f, err)
}

// benchRecords is one publish's worth of writes: a message with a 64-byte
// payload and an outbound record of about 200 bytes encoded.
func benchRecords() (*store.Message, *store.Outbound) {
	m := &store.Message{
		Topic:     "sensors/building-1/floor-2/temp",
		Payload:   []byte(strings.Repeat("p", 64)),
		QoS:       1,
		Props:     packet.Properties{ContentType: "application/json"},
		Publisher: "publisher-1",
	}
	o := &store.Outbound{
		MessageID: 1, QoS: 1, SubIDs: []int{1, 2},
		Group:  strings.Repeat("g", 40),
		Filter: "$share/" + strings.Repeat("g", 40) + "/sensors/" + strings.Repeat("f", 59) + "/+/temp",
	}
	return m, o
}

func TestBenchRecordSizes(t *testing.T) {
	m, o := benchRecords()
	if n := len(encodeOutbound(o)) + len(outboundKey("client-00000001", 1)); n < 180 || n > 220 {
		t.Errorf("outbound record is %d bytes, want about 200", n)
	}
	t.Logf("message value %d bytes, outbound key+value %d bytes", len(encodeMessage(m)), len(encodeOutbound(o))+len(outboundKey("client-00000001", 1)))
}

// BenchmarkCommit: synced commits of one message and one outbound record,
// from 1, 16 and 64 goroutines, for each sync policy and the memory store.
// commits/s is the throughput; ns/op is per commit across all goroutines.
func BenchmarkCommit(b *testing.B) {
	for _, kind := range []string{store.SyncAlways, store.SyncInterval, store.SyncNone, "memory"} {
		for _, writers := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("%s/writers=%d", kind, writers), func(b *testing.B) {
				var s store.Store
				fs := &syncCountFS{FS: vfs.Default}
				if kind == "memory" {
					s = memory.New()
				} else {
					s = mustOpen(b, b.TempDir(), Options{Sync: kind, fs: fs})
				}
				defer s.Close()
				fs.syncs.Store(0)
				benchCommit(b, s, writers)
				if kind != "memory" {
					b.ReportMetric(float64(fs.syncs.Load())/float64(b.N), "fsyncs/commit")
				}
			})
		}
	}
}

func benchCommit(b *testing.B, s store.Store, writers int) {
	m, o := benchRecords()
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := fmt.Sprintf("client-%08d", w)
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				bt := s.NewBatch()
				bt.PutMessage(uint64(i), m)
				bt.PutOutbound(client, uint64(i), o)
				if err := bt.Commit(true); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}
