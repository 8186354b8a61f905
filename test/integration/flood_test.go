package integration

import (
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// floodHeapCeiling is the most the live heap may grow (sampled after a
// forced collection every 100 ms) while floodConns misbehaving connections
// attack the broker. The budget, also in docs/security.md:
//   - 100 clients stalled inside a 1 MiB PUBLISH hold one 64 KiB read step
//     each: 6.4 MiB;
//   - 100 subscribers that never read hold at most 1,024 queued QoS 0
//     deliveries each plus the writer's batch of as many (about 100 bytes
//     each, the messages themselves being shared): 20 MiB, and a 64 KiB
//     encoding buffer each: 6.4 MiB;
//   - the 5,000 published 1 KiB messages with their encoded form, shared by
//     every subscriber: 10 MiB;
//   - the 300 other connections (1 KiB read buffer and their state) and the
//     test's own clients: under 5 MiB;
//
// about 48 MiB at worst; 64 MiB leaves room for timing. A broker whose
// memory followed the attackers (encoding a slow reader's whole backlog at
// once, allocating announced sizes, unbounded queues) grows by hundreds of
// MiB here: before the writer encoded in 64 KiB pieces, this test measured
// up to 181 MiB.
const floodHeapCeiling = 64 << 20

const floodConns = 500

// A bounded flood of misbehaving connections (silent, trickling, stalled
// in a huge packet, malformed, subscribing to everything and never
// reading) keeps the broker's heap under floodHeapCeiling, and a
// well-behaved client keeps exchanging messages meanwhile.
// Not parallel: it measures the heap of the whole process.
func TestHostileFloodBoundedMemory(t *testing.T) {
	_, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.ConnectTimeout = 2 * time.Second
	})
	w := startWitness(t, addr, "flood")

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			// Live data: garbage would make the figure depend on when the
			// collector last ran.
			runtime.GC()
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	connect := func(nc net.Conn, id string) error {
		cp, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: id}, packet.V5)
		nc.Write(cp)
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		ack := make([]byte, 64)
		if _, err := nc.Read(ack); err != nil || ack[0] != 0x20 {
			return fmt.Errorf("%s: no CONNACK: %v", id, err)
		}
		return nil
	}
	// Each kind of attacker; all are closed by the broker or at the end.
	kinds := []func(nc net.Conn, i int) error{
		func(nc net.Conn, i int) error { return nil }, // silent: cut at the connect timeout
		func(nc net.Conn, i int) error { // trickles a CONNECT
			for _, b := range []byte{0x10, 0x7f, 0, 4, 'M', 'Q', 'T', 'T', 5} {
				if _, err := nc.Write([]byte{b}); err != nil {
					return nil
				}
				time.Sleep(300 * time.Millisecond)
			}
			return nil
		},
		func(nc net.Conn, i int) error { // stalls inside a 1 MiB PUBLISH
			if err := connect(nc, fmt.Sprintf("flood-stall-%d", i)); err != nil {
				return err
			}
			nc.Write(append(append([]byte{0x30}, varint(1<<20-16)...), make([]byte, 1024)...))
			return nil
		},
		func(nc net.Conn, i int) error { // malformed after CONNECT
			if err := connect(nc, fmt.Sprintf("flood-bad-%d", i)); err != nil {
				return err
			}
			nc.Write([]byte{0x36, 0x05, 0x00, 0x01, 'a', 0x00, 0x01})
			return nil
		},
		func(nc net.Conn, i int) error { // subscribes to everything, never reads
			if err := connect(nc, fmt.Sprintf("flood-sub-%d", i)); err != nil {
				return err
			}
			sb, _ := packet.Append(nil, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "flood/#"}}}, packet.V5)
			nc.Write(sb)
			return nil
		},
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	errs := make(chan error, floodConns)
	for i := range floodConns {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		mu.Lock()
		open = append(open, nc)
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := kinds[i%len(kinds)](nc, i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	// Publish 5,000 1 KiB messages to the subscribers that do not read.
	pub, _ := v5Raw(t, addr, "flood-pub", true, 0)
	payload := make([]byte, 1024)
	for i := 0; i < 5000; i += 100 {
		var ps []packet.Packet
		for j := range 100 {
			ps = append(ps, &packet.Publish{Topic: fmt.Sprintf("flood/%d", i+j), Payload: payload})
		}
		pub.Send(ps...)
	}
	pub.Send(&packet.Pingreq{}) // answered once all were read
	v5Read[*packet.Pingresp](t, pub)
	w.check(t)
	time.Sleep(2500 * time.Millisecond) // past the connect timeout
	close(stopSampling)
	<-sampled
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	grew := int64(peak.Load()) - int64(base.HeapAlloc)
	t.Logf("heap: %d MiB before, peak %d MiB (+%d MiB) with %d misbehaving connections", base.HeapAlloc>>20, peak.Load()>>20, grew>>20, floodConns)
	if grew > floodHeapCeiling {
		t.Fatalf("heap grew by %d MiB under the flood, ceiling %d MiB", grew>>20, floodHeapCeiling>>20)
	}
	for _, nc := range open {
		nc.Close()
	}
}
