package transport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"

	"github.com/gobwas/ws"
)

// Seeds live in testdata/fuzz/<Name>/; these are added on top.

// FuzzWSRead feeds arbitrary bytes as the peer's stream into both sides of
// the adapter: no panic, no more bytes out than in, only valid frames
// written, errors sticky.
func FuzzWSRead(f *testing.F) {
	f.Add(cat(cf(ws.OpBinary, false, "\x30\x05"), cf(ws.OpPing, true, "p"), cf(ws.OpContinuation, true, "\x00\x01ab"), cf(ws.OpClose, true, closeBody(1000, "x"))), uint8(3))
	f.Add(frame(ws.OpBinary, true, false, []byte("\xc0\x00")), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, bufSize uint8) {
		for _, client := range []bool{false, true} {
			fc := newFakeConn(data)
			c := newWSConn(fc, nil, client, "mqtt")
			got, err := readAllSmall(c, int(bufSize)+1)
			if err == nil {
				t.Fatal("readAllSmall returned no error")
			}
			if len(got) > len(data) {
				t.Fatalf("read %d bytes from %d", len(got), len(data))
			}
			if n, err2 := c.Read(make([]byte, 1)); n != 0 || err2 == nil {
				t.Fatalf("Read after %v: %d, %v", err, n, err2)
			}
			var ce *CloseError
			if errors.As(err, &ce) && ce.Code != 1002 && ce.Code != 1003 && ce.Code != 1007 {
				t.Fatalf("close code %d", ce.Code)
			}
			out := fc.written()
			// Pongs are no bigger than the pings, plus one close frame.
			if len(out) > len(data)+2+ws.MaxControlFramePayloadSize {
				t.Fatalf("wrote %d bytes for %d read", len(out), len(data))
			}
			r := bytes.NewReader(out)
			closes := 0
			for r.Len() > 0 {
				h, err := ws.ReadHeader(r)
				if err != nil {
					t.Fatalf("wrote a bad frame: %v", err)
				}
				state := ws.StateClientSide // what a client expects from a server
				if client {
					state = ws.StateServerSide
				}
				if err := ws.CheckHeader(h, state); err != nil || h.OpCode.IsData() {
					t.Fatalf("wrote frame %+v: %v", h, err)
				}
				if _, err := io.CopyN(io.Discard, r, h.Length); err != nil {
					t.Fatal(err)
				}
				if h.OpCode == ws.OpClose {
					closes++
				}
				if closes > 1 || (closes == 1 && h.OpCode != ws.OpClose) {
					t.Fatalf("frame after close: %+v", h)
				}
			}
		}
	})
}

// FuzzWSReadDeflate feeds arbitrary bytes to a server-side adapter with
// permessage-deflate on: no panic, decompressed output within the bound,
// only close codes the adapter defines, the decompressor released. The
// seeds in testdata add bad deflate data, RSV1 where it is not allowed, a
// text frame, and messages at and one byte over the bound.
func FuzzWSReadDeflate(f *testing.F) {
	z := deflated(f, bytes.Repeat([]byte("abc"), 100), false)
	f.Add(cframe(ws.OpBinary, true, true, z), uint8(7))
	f.Add(cat(cframe(ws.OpBinary, false, true, z[:3]), cf(ws.OpPing, true, "p"), cframe(ws.OpContinuation, true, false, z[3:])), uint8(200))
	f.Add(cframe(ws.OpBinary, true, true, deflated(f, make([]byte, 5000), true)), uint8(255))
	f.Fuzz(func(t *testing.T, data []byte, bufSize uint8) {
		const limit = 1000
		fc := newFakeConn(data)
		c := newWSConn(fc, nil, false, "mqtt")
		c.enableDeflate(limit)
		var total int
		buf := make([]byte, int(bufSize)+1)
		var err error
		for err == nil {
			var n int
			n, err = c.Read(buf)
			total += n
		}
		if c.inflating {
			t.Fatal("decompressor held after the stream ended")
		}
		var ce *CloseError
		if errors.As(err, &ce) {
			switch ce.Code {
			case 1002, 1003, 1007, 1009:
			default:
				t.Fatalf("close code %d", ce.Code)
			}
		}
		// Each message may expand to the bound; uncompressed bytes pass as
		// they are.
		if total > len(data)*(limit+1) {
			t.Fatalf("read %d bytes from %d", total, len(data))
		}
	})
}

