package broker

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
)

// scriptConn is a net.Conn that reads a fixed script, then blocks until
// closed, and counts what is written to it.
type scriptConn struct {
	r       io.Reader
	closed  chan struct{}
	once    sync.Once
	written *atomic.Int64
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if n, err := c.r.Read(p); n > 0 || err != io.EOF {
		return n, err
	}
	<-c.closed
	return 0, io.EOF
}
func (c *scriptConn) Write(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	c.written.Add(int64(len(p)))
	return len(p), nil
}
func (c *scriptConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

type byteReader struct{ b []byte }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// BenchmarkPublishFanout measures one PUBLISH from decode to bytes written on
// every subscriber's connection: decode, match, per-subscriber session
// bookkeeping, encode and the batched write.
func BenchmarkPublishFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			lim := config.Default().Limits
			lim.ConnectTimeout = time.Minute
			br := New(lim, nil)
			var written atomic.Int64
			var wg sync.WaitGroup
			var conns []*scriptConn
			for i := 0; i < n; i++ {
				var script []byte
				script, _ = packet.Append(script, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: fmt.Sprintf("s%d", i)}, packet.V311)
				script, _ = packet.Append(script, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bench/+/x"}}}, packet.V311)
				c := &scriptConn{r: &byteReader{script}, closed: make(chan struct{}), written: &written}
				conns = append(conns, c)
				wg.Add(1)
				go func() { defer wg.Done(); br.HandleConn(c) }()
			}
			// CONNACK (4) + SUBACK (5) per subscriber.
			waitBytes(b, &written, int64(n*9))
			raw, _ := packet.Append(nil, &packet.Publish{Topic: "bench/a/x", Payload: make([]byte, 64)}, packet.V311)
			body := raw[2:]
			fh := packet.FixedHeader{Type: packet.PUBLISH, Remaining: len(body)}
			start := written.Load()
			b.ReportAllocs()
			b.ResetTimer()
			// Decoded and routed as a connection's QoS 0 PUBLISH is: into
			// one value, with the topic reused, as a pooled message.
			var pp packet.Publish
			var last string
			for i := 0; i < b.N; i++ {
				if err := packet.DecodePublish(&pp, fh, body, packet.V311, &last); err != nil {
					b.Fatal(err)
				}
				m := session.NewPooled()
				m.Topic, m.Payload = pp.Topic, pp.Payload
				br.publish(m, nil)
				m.Unref()
				if i%256 == 255 {
					// Let writers keep up so slow-reader drops don't skew it.
					waitBytes(b, &written, start+int64((i+1)*n*len(raw)))
				}
			}
			waitBytes(b, &written, start+int64(b.N*n*len(raw)))
			b.StopTimer()
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "deliveries/s")
			for _, c := range conns {
				c.Close()
			}
			wg.Wait()
		})
	}
}

func waitBytes(b *testing.B, w *atomic.Int64, want int64) {
	deadline := time.Now().Add(30 * time.Second)
	for w.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("written %d bytes, want %d", w.Load(), want)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// BenchmarkPublishPath measures the whole path of a QoS 0 PUBLISH from a
// client: read, decode, onPublish (the store operation it opens included),
// match, encode and the subscriber's write. Unlike BenchmarkPublishFanout
// it goes through the publishing connection, so per-publish costs outside
// routing show up in allocs/op.
//
//	go test -run '^$' -bench PublishPath -benchmem ./internal/broker/
func BenchmarkPublishPath(b *testing.B) {
	for _, kind := range []string{"none", "memory", "pebble-always"} {
		b.Run("store="+kind, func(b *testing.B) {
			lim := config.Default().Limits
			lim.ConnectTimeout = time.Minute
			br := New(lim, nil)
			if kind != "none" {
				st := openBenchStore(b, kind)
				defer st.Close()
				br.SetStore(st)
				if err := br.Restore(); err != nil {
					b.Fatal(err)
				}
			}
			var subWritten, pubWritten atomic.Int64
			var script []byte
			script, _ = packet.Append(script, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: "sub"}, packet.V311)
			script, _ = packet.Append(script, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bench/+/x"}}}, packet.V311)
			sub := &scriptConn{r: &byteReader{script}, closed: make(chan struct{}), written: &subWritten}
			var wg sync.WaitGroup
			wg.Go(func() { br.HandleConn(sub) })
			waitBytes(b, &subWritten, 9) // CONNACK + SUBACK

			raw, _ := packet.Append(nil, &packet.Publish{Topic: "bench/a/x", Payload: make([]byte, 64)}, packet.V311)
			connect, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: "pub"}, packet.V311)
			start := subWritten.Load()
			// The publisher's bytes come 256 publishes at a time, each batch
			// once the subscriber has been written the one before, so
			// slow-reader drops don't skew it.
			pr := &pacedReader{next: connect, left: b.N, batch: 256, raw: raw, wait: func(sent int) {
				waitBytes(b, &subWritten, start+int64(sent*len(raw)))
			}}
			pub := &scriptConn{r: pr, closed: make(chan struct{}), written: &pubWritten}
			b.ReportAllocs()
			b.ResetTimer()
			wg.Go(func() { br.HandleConn(pub) })
			waitBytes(b, &subWritten, start+int64(b.N*len(raw)))
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			pub.Close()
			sub.Close()
			wg.Wait()
		})
	}
}

// pacedReader yields next, then left copies of raw, batch at a time,
// calling wait with the number given so far before each new batch.
type pacedReader struct {
	next        []byte
	raw         []byte
	left, batch int
	sent        int
	wait        func(sent int)
}

func (r *pacedReader) Read(p []byte) (int, error) {
	if len(r.next) == 0 {
		if r.left == 0 {
			return 0, io.EOF
		}
		r.wait(r.sent)
		n := min(r.batch, r.left)
		r.next = r.next[:0]
		for range n {
			r.next = append(r.next, r.raw...)
		}
		r.left -= n
		r.sent += n
	}
	n := copy(p, r.next)
	r.next = r.next[n:]
	return n, nil
}
