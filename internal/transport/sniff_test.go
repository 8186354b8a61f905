package transport

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
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

// HTTP sniffed inside TLS reaches the http.Server on a wrapper, not a
// *tls.Conn; ConnTLSContext and WithConnTLS still give the request r.TLS,
// and a plain connection gets none.
func TestWithConnTLS(t *testing.T) {
	ca := newTestCA(t, "ca")
	certPEM, keyPEM := ca.issue(t, "server", 2, true)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	l := NewConnListener(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1})
	srv := &http.Server{ConnContext: ConnTLSContext, Handler: WithConnTLS(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			fmt.Fprintf(w, "tls %v", r.TLS.HandshakeComplete)
			return
		}
		fmt.Fprint(w, "plain")
	}))}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	defer func() { srv.Close(); <-done }()

	get := func(c net.Conn) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}

	// TLS, sniffed inside.
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		tc := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{cert}})
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if tc.Handshake() != nil {
			a.Close()
			return
		}
		tc.SetDeadline(time.Time{})
		kind, c, err := Sniff(tc)
		if err != nil || kind != SniffHTTP {
			a.Close()
			return
		}
		l.Put(c)
	}()
	cc := tls.Client(b, &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1"})
	if got := get(cc); got != "tls true" {
		t.Fatalf("over TLS the handler saw %q", got)
	}

	// Plain, sniffed.
	x, y := net.Pipe()
	defer y.Close()
	go func() {
		_, c, err := Sniff(x)
		if err != nil {
			x.Close()
			return
		}
		l.Put(c)
	}()
	if got := get(y); got != "plain" {
		t.Fatalf("over a plain conn the handler saw %q", got)
	}
}
