package transport

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// deflated compresses p as one permessage-deflate message: with final, the
// stream ends with a BFINAL block (allowed without context takeover);
// otherwise with a sync flush whose tail is stripped.
func deflated(t testing.TB, p []byte, final bool) []byte {
	t.Helper()
	var b bytes.Buffer
	fw, _ := flate.NewWriter(&b, flate.BestCompression)
	if _, err := fw.Write(p); err != nil {
		t.Fatal(err)
	}
	if final {
		if err := fw.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	if err := fw.Flush(); err != nil {
		t.Fatal(err)
	}
	out := b.Bytes()
	if !bytes.HasSuffix(out, deflateTail[:]) {
		t.Fatalf("flush output does not end with the tail: % x", out[len(out)-4:])
	}
	return out[:len(out)-4]
}

// cframe is a masked client frame with the given RSV1 bit.
func cframe(op ws.OpCode, fin, rsv1 bool, payload []byte) []byte {
	h := ws.Header{Fin: fin, OpCode: op, Length: int64(len(payload)), Masked: true, Mask: [4]byte{1, 2, 3, 4}}
	if rsv1 {
		h.Rsv = ws.Rsv(true, false, false)
	}
	p := append([]byte(nil), payload...)
	ws.Cipher(p, h.Mask, 0)
	var b bytes.Buffer
	_ = ws.WriteHeader(&b, h)
	b.Write(p)
	return b.Bytes()
}

func TestWSDeflateNegotiation(t *testing.T) {
	accept := func(c net.Conn, r *http.Request) { c.Close() }
	off := startWS(t, WSOptions{}, accept)
	on := startWS(t, WSOptions{Compression: true}, accept)
	const both = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
	cases := []struct {
		name, addr, offer, want string
	}{
		{"disabled", off, "permessage-deflate; client_max_window_bits", ""},
		{"browser offer", on, "permessage-deflate; client_max_window_bits", both},
		{"no offer", on, "", ""},
		{"other extension only", on, "x-webkit-deflate-frame", ""},
		{"small server window declined", on, "permessage-deflate; server_max_window_bits=10", ""},
		{"second offer taken", on, "permessage-deflate; server_max_window_bits=9, permessage-deflate", both},
		{"server window 15", on, "permessage-deflate; server_max_window_bits=15", both + "; server_max_window_bits=15"},
		{"unknown parameter declined", on, "permessage-deflate; foo=1", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			extra := "Sec-WebSocket-Protocol: mqtt\r\n"
			if tc.offer != "" {
				extra += "Sec-WebSocket-Extensions: " + tc.offer + "\r\n"
			}
			resp, _, _ := rawHandshake(t, tc.addr, extra, nil)
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d", resp.StatusCode)
			}
			got := resp.Header.Get("Sec-WebSocket-Extensions")
			if normalizeExt(got) != normalizeExt(tc.want) {
				t.Fatalf("Sec-WebSocket-Extensions = %q, want %q", got, tc.want)
			}
		})
	}
}

func normalizeExt(s string) string { return strings.ReplaceAll(s, " ", "") }

