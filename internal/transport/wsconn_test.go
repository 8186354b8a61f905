package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeConn is a net.Conn that reads a fixed byte stream and records writes.
type fakeConn struct {
	in     *bytes.Reader
	mu     sync.Mutex
	out    bytes.Buffer
	closed bool
}

func newFakeConn(in []byte) *fakeConn { return &fakeConn{in: bytes.NewReader(in)} }

func (f *fakeConn) Read(p []byte) (int, error) { return f.in.Read(p) }
func (f *fakeConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, net.ErrClosed
	}
	return f.out.Write(p)
}
func (f *fakeConn) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}
func (f *fakeConn) LocalAddr() net.Addr                { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1883} }
func (f *fakeConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5555} }
func (f *fakeConn) SetDeadline(t time.Time) error      { return nil }
func (f *fakeConn) SetReadDeadline(t time.Time) error  { return nil }
func (f *fakeConn) SetWriteDeadline(t time.Time) error { return nil }

func (f *fakeConn) written() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.out.Bytes()...)
}

// frame encodes one frame; masked frames use a fixed mask.
func frame(op ws.OpCode, fin, masked bool, payload []byte) []byte {
	h := ws.Header{Fin: fin, OpCode: op, Length: int64(len(payload))}
	var b bytes.Buffer
	p := append([]byte(nil), payload...)
	if masked {
		h.Masked, h.Mask = true, [4]byte{0xa1, 0xb2, 0xc3, 0xd4}
		ws.Cipher(p, h.Mask, 0)
	}
	if err := ws.WriteHeader(&b, h); err != nil {
		panic(err)
	}
	b.Write(p)
	return b.Bytes()
}

// cf is a masked client frame.
func cf(op ws.OpCode, fin bool, payload string) []byte { return frame(op, fin, true, []byte(payload)) }

func closeBody(code uint16, reason string) string {
	b := binary.BigEndian.AppendUint16(nil, code)
	return string(b) + reason
}

