package integration

import (
	"bytes"
	"compress/flate"
	"context"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/gobwas/ws"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
	"github.com/starling-mqtt/starling/internal/transport"
)

// readCounter counts the bytes read through it.
type readCounter struct {
	net.Conn
	n *atomic.Int64
}

func (c readCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// dialDeflate opens a WebSocket to srv offering permessage-deflate; read
// counts the bytes that arrive on the socket.
func dialDeflate(t *testing.T, srv *starling.Server, read *atomic.Int64) *transport.WSConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	nc, err := transport.DialWSConfig(ctx, "ws://"+srv.HTTPAddr().String()+"/mqtt", transport.WSDialConfig{
		Subprotocol: "mqtt", Compression: true,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil || read == nil {
				return c, err
			}
			return readCounter{c, read}, nil
		},
	})
	if err != nil {
		t.Fatalf("dial ws: %v", err)
	}
	return nc.(*transport.WSConn)
}

// With websocket.compression on, a client that offers permessage-deflate
// gets it: messages both ways arrive intact, and a compressible message
// crosses the socket compressed. With it off (the default) the offer is
// ignored and MQTT works as usual.
func TestWSDeflateRoundTrip(t *testing.T) {
	t.Parallel()
	text := bytes.Repeat([]byte(`{"sensor":"t-42","celsius":21.5,"ok":true} `), 12000) // ~520 KB
	for _, enabled := range []bool{true, false} {
		srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
			c.WebSocket.Compression = enabled
			c.Limits.MaxPacketSize = 4 << 20
		})
		var read atomic.Int64
		wc := dialDeflate(t, srv, &read)
		if wc.Compressed() != enabled {
			t.Fatalf("compression enabled=%v: negotiated %v", enabled, wc.Compressed())
		}
		sub := wsV5Client(t, wc, "deflate-sub")
		sub.sub(t, paho.SubscribeOptions{Topic: "z/#", QoS: 1})
		tcpSub, _ := dialV5(t, addr, "deflate-tcp-sub", nil)
		tcpSub.sub(t, paho.SubscribeOptions{Topic: "z/#", QoS: 1})
		pub, _ := dialV5(t, addr, "deflate-tcp-pub", nil)

		before := read.Load()
		pub.pub(t, &paho.Publish{Topic: "z/tcp", QoS: 1, Payload: text})
		if m := sub.expect(t); m.Topic != "z/tcp" || !bytes.Equal(m.Payload, text) {
			t.Fatalf("ws subscriber got %s with %d bytes", m.Topic, len(m.Payload))
		}
		tcpSub.expect(t)
		wire := read.Load() - before
		if enabled && wire > int64(len(text))/10 {
			t.Fatalf("a %d byte compressible message took %d bytes on the WebSocket", len(text), wire)
		}
		if !enabled && wire < int64(len(text)) {
			t.Fatalf("without compression a %d byte message took %d bytes", len(text), wire)
		}

		// The other way: a compressed publish from the WebSocket client.
		sub.pub(t, &paho.Publish{Topic: "z/ws", QoS: 1, Payload: text})
		if m := tcpSub.expect(t); m.Topic != "z/ws" || !bytes.Equal(m.Payload, text) {
			t.Fatalf("tcp subscriber got %s with %d bytes", m.Topic, len(m.Payload))
		}
		if m := sub.expect(t); m.Topic != "z/ws" {
			t.Fatalf("ws subscriber got %s", m.Topic)
		}
		sub.pub(t, &paho.Publish{Topic: "z/small", QoS: 0, Payload: []byte("x")})
		if m := tcpSub.expect(t); m.Topic != "z/small" || string(m.Payload) != "x" {
			t.Fatalf("tcp subscriber got %s %q", m.Topic, m.Payload)
		}
	}
}

// A compressed message that expands far beyond limits.max_packet_size (here
// 256 MiB of valid PUBLISH packets from about 1 MiB on the wire) ends the
// connection with close 1009 once the bound is passed; the broker's heap
// does not grow with the expansion.
func TestWSDeflateBombRefused(t *testing.T) {
	t.Parallel()
	srv, _ := testutil.StartBroker(t, func(c *starling.Config) {
		c.WebSocket.Compression = true
		c.Limits.MaxPacketSize = 64 << 10
	})
	wc := dialDeflate(t, srv, nil)
	if !wc.Compressed() {
		t.Fatal("permessage-deflate not negotiated")
	}
	r := testutil.NewRaw(t, wc, packet.V5)
	r.Connect("bomb", true)

	// One PUBLISH of 60,000 zero bytes, compressed on its own: the copies
	// refer to nothing before them, so they can be concatenated.
	pkt, err := packet.Append(nil, &packet.Publish{Topic: "b", Payload: make([]byte, 60000)}, packet.V5)
	if err != nil {
		t.Fatal(err)
	}
	var seg bytes.Buffer
	fw, _ := flate.NewWriter(&seg, flate.BestCompression)
	fw.Write(pkt)
	fw.Flush()
	z := bytes.Repeat(seg.Bytes(), (256<<20)/len(pkt))
	z = z[:len(z)-4] // the message's last sync-flush tail is not sent
	h := ws.Header{Fin: true, OpCode: ws.OpBinary, Rsv: ws.Rsv(true, false, false), Length: int64(len(z)), Masked: true, Mask: ws.NewMask()}
	ws.Cipher(z, h.Mask, 0)

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	raw := wc.NetConn()
	raw.SetDeadline(time.Now().Add(testutil.Patience(t)))
	go func() { // the broker stops reading midway; the write then fails
		ws.WriteHeader(raw, h)
		raw.Write(z)
	}()
	if _, err := io.Copy(io.Discard, wc); err != nil {
		t.Fatalf("read after the bomb: %v, want the close handshake", err)
	}
	if code := wc.PeerCloseCode(); code != 1009 {
		t.Fatalf("close code %d, want 1009 (message too big)", code)
	}
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 32<<20 {
		t.Fatalf("heap grew by %d bytes", grew)
	}
}
