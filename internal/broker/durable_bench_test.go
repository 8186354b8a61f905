package broker

import (
	"flag"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
	"github.com/starling-mqtt/starling/internal/store/pebble"
)

// benchStores are the stores BenchmarkDurablePublish compares.
var benchStores = []string{"pebble-always", "pebble-interval", "pebble-none", "memory"}

func openBenchStore(b testing.TB, kind string) store.Store {
	b.Helper()
	if kind == "memory" {
		return memory.New()
	}
	st, err := pebble.Open(b.TempDir(), pebble.Options{Sync: strings.TrimPrefix(kind, "pebble-"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// BenchmarkDurablePublish measures QoS 1 publish throughput end to end over
// loopback TCP: each publisher is its own MQTT 5 connection sending one
// PUBLISH at a time and waiting for its PUBACK (which the broker sends only
// after the store commit); one persistent subscriber (session expiry 1 h,
// QoS 1) consumes and acknowledges every delivery. One op is one
// acknowledged publish; msgs/s is acknowledged publishes per second, all
// publishers together. delivered/s is what the subscriber received in the
// same time, dropped what the broker dropped (the subscriber's queue full).
//
//	go test -run '^$' -bench DurablePublish -benchtime 3s ./internal/broker/
func BenchmarkDurablePublish(b *testing.B) {
	for _, kind := range benchStores {
		for _, pubs := range []int{1, 100} {
			b.Run(fmt.Sprintf("store=%s/publishers=%d", kind, pubs), func(b *testing.B) {
				benchDurablePublish(b, kind, pubs)
			})
		}
	}
}

func benchDurablePublish(b *testing.B, kind string, pubs int) {
	st := openBenchStore(b, kind)
	defer st.Close()
	br := New(config.Default().Limits, nil)
	br.SetStore(st)
	if err := br.Restore(); err != nil {
		b.Fatal(err)
	}
	lb := serveLoopback(b, br)
	defer lb.stop()

	sub := dialRaw(b, lb.addr, packet.V5)
	sub.connect("bench-sub", true, 3600)
	sub.mustSend(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bench/#", QoS: 1}}})
	if _, ok := sub.read().(*packet.Suback); !ok {
		b.Fatal("no SUBACK")
	}
	var delivered atomic.Int64
	subDone := make(chan struct{})
	go func() {
		defer close(subDone)
		for {
			p, err := sub.next(0)
			if err != nil {
				return
			}
			if pp, ok := p.(*packet.Publish); ok {
				delivered.Add(1)
				if pp.QoS == 1 {
					if sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pp.PacketID}) != nil {
						return
					}
				}
			}
		}
	}()

	clients := make([]*rawClient, pubs)
	for i := range clients {
		clients[i] = dialRaw(b, lb.addr, packet.V5)
		clients[i].connect(fmt.Sprintf("bench-pub-%d", i), true, 0)
	}
	payload := make([]byte, 64)
	errs0 := br.Stats.StoreErrors.Load()
	dropped0 := br.Stats.Dropped.Load()
	delivered0 := delivered.Load()
	var failed atomic.Value
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, c := range clients {
		n := b.N / pubs
		if i < b.N%pubs {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("bench/%d", i)
			for j := 0; j < n; j++ {
				id := uint16(j%65535 + 1)
				if err := c.send(&packet.Publish{QoS: 1, PacketID: id, Topic: topic, Payload: payload}); err != nil {
					failed.Store(err.Error())
					return
				}
				p, err := c.next(30 * time.Second)
				if err != nil {
					failed.Store(err.Error())
					return
				}
				if a, ok := p.(*packet.Ack); !ok || a.Kind != packet.PUBACK || a.PacketID != id || a.ReasonCode >= 0x80 {
					failed.Store(fmt.Sprintf("want PUBACK %d, got %+v", id, p))
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if f := failed.Load(); f != nil {
		b.Fatal(f)
	}
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/secs, "msgs/s")
	b.ReportMetric(float64(delivered.Load()-delivered0)/secs, "delivered/s")
	b.ReportMetric(float64(br.Stats.Dropped.Load()-dropped0), "dropped")
	if n := br.Stats.StoreErrors.Load() - errs0; n > 0 {
		b.Fatalf("%d store errors", n)
	}
	for _, c := range clients {
		c.nc.Close()
	}
	sub.nc.Close()
	<-subDone
}

// restoreScale reads the sizes BenchmarkRestore fills the store with.
var (
	restoreSessions = flag.Int("restore.sessions", 100_000, "BenchmarkRestore: sessions, each with a subscription and a queued message")
	restoreRetained = flag.Int("restore.retained", 1_000_000, "BenchmarkRestore: retained messages")
)

// BenchmarkRestore measures start-up recovery: a pebble store (sync none)
// filled through store batches with -restore.sessions sessions, each with
// one subscription and one queued QoS 1 message, and -restore.retained
// retained messages, is opened and loaded by Restore. It reports the time of
// Open and of Restore and the heap the restored broker holds. The fill takes
// a while, so it runs only when -bench names it:
//
//	go test -run '^$' -bench Restore -benchtime 1x ./internal/broker/
func BenchmarkRestore(b *testing.B) {
	if f := flag.Lookup("test.bench"); f == nil || !strings.Contains(f.Value.String(), "Restore") {
		b.Skip("run with -bench Restore: fills a store with 100,000 sessions and 1,000,000 retained messages")
	}
	dir := b.TempDir()
	nSess, nRet := *restoreSessions, *restoreRetained
	fillStart := time.Now()
	st, err := pebble.Open(dir, pebble.Options{Sync: store.SyncNone, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	const perBatch = 20_000
	bt := st.NewBatch()
	flush := func(force bool) {
		if bt.Len() >= perBatch || force && bt.Len() > 0 {
			if err := bt.Commit(false); err != nil {
				b.Fatal(err)
			}
			bt = st.NewBatch()
		}
	}
	now := time.Now()
	payload := make([]byte, 64)
	for i := 0; i < nSess; i++ {
		id := fmt.Sprintf("client-%07d", i)
		bt.PutSession(&store.Session{ClientID: id, Version: packet.V5, ExpiryInterval: 86400, DisconnectedAt: now})
		bt.PutSubscription(id, &store.Subscription{Filter: fmt.Sprintf("devices/%07d/cmd/#", i), Options: packet.Subscription{QoS: 1}})
		mid := uint64(i + 1)
		bt.PutMessage(mid, &store.Message{Topic: fmt.Sprintf("devices/%07d/cmd/reboot", i), Payload: payload, QoS: 1, Publisher: "fill"})
		bt.PutOutbound(id, 1, &store.Outbound{MessageID: mid, QoS: 1, State: store.Queued})
		flush(false)
	}
	for i := 0; i < nRet; i++ {
		bt.PutRetained(&store.Message{Topic: fmt.Sprintf("sensors/%03d/%04d/state", i/10000, i%10000), Payload: payload, QoS: 1, Retain: true, Publisher: "fill"})
		flush(false)
	}
	flush(true)
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	b.Logf("filled %d sessions (+%d subscriptions, messages, outbound) and %d retained in %v", nSess, nSess, nRet, time.Since(fillStart).Round(time.Millisecond))

	var openTime, restoreTime time.Duration
	var heap uint64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		t0 := time.Now()
		st, err := pebble.Open(dir, pebble.Options{Sync: store.SyncNone, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		br := New(config.Default().Limits, nil)
		br.SetStore(st)
		if err := br.Restore(); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		b.StopTimer()
		openTime += t1.Sub(t0)
		restoreTime += t2.Sub(t1)
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap += after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)
		if br.Sessions() != nSess || br.Retained() != nRet {
			b.Fatalf("restored %d sessions and %d retained, want %d and %d", br.Sessions(), br.Retained(), nSess, nRet)
		}
		br.Close(time.Second)
		runtime.KeepAlive(br)
		st.Close()
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(openTime.Milliseconds())/n, "open-ms")
	b.ReportMetric(float64(restoreTime.Milliseconds())/n, "restore-ms")
	b.ReportMetric(float64(heap)/n/(1<<20), "heap-MiB")
}