// parseFrames splits a server's output into frames, unmasking payloads.
func parseFrames(t *testing.T, b []byte) []ws.Frame {
	t.Helper()
	r := bytes.NewReader(b)
	var fs []ws.Frame
	for r.Len() > 0 {
		h, err := ws.ReadHeader(r)
		if err != nil {
			t.Fatalf("parse frame header: %v", err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r, p); err != nil {
			t.Fatalf("parse frame payload: %v", err)
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		fs = append(fs, ws.Frame{Header: h, Payload: p})
	}
	return fs
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// readAllSmall reads c with a small buffer until an error.
func readAllSmall(c net.Conn, bufSize int) ([]byte, error) {
	var out []byte
	buf := make([]byte, bufSize)
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
	}
}

func TestWSReadGolden(t *testing.T) {
	pingreq := "\xc0\x00"
	publish := "\x30\x0b\x00\x03a/bhello!" // PUBLISH QoS 0, topic "a/b", payload "hello!"
	tests := []struct {
		name      string
		in        []byte
		want      string        // stream delivered to Read
		wantErr   error         // io.EOF or a *CloseError (matched by code)
		wantOut   []ws.OpCode   // frames the adapter wrote
		wantClose uint16        // code of the close frame written, if any
		wantPong  string        // payload of the pong written, if any
		check     func(*WSConn) // extra checks
	}{
		{
			name:      "several packets in one frame",
			in:        cat(cf(ws.OpBinary, true, pingreq+publish+pingreq), cf(ws.OpClose, true, closeBody(1000, ""))),
			want:      pingreq + publish + pingreq,
			wantErr:   io.EOF,
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1000,
		},
		{
			name: "packet split across frames",
			in: cat(cf(ws.OpBinary, true, publish[:1]), cf(ws.OpBinary, true, publish[1:7]),
				cf(ws.OpBinary, true, publish[7:]+pingreq[:1]), cf(ws.OpBinary, true, pingreq[1:])),
			want:    publish + pingreq,
			wantErr: io.EOF,
		},
		{
			name: "fragmented message with interleaved ping",
			in: cat(cf(ws.OpBinary, false, publish[:4]), cf(ws.OpPing, true, "hb"),
				cf(ws.OpContinuation, false, ""), cf(ws.OpContinuation, true, publish[4:])),
			want:     publish,
			wantErr:  io.EOF,
			wantOut:  []ws.OpCode{ws.OpPong},
			wantPong: "hb",
		},
		{
			name:    "empty frames and pong are skipped",
			in:      cat(cf(ws.OpBinary, true, ""), cf(ws.OpPong, true, "x"), cf(ws.OpBinary, true, pingreq)),
			want:    pingreq,
			wantErr: io.EOF,
		},
		{
			name:     "ping answered with pong",
			in:       cf(ws.OpPing, true, "hello"),
			wantErr:  io.EOF,
			wantOut:  []ws.OpCode{ws.OpPong},
			wantPong: "hello",
		},
		{
			name:      "text frame closes 1003",
			in:        cat(cf(ws.OpBinary, true, pingreq), cf(ws.OpText, true, "{}"), cf(ws.OpBinary, true, pingreq)),
			want:      pingreq,
			wantErr:   &CloseError{Code: 1003},
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1003,
		},
		{
			name:      "unmasked client frame closes 1002",
			in:        frame(ws.OpBinary, true, false, []byte(pingreq)),
			wantErr:   &CloseError{Code: 1002},
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1002,
		},
		{
			name: "reserved bits close 1002",
			in: func() []byte {
				b := cf(ws.OpBinary, true, pingreq)
				b[0] |= 0x40 // RSV1, no extension negotiated
				return b
			}(),
			wantErr:   &CloseError{Code: 1002},
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1002,
		},
		{
			name:      "reserved opcode closes 1002",
			in:        cf(ws.OpCode(0x3), true, "x"),
			wantErr:   &CloseError{Code: 1002},
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1002,
		},
		{
			name:      "continuation without start closes 1002",
			in:        cf(ws.OpContinuation, true, "x"),
			wantErr:   &CloseError{Code: 1002},
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1002,
		},
		{
			name:      "new message inside fragmented one closes 1002",
			in:        cat(cf(ws.OpBinary, false, "a"), cf(ws.OpBinary, true, "b")),
			want:      "a",
			wantErr:   &CloseError{Code: 1002},
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1002,
		},
		{
			name:      "fragmented ping closes 1002",
			in:        cf(ws.OpPing, false, "x"),
			wantErr:   &CloseError{Code: 1002},
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1002,
		},
		{
			name:      "control frame over 125 bytes closes 1002",
			in:        cf(ws.OpPing, true, string(make([]byte, 126))),
			wantErr:   &CloseError{Code: 1002},
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1002,
		},
		{
			name:      "64-bit length with MSB set closes 1002",
			in:        []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},
			wantErr:   &CloseError{Code: 1002},
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1002,
		},
		{
			name:      "close handshake echoes the code",
			in:        cat(cf(ws.OpClose, true, closeBody(1001, "bye")), cf(ws.OpBinary, true, pingreq)),
			wantErr:   io.EOF,
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1001,
		},
		{
			name:    "empty close answered with empty close",
			in:      cf(ws.OpClose, true, ""),
			wantErr: io.EOF,
			wantOut: []ws.OpCode{ws.OpClose},
		},
		{
			name:      "close 1013 accepted",
			in:        cf(ws.OpClose, true, closeBody(1013, "")),
			wantErr:   io.EOF,
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1013,
		},
		{
			name:      "close with 1-byte payload closes 1002",
			in:        cf(ws.OpClose, true, "\x03"),
			wantErr:   &CloseError{Code: 1002},
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1002,
		},
		{
			name:      "close with reserved code 1005 closes 1002",
			in:        cf(ws.OpClose, true, closeBody(1005, "")),
			wantErr:   &CloseError{Code: 1002},
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1002,
		},
		{
			name:      "close with invalid UTF-8 reason closes 1007",
			in:        cf(ws.OpClose, true, closeBody(1000, "\xff")),
			wantErr:   &CloseError{Code: 1007},
			wantOut:   []ws.OpCode{ws.OpClose},
			wantClose: 1007,
		},
		{
			name:    "truncated payload",
			in:      cf(ws.OpBinary, true, publish)[:8],
			want:    publish[:2],
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "truncated header",
			in:      cf(ws.OpBinary, true, publish)[:3],
			wantErr: io.ErrUnexpectedEOF,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := newFakeConn(tt.in)
			c := newWSConn(fc, nil, false, "mqtt")
			got, err := readAllSmall(c, 3)
			if string(got) != tt.want {
				t.Errorf("stream = %q, want %q", got, tt.want)
			}
			var ce, wantCE *CloseError
			switch {
			case errors.As(tt.wantErr, &wantCE):
				if !errors.As(err, &ce) || ce.Code != wantCE.Code {
					t.Errorf("err = %v, want close %d", err, wantCE.Code)
				}
			case !errors.Is(err, tt.wantErr):
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			fs := parseFrames(t, fc.written())
			if len(fs) != len(tt.wantOut) {
				t.Fatalf("wrote %d frames, want %d: %+v", len(fs), len(tt.wantOut), fs)
			}
			for i, f := range fs {
				if f.Header.OpCode != tt.wantOut[i] || f.Header.Masked || !f.Header.Fin {
					t.Errorf("frame %d header = %+v, want unmasked final %v", i, f.Header, tt.wantOut[i])
				}
				switch f.Header.OpCode {
				case ws.OpClose:
					code, _ := ws.ParseCloseFrameData(f.Payload)
					if uint16(code) != tt.wantClose {
						t.Errorf("close code = %d, want %d", code, tt.wantClose)
					}
				case ws.OpPong:
					if string(f.Payload) != tt.wantPong {
						t.Errorf("pong payload = %q, want %q", f.Payload, tt.wantPong)
					}
				}
			}
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Errorf("Read after the end succeeded")
			}
		})
	}
}