// countConn counts the bytes written through it.
type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func TestWSDeflateRoundTrip(t *testing.T) {
	text := bytes.Repeat([]byte("sensor/42/temperature 21.5 C; "), 10000) // 300 KB, compressible
	noise := make([]byte, 100<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	msgs := [][]byte{[]byte("tiny"), text, noise, text[:deflateMinSize]}
	var serverCompressed atomic.Bool
	addr := startWS(t, WSOptions{Compression: true, MaxMessageSize: 1 << 20}, func(c net.Conn, r *http.Request) {
		defer c.Close()
		serverCompressed.Store(c.(*WSConn).Compressed())
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		for _, m := range msgs { // echo
			got := make([]byte, len(m))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Errorf("server read: %v", err)
				return
			}
			if _, err := c.Write(got); err != nil {
				t.Errorf("server write: %v", err)
				return
			}
		}
		_, _ = c.Read(make([]byte, 1)) // until the client closes
	})
	var sent atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialWSConfig(ctx, "ws://"+addr+"/mqtt", WSDialConfig{
		Subprotocol: "mqtt", Compression: true, MaxMessageSize: 1 << 20,
		NetDial: func(ctx context.Context, network, a string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, network, a)
			if err != nil {
				return nil, err
			}
			return countConn{nc, &sent}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.(*WSConn).Compressed() {
		t.Fatal("client: permessage-deflate not negotiated")
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	for i, m := range msgs {
		before := sent.Load()
		if _, err := c.Write(m); err != nil {
			t.Fatal(err)
		}
		wire := sent.Load() - before
		got := make([]byte, len(m))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, m) {
			t.Fatalf("message %d (%d bytes) corrupted in the round trip", i, len(m))
		}
		switch {
		case len(m) == len(text) && wire > int64(len(m))/20:
			t.Errorf("compressible message of %d bytes took %d bytes on the wire", len(m), wire)
		case len(m) == len(noise) && wire > int64(len(m))+int64(len(m))/100:
			// Larger than one frame, it is sent as it is compressed: the
			// stored blocks add a little.
			t.Errorf("incompressible message of %d bytes took %d bytes", len(m), wire)
		case len(m) < deflateFrameSize && len(m) > deflateMinSize && wire > int64(len(m))+14:
			t.Errorf("message of %d bytes took %d bytes: not sent as is", len(m), wire)
		}
	}
	if !serverCompressed.Load() {
		t.Fatal("server: permessage-deflate not negotiated")
	}
}

func TestWSDeflateNotOfferedNotUsed(t *testing.T) {
	addr := startWS(t, WSOptions{Compression: true}, func(c net.Conn, r *http.Request) {
		if c.(*WSConn).Compressed() {
			t.Error("compression on without an offer")
		}
		c.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialWSConfig(ctx, "ws://"+addr+"/mqtt", WSDialConfig{Subprotocol: "mqtt"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.(*WSConn).Compressed() {
		t.Fatal("client: compression on without an offer")
	}
	_, _ = c.Read(make([]byte, 1))
}

func TestWSDeflateRead(t *testing.T) {
	msg := bytes.Repeat([]byte("hello deflate "), 200)
	z := deflated(t, msg, false)
	zf := deflated(t, msg, true)
	mid := len(z) / 2
	cases := []struct {
		name     string
		in       []byte
		want     []byte
		wantCode uint16 // close code sent, 0 for none (clean EOF)
	}{
		{"one frame", cframe(ws.OpBinary, true, true, z), msg, 0},
		{"BFINAL block", cframe(ws.OpBinary, true, true, zf), msg, 0},
		{"fragments with a ping between", cat(
			cframe(ws.OpBinary, false, true, z[:mid]),
			cf(ws.OpPing, true, "p"),
			cframe(ws.OpContinuation, false, false, nil),
			cframe(ws.OpContinuation, true, false, z[mid:])), msg, 0},
		{"compressed then plain", cat(
			cframe(ws.OpBinary, true, true, z),
			cframe(ws.OpBinary, true, false, []byte("plain"))), append(append([]byte(nil), msg...), "plain"...), 0},
		{"RSV1 on a continuation", cat(
			cframe(ws.OpBinary, false, true, z[:mid]),
			cframe(ws.OpContinuation, true, true, z[mid:])), nil, 1002},
		{"RSV1 on a ping", cframe(ws.OpPing, true, true, nil), nil, 1002},
		{"corrupt data", cframe(ws.OpBinary, true, true, []byte{0xff, 0xff, 0xff, 0xff}), nil, 1007},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fc := newFakeConn(append(tc.in, cf(ws.OpClose, true, closeBody(1000, ""))...))
			c := newWSConn(fc, nil, false, "mqtt")
			c.enableDeflate(1 << 20)
			got, err := readAllSmall(c, 100)
			if tc.wantCode == 0 {
				if err != io.EOF {
					t.Fatalf("read: %v", err)
				}
				if !bytes.Equal(got, tc.want) {
					t.Fatalf("read %q, want %q", got, tc.want)
				}
				return
			}
			var ce *CloseError
			if !errors.As(err, &ce) || ce.Code != tc.wantCode {
				t.Fatalf("read error %v, want close %d", err, tc.wantCode)
			}
			if c.inflating {
				t.Fatal("decompressor not released after the failure")
			}
		})
	}
}

func TestWSDeflateRSV1WithoutNegotiation(t *testing.T) {
	z := deflated(t, []byte("x"), false)
	c := newWSConn(newFakeConn(cframe(ws.OpBinary, true, true, z)), nil, false, "mqtt")
	_, err := readAllSmall(c, 100)
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != 1002 {
		t.Fatalf("read error %v, want close 1002", err)
	}
}

// A small compressed message that expands to 256 MiB is refused with close
// 1009 once it passes the bound, having allocated little.
func TestWSDeflateBomb(t *testing.T) {
	// 1 MiB of zeros compresses to about 1 KiB that refers only to the
	// previous bytes (all zeros), so 256 copies make a valid 256 MiB stream.
	seg := append(deflated(t, make([]byte, 1<<20), false), deflateTail[:]...)
	z := bytes.Repeat(seg, 256)
	bomb := cframe(ws.OpBinary, true, true, z[:len(z)-4])
	if len(bomb) > 1<<20 {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	fc := newFakeConn(bomb)
	c := newWSConn(fc, nil, false, "mqtt")
	const limit = 1 << 20
	c.enableDeflate(limit)

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	buf := make([]byte, 64<<10)
	var total int64
	var err error
	for {
		var n int
		n, err = c.Read(buf)
		total += int64(n)
		if err != nil {
			break
		}
	}
	runtime.ReadMemStats(&after)
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != 1009 {
		t.Fatalf("read error %v after %d bytes, want close 1009", err, total)
	}
	if total > limit {
		t.Fatalf("delivered %d bytes, more than the %d bound", total, limit)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Fatalf("reading the bomb allocated %d bytes", alloc)
	}
	frames := parseFrames(t, fc.written())
	if len(frames) != 1 || frames[0].Header.OpCode != ws.OpClose {
		t.Fatalf("sent %d frames, want one close frame", len(frames))
	}
	if code, _ := ws.ParseCloseFrameData(frames[0].Payload); code != 1009 {
		t.Fatalf("close code %d, want 1009", code)
	}
}

// After a BFINAL block the rest of the message is skipped, up to the bound:
// more is refused with 1009.
func TestWSDeflateAfterFinalBlock(t *testing.T) {
	msg := []byte("hello")
	z := deflated(t, msg, true)
	for _, tc := range []struct {
		trailer  int
		wantCode uint16
	}{{1, 0}, {100, 0}, {2000, 1009}} {
		in := cat(cframe(ws.OpBinary, true, true, append(append([]byte(nil), z...), make([]byte, tc.trailer)...)),
			cf(ws.OpClose, true, closeBody(1000, "")))
		c := newWSConn(newFakeConn(in), nil, false, "mqtt")
		c.enableDeflate(1000)
		got, err := readAllSmall(c, 64)
		var ce *CloseError
		switch {
		case tc.wantCode == 0 && (err != io.EOF || !bytes.Equal(got, msg)):
			t.Errorf("%d bytes after BFINAL: read %q, %v", tc.trailer, got, err)
		case tc.wantCode != 0 && (!errors.As(err, &ce) || ce.Code != tc.wantCode):
			t.Errorf("%d bytes after BFINAL: %v, want close %d", tc.trailer, err, tc.wantCode)
		}
	}
}
