package integration

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

var (
	idleConns = flag.Int("idle-conns", 2000, "BenchmarkIdle: connections to open")
	// A heap profile of the process with the connections open, for
	// `go tool pprof -sample_index=inuse_space`.
	idleHeapProfile = flag.String("idle-heapprofile", "", "BenchmarkIdle: write a heap profile here while the connections are open")
)

// BenchmarkIdle opens -idle-conns idle MQTT 3.1.1 connections (keep alive
// 0, nothing subscribed) to an in-process broker and reports the memory each
// holds: the growth of the Go heap in use plus goroutine stacks in use,
// after a GC, divided by the number of connections. The client side of each
// connection is a bare net.Conn with no goroutine and no buffer; its
// net.TCPConn (a few hundred bytes) is included in the figure. RSS also
// counts what Go has not given back to the OS: see docs/benchmarks.md for
// the starling-bench figures.
//
//	go test -run '^$' -bench Idle -benchmem ./test/integration/ -idle-conns 10000
func BenchmarkIdle(b *testing.B) {
	for _, tr := range []string{"tcp", "ws"} {
		b.Run(tr, func(b *testing.B) {
			srv, addr := testutil.StartBroker(b, nil)
			if tr == "ws" {
				addr = srv.HTTPAddr().String()
			}
			var heap, live, stack float64
			for i := 0; i < b.N; i++ {
				m := idleRound(b, tr, addr, *idleConns)
				heap += m.heap
				live += m.live
				stack += m.stack
			}
			n := float64(b.N)
			b.ReportMetric((heap+stack)/n, "B/conn")
			b.ReportMetric(heap/n, "heap-B/conn")
			b.ReportMetric(live/n, "live-B/conn")
			b.ReportMetric(stack/n, "stack-B/conn")
		})
	}
}

// idleRound opens n connections, measures, closes them, and returns the
// bytes per connection.
func idleRound(b *testing.B, tr, addr string, n int) idleBytes {
	if *idleHeapProfile != "" {
		defer func(r int) { runtime.MemProfileRate = r }(runtime.MemProfileRate)
		runtime.MemProfileRate = 64
	}
	m0 := idleMem()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := dialIdle(tr, addr, fmt.Sprintf("idle-%s-%d", tr, i))
		if err != nil {
			b.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	settleGoroutines()
	if *idleHeapProfile != "" {
		runtime.GC()
		f, err := os.Create(strings.Replace(*idleHeapProfile, "%", tr, 1))
		if err != nil {
			b.Fatal(err)
		}
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	m1 := idleMem()
	f := float64(n)
	return idleBytes{heap: (m1.heap - m0.heap) / f, live: (m1.live - m0.live) / f, stack: (m1.stack - m0.stack) / f}
}

// idleBytes is memory in use: heap spans (heap), the objects live in them
// (live: heap less the free slots of partly used spans) and goroutine
// stacks.
type idleBytes struct{ heap, live, stack float64 }

// settleGoroutines waits until the goroutine count stops changing: the
// connections' readers have reached their idle state.
func settleGoroutines() {
	last, stable := runtime.NumGoroutine(), 0
	for deadline := time.Now().Add(10 * time.Second); stable < 5 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		if g := runtime.NumGoroutine(); g != last {
			last, stable = g, 0
		} else {
			stable++
		}
	}
}

func idleMem() idleBytes {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return idleBytes{heap: float64(m.HeapInuse), live: float64(m.HeapAlloc), stack: float64(m.StackInuse)}
}

// dialIdle connects with a CONNECT (clean, keep alive 0) and reads the
// CONNACK, over TCP or a hand-made WebSocket so that the client side holds
// no more than its socket.
func dialIdle(tr, addr, id string) (net.Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	connect, _ := packet.Append(nil, &packet.Connect{ProtocolVersion: packet.V311, CleanStart: true, ClientID: id}, packet.V311)
	if tr == "ws" {
		req := "GET /mqtt HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
		if _, err := io.WriteString(nc, req); err != nil {
			nc.Close()
			return nil, err
		}
		br := bufio.NewReaderSize(nc, 512)
		var head []byte
		for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
			c, err := br.ReadByte()
			if err != nil {
				nc.Close()
				return nil, fmt.Errorf("handshake: %w", err)
			}
			head = append(head, c)
		}
		if !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) || br.Buffered() > 0 {
			nc.Close()
			return nil, fmt.Errorf("handshake: %q", head)
		}
		// One masked binary frame (mask 0: payload unchanged).
		connect = append([]byte{0x82, 0x80 | byte(len(connect)), 0, 0, 0, 0}, connect...)
	}
	if _, err := nc.Write(connect); err != nil {
		nc.Close()
		return nil, err
	}
	want := []byte{0x20, 2, 0, 0}
	if tr == "ws" {
		want = append([]byte{0x82, 4}, want...)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(nc, got); err != nil || !bytes.Equal(got, want) {
		nc.Close()
		return nil, fmt.Errorf("CONNACK %x: %v", got, err)
	}
	nc.SetDeadline(time.Time{})
	return nc, nil
}