func TestWSWriteOneFramePerWrite(t *testing.T) {
	fc := newFakeConn(nil)
	c := newWSConn(fc, nil, false, "mqtt")
	msgs := []string{"\xc0\x00", string(bytes.Repeat([]byte{'x'}, 200)), string(bytes.Repeat([]byte{'y'}, 70000))}
	for _, m := range msgs {
		if n, err := c.Write([]byte(m)); err != nil || n != len(m) {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Fatalf("empty Write = %d, %v", n, err)
	}
	if err := c.CloseWithCode(CloseCodeForReason(0x8B), "server shutting down"); err != nil {
		t.Fatalf("CloseWithCode: %v", err)
	}
	if _, err := c.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after close: %v, want net.ErrClosed", err)
	}
	fs := parseFrames(t, fc.written())
	if len(fs) != len(msgs)+1 {
		t.Fatalf("got %d frames, want %d", len(fs), len(msgs)+1)
	}
	for i, m := range msgs {
		if h := fs[i].Header; h.OpCode != ws.OpBinary || !h.Fin || h.Masked || string(fs[i].Payload) != m {
			t.Errorf("frame %d = %+v (%d bytes), want unmasked binary of %d bytes", i, h, len(fs[i].Payload), len(m))
		}
	}
	code, reason := ws.ParseCloseFrameData(fs[len(msgs)].Payload)
	if code != 1001 || reason != "server shutting down" {
		t.Errorf("close = %d %q, want 1001 %q", code, reason, "server shutting down")
	}
	if !fc.closed {
		t.Errorf("underlying conn not closed")
	}
}

func TestWSClientSideMasksAndRejectsMasked(t *testing.T) {
	// Client side: a masked frame from the server is a protocol error.
	fc := newFakeConn(cat(frame(ws.OpBinary, true, false, []byte("ok")), cf(ws.OpBinary, true, "no")))
	c := newWSConn(fc, nil, true, "mqtt")
	got, err := readAllSmall(c, 16)
	var ce *CloseError
	if string(got) != "ok" || !errors.As(err, &ce) || ce.Code != 1002 {
		t.Fatalf("got %q, %v; want \"ok\" and close 1002", got, err)
	}
	payload := bytes.Repeat([]byte("0123456789"), 5000) // spans several mask chunks
	orig := append([]byte(nil), payload...)
	fc2 := newFakeConn(nil)
	c2 := newWSConn(fc2, nil, true, "mqtt")
	if _, err := c2.Write(payload); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(payload, orig) {
		t.Fatalf("Write changed the caller's buffer")
	}
	fs := parseFrames(t, fc2.written())
	if len(fs) != 1 || !fs[0].Header.Masked || !bytes.Equal(fs[0].Payload, payload) {
		t.Fatalf("got %d frames (masked=%v), want one masked frame with the payload", len(fs), len(fs) > 0 && fs[0].Header.Masked)
	}
}

