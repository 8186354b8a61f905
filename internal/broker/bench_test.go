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
			rig := newFanoutRig(b, n)
			defer rig.close()
			b.ReportAllocs()
			b.ResetTimer()
			rig.publish(b, b.N)
			b.StopTimer()
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// fanoutRig is a broker with n subscribers on script connections, fed QoS 0
// PUBLISHes directly, as a connection's reader routes them.
type fanoutRig struct {
	br      *Broker
	n       int
	written atomic.Int64
	wg      sync.WaitGroup
	conns   []*scriptConn
	raw     []byte
	fh      packet.FixedHeader
	pp      packet.Publish
	last    string
}

func newFanoutRig(tb testing.TB, n int) *fanoutRig {
	tb.Helper()
	lim := config.Default().Limits
	lim.ConnectTimeout = time.Minute
	r := &fanoutRig{br: New(lim, nil), n: n}
	for i := 0; i < n; i++ {
		var script []byte
		script, _ = packet.Append(script, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: fmt.Sprintf("s%d", i)}, packet.V311)
		script, _ = packet.Append(script, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bench/+/x"}}}, packet.V311)
		c := &scriptConn{r: &byteReader{script}, closed: make(chan struct{}), written: &r.written}
		r.conns = append(r.conns, c)
		r.wg.Go(func() { r.br.HandleConn(c) })
	}
	// CONNACK (4) + SUBACK (5) per subscriber.
	waitBytes(tb, &r.written, int64(n*9))
	r.raw, _ = packet.Append(nil, &packet.Publish{Topic: "bench/a/x", Payload: make([]byte, 64)}, packet.V311)
	r.fh = packet.FixedHeader{Type: packet.PUBLISH, Remaining: len(r.raw) - 2}
	return r
}

// publish routes count PUBLISHes and returns once every subscriber has been
// written every one.
func (r *fanoutRig) publish(tb testing.TB, count int) {
	start := r.written.Load()
	body := r.raw[2:]
	for i := 0; i < count; i++ {
		// Decoded and routed as a connection's QoS 0 PUBLISH is: into
		// one value, with the topic reused, as a pooled message.
		if err := packet.DecodePublish(&r.pp, r.fh, body, packet.V311, &r.last); err != nil {
			tb.Fatal(err)
		}
		m := session.NewPooled()
		m.Topic, m.Payload = r.pp.Topic, r.pp.Payload
		r.br.publish(m, nil)
		m.Unref()
		if i%256 == 255 {
			// Let writers keep up so slow-reader drops don't skew it.
			waitBytes(tb, &r.written, start+int64((i+1)*r.n*len(r.raw)))
		}
	}
	waitBytes(tb, &r.written, start+int64(count*r.n*len(r.raw)))
}

func (r *fanoutRig) close() {
	for _, c := range r.conns {
		c.Close()
	}
	r.wg.Wait()
}

func waitBytes(tb testing.TB, w *atomic.Int64, want int64) {
	deadline := time.Now().Add(30 * time.Second)
	for w.Load() < want {
		if time.Now().After(deadline) {
			tb.Fatalf("written %d bytes, want %d", w.Load(), want)
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
			b.ReportAllocs()
			b.ResetTimer()
			runPublishPath(b, kind, b.N, nil)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// runPublishPath connects a subscriber, then a publisher whose connection
// reads count QoS 0 PUBLISHes, and returns once the subscriber has been
// written them all. The publisher's bytes come 256 publishes at a time,
// each batch once the subscriber has been written the one before (so
// slow-reader drops don't skew it); atBatch, if set, is called then with
// the number sent so far, and once more at the end with count.
func runPublishPath(tb testing.TB, kind string, count int, atBatch func(sent int)) {
	tb.Helper()
	lim := config.Default().Limits
	lim.ConnectTimeout = time.Minute
	br := New(lim, nil)
	if kind != "none" {
		st := openBenchStore(tb, kind)
		defer st.Close()
		br.SetStore(st)
		if err := br.Restore(); err != nil {
			tb.Fatal(err)
		}
	}
	var subWritten, pubWritten atomic.Int64
	var script []byte
	script, _ = packet.Append(script, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: "sub"}, packet.V311)
	script, _ = packet.Append(script, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bench/+/x"}}}, packet.V311)
	sub := &scriptConn{r: &byteReader{script}, closed: make(chan struct{}), written: &subWritten}
	var wg sync.WaitGroup
	wg.Go(func() { br.HandleConn(sub) })
	waitBytes(tb, &subWritten, 9) // CONNACK + SUBACK

	raw, _ := packet.Append(nil, &packet.Publish{Topic: "bench/a/x", Payload: make([]byte, 64)}, packet.V311)
	connect, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: "pub"}, packet.V311)
	start := subWritten.Load()
	pr := &pacedReader{next: connect, left: count, batch: 256, raw: raw, wait: func(sent int) {
		waitBytes(tb, &subWritten, start+int64(sent*len(raw)))
		if atBatch != nil {
			atBatch(sent)
		}
	}}
	pub := &scriptConn{r: pr, closed: make(chan struct{}), written: &pubWritten}
	wg.Go(func() { br.HandleConn(pub) })
	waitBytes(tb, &subWritten, start+int64(count*len(raw)))
	if atBatch != nil {
		atBatch(count)
	}
	pub.Close()
	sub.Close()
	wg.Wait()
}

// pacedReader yields next, then left copies of raw, batch at a time,
// calling wait with the number given so far before each new batch.
type pacedReader struct {
	next        []byte
	raw         []byte
	buf         []byte // the batch; next is what of it is left to give
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
		r.buf = r.buf[:0]
		for range n {
			r.buf = append(r.buf, r.raw...)
		}
		r.next = r.buf
		r.left -= n
		r.sent += n
	}
	n := copy(p, r.next)
	r.next = r.next[n:]
	return n, nil
}
