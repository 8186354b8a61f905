package transport

import (
	"io"
	"net"
	"testing"
	"time"
)

// Sniff tells MQTT (0x10), TLS (0x16) and anything else (HTTP) apart by the
// first byte, and the returned conn still reads every byte.
func TestSniff(t *testing.T) {
	for _, tt := range []struct {
		first []byte
		want  string
	}{
		{[]byte{0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T'}, SniffMQTT},
		{[]byte{0x16, 0x03, 0x01, 0x00, 0x05}, SniffTLS},
		{[]byte("GET /mqtt HTTP/1.1\r\n"), SniffHTTP},
		{[]byte{0x20, 0x02}, SniffHTTP}, // not a CONNECT: HTTP, which refuses it
	} {
		a, b := net.Pipe()
		go func() { a.Write(tt.first); a.Close() }()
		b.SetDeadline(time.Now().Add(5 * time.Second))
		kind, c, err := Sniff(b)
		if err != nil || kind != tt.want {
			t.Fatalf("% x: Sniff = %q, %v; want %q", tt.first, kind, err, tt.want)
		}
		got, err := io.ReadAll(c)
		if err != nil || string(got) != string(tt.first) {
			t.Fatalf("% x: read back % x, %v", tt.first, got, err)
		}
		b.Close()
	}
	// A peer that sends nothing before the deadline: an error, not a hang.
	a, b := net.Pipe()
	defer a.Close()
	b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := Sniff(b); err == nil {
		t.Fatal("Sniff of a silent peer succeeded")
	}
}

// ConnListener hands Put's connections to Accept, and after Close closes
// them instead.
func TestConnListener(t *testing.T) {
	l := NewConnListener(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1})
	a, b := net.Pipe()
	defer b.Close()
	go l.Put(a)
	c, err := l.Accept()
	if err != nil || c != a {
		t.Fatalf("Accept = %v, %v", c, err)
	}
	l.Close()
	if _, err := l.Accept(); err != net.ErrClosed {
		t.Fatalf("Accept after Close: %v", err)
	}
	x, y := net.Pipe()
	l.Put(x) // closes x
	y.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := y.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read from a conn Put after Close: %v, want EOF", err)
	}
}