func TestWSCloseReasonTruncated(t *testing.T) {
	fc := newFakeConn(nil)
	c := newWSConn(fc, nil, false, "")
	reason := string(bytes.Repeat([]byte("é"), 100)) // 200 bytes
	_ = c.CloseWithCode(1011, reason)
	fs := parseFrames(t, fc.written())
	if len(fs) != 1 || len(fs[0].Payload) > 125 {
		t.Fatalf("got %+v", fs)
	}
	_, r := ws.ParseCloseFrameData(fs[0].Payload)
	if err := ws.CheckCloseFrameData(1011, r); err != nil || len(r) != 122 {
		t.Errorf("reason %q (%d bytes): %v", r, len(r), err)
	}
	_ = c.Close()
	if n := len(parseFrames(t, fc.written())); n != 1 {
		t.Errorf("second Close wrote frames: %d", n)
	}
}

func TestCloseCodeForReason(t *testing.T) {
	tests := []struct {
		reason byte
		want   uint16
	}{
		{
			reason: 0x00,
			want:   1000,
		},
		{
			reason: 0x8B,
			want:   1001,
		},
		{
			reason: 0x81,
			want:   1002,
		},
		{
			reason: 0x82,
			want:   1002,
		},
		{
			reason: 0x95,
			want:   1009,
		},
		{
			reason: 0x87,
			want:   1008,
		},
		{
			reason: 0x89,
			want:   1013,
		},
		{
			reason: 0x80,
			want:   1011,
		},
		{
			reason: 0x8E,
			want:   1000,
		},
	}
	for _, tt := range tests {
		if got := CloseCodeForReason(tt.reason); got != tt.want {
			t.Errorf("CloseCodeForReason(%#x) = %d, want %d", tt.reason, got, tt.want)
		}
	}
	for r := range 256 {
		switch CloseCodeForReason(byte(r)) {
		case 1005, 1006, 1015:
			t.Errorf("CloseCodeForReason(%#x) returns a code RFC 6455 forbids sending", r)
		}
	}
}

// loopConn replays one input forever and discards writes.
type loopConn struct {
	fakeConn
	data []byte
	off  int
}

func (l *loopConn) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}
func (l *loopConn) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkWSRead: a 64-byte packet per masked frame, read into a reused
// buffer. Must not allocate.
func BenchmarkWSRead(b *testing.B) {
	payload := bytes.Repeat([]byte{0x30}, 64)
	c := newWSConn(&loopConn{data: frame(ws.OpBinary, true, true, payload)}, nil, false, "mqtt")
	buf := make([]byte, 64)
	b.ReportAllocs()
	b.SetBytes(64)
	for b.Loop() {
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWSWrite: one 64-byte frame per Write. Must not allocate.
func BenchmarkWSWrite(b *testing.B) {
	c := newWSConn(&loopConn{data: []byte{0}}, nil, false, "mqtt")
	p := bytes.Repeat([]byte{0x30}, 64)
	b.ReportAllocs()
	b.SetBytes(64)
	for b.Loop() {
		if _, err := c.Write(p); err != nil {
			b.Fatal(err)
		}
	}
}

// IdleConn offers the underlying connection for polling only while the
// adapter holds none of the peer's bytes itself.
func TestWSConnIdleConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	frame := []byte{0x82, 0x80 | 2, 0, 0, 0, 0, 'h', 'i'} // masked, mask 0
	c := newWSConn(a, frame, false, "mqtt")
	if _, ok := c.IdleConn(); ok {
		t.Fatal("idle with bytes read before the hijack")
	}
	buf := make([]byte, 2)
	if n, err := c.Read(buf); n != 2 || err != nil || string(buf) != "hi" {
		t.Fatalf("read %q %v", buf[:n], err)
	}
	if nc, ok := c.IdleConn(); !ok || nc != a {
		t.Fatalf("not idle once they were read: %v %v", nc, ok)
	}
}

// Every WebSocket connection holds a WSConn, idle ones included: its frame
// scratch and the state of a compressed message being read are pooled, so
// and its flags share words, so it stays in the 256-byte allocation class
// (it was 448, then 288).
func TestWSConnSizeBudget(t *testing.T) {
	if size := unsafe.Sizeof(WSConn{}); size > 256 {
		t.Fatalf("WSConn is %d bytes, budget 256", size)
	}
}