// FuzzProxyHeader: no panic, bounded consumption, addresses consistent, and
// a parsed TCP4 v1 line is canonical.
func FuzzProxyHeader(f *testing.F) {
	for _, tt := range proxyHeaderTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, size := range []int{16, 4096} {
			r := bufio.NewReaderSize(bytes.NewReader(data), size)
			src, dst, err := ReadProxyHeader(r)
			rest, _ := io.Copy(io.Discard, r)
			consumed := len(data) - int(rest)
			if len(data) > 0 && data[0] == 'P' && consumed > maxV1Len {
				t.Fatalf("v1: consumed %d bytes", consumed)
			}
			if consumed > v2HdrLen+0xffff {
				t.Fatalf("consumed %d bytes", consumed)
			}
			if err != nil {
				if src != nil || dst != nil {
					t.Fatal("addresses with an error")
				}
				continue
			}
			if (src == nil) != (dst == nil) {
				t.Fatalf("src %v, dst %v", src, dst)
			}
			if src == nil {
				continue
			}
			s, d := src.(*net.TCPAddr), dst.(*net.TCPAddr)
			if bytes.HasPrefix(data, []byte("PROXY TCP4 ")) {
				line := fmt.Sprintf("PROXY TCP4 %s %s %d %d\r\n", s.IP, d.IP, s.Port, d.Port)
				if !bytes.HasPrefix(data, []byte(line)) {
					t.Fatalf("parsed %q from %q", line, data)
				}
			}
		}
	})
}

// FuzzForwarded: no panic; an untrusted peer is its own answer; entries a
// client prepends to the header a trusted proxy appended to never change the
// answer.
func FuzzForwarded(f *testing.F) {
	f.Add("1.2.3.4, 10.0.0.1", `for=1.2.3.4;proto=https`, uint32(0xc6336407))
	f.Add(`"[`, `for="[2001:db8::1]:80", for=unknown`, uint32(1))
	f.Add("junk", `for="unterminated`, uint32(0xffffffff))
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	f.Fuzz(func(t *testing.T, xff, fwd string, ip uint32) {
		client := netip.AddrFrom4([4]byte{198, byte(ip >> 16), byte(ip >> 8), byte(ip)}) // never trusted
		peer := netip.MustParseAddr("10.0.0.2")

		r := &http.Request{RemoteAddr: "10.0.0.2:1", Header: http.Header{"X-Forwarded-For": {xff}, "Forwarded": {fwd}}}
		_ = ClientAddr(r, trusted)

		r.RemoteAddr = client.String() + ":1"
		if got := ClientAddr(r, trusted); got != client {
			t.Fatalf("untrusted peer %v: got %v", client, got)
		}

		r = &http.Request{RemoteAddr: "10.0.0.2:1", Header: http.Header{"X-Forwarded-For": {xff + ", " + client.String()}}}
		if got := ClientAddr(r, trusted); got != client {
			t.Fatalf("X-Forwarded-For %q: got %v, want %v", r.Header.Get("X-Forwarded-For"), got, client)
		}
		r.Header.Add("X-Forwarded-For", client.String()+", 10.0.0.3")
		if got := ClientAddr(r, trusted); got != client {
			t.Fatalf("two lines: got %v, want %v", got, client)
		}

		// A client can break a shared Forwarded line with an open quote; the
		// answer is then the peer, never an address it chose.
		r = &http.Request{RemoteAddr: "10.0.0.2:1", Header: http.Header{"Forwarded": {fwd + ", for=" + client.String()}}}
		if got := ClientAddr(r, trusted); got != client && got != peer {
			t.Fatalf("Forwarded %q: got %v, want %v", r.Header.Get("Forwarded"), got, client)
		}
		r.Header = http.Header{"Forwarded": {fwd, "for=" + client.String()}}
		if got := ClientAddr(r, trusted); got != client {
			t.Fatalf("Forwarded lines %q: got %v, want %v", r.Header.Values("Forwarded"), got, client)
		}
	})
}
