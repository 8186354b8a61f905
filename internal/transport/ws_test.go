package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// startWS serves NewWSHandler(opts, accept) on 127.0.0.1 and returns its
// address. The server is closed at cleanup; accept must return by then.
func startWS(t *testing.T, opts WSOptions, accept func(net.Conn, *http.Request)) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(NewWSHandler(opts, accept))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return ln.Addr().String()
}

// rawHandshake sends an upgrade request with extra header lines (and extra
// bytes right after it) and returns the response and the conn.
func rawHandshake(t *testing.T, addr, extra string, after []byte) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	return rawHandshakeHost(t, addr, addr, extra, after)
}

// rawHandshakeHost is rawHandshake with the given Host header.
func rawHandshakeHost(t *testing.T, addr, host, extra string, after []byte) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /mqtt HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	if !strings.Contains(extra, "Sec-WebSocket-Version:") {
		req += "Sec-WebSocket-Version: 13\r\n"
	}
	req += extra + "\r\n"
	if _, err := c.Write(append([]byte(req), after...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp, c, br
}

func TestWSHandshakePolicy(t *testing.T) {
	tests := []struct {
		name      string
		opts      WSOptions
		header    string // extra request header lines; "{host}" and "{port}" are replaced
		host      string // the Host header when not the listener's address; "{port}" is replaced
		noUpgrade bool
		status    int
		proto     string
		body      string
	}{
		{name: "mqtt", header: "Sec-WebSocket-Protocol: mqtt\r\n", status: 101, proto: "mqtt"},
		{name: "mqttv3.1", header: "Sec-WebSocket-Protocol: mqttv3.1\r\n", status: 101, proto: "mqttv3.1"},
		{name: "server preference", header: "Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n", status: 101, proto: "mqtt"},
		{name: "two header lines", header: "Sec-WebSocket-Protocol: foo\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 101, proto: "mqtt"},
		{name: "none offered", header: "", status: 400, body: "subprotocol"},
		{name: "none offered allowed", opts: WSOptions{AllowNoSubprotocol: true}, header: "", status: 101, proto: ""},
		{name: "only unknown offered", opts: WSOptions{AllowNoSubprotocol: true}, header: "Sec-WebSocket-Protocol: foo\r\n", status: 400, body: "mqtt, mqttv3.1"},
		{name: "case-sensitive", header: "Sec-WebSocket-Protocol: MQTT\r\n", status: 400},
		{name: "custom list", opts: WSOptions{Subprotocols: []string{"mqttv5"}}, header: "Sec-WebSocket-Protocol: mqtt, mqttv5\r\n", status: 101, proto: "mqttv5"},
		{name: "same origin", header: "Origin: http://{host}\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 101, proto: "mqtt"},
		{name: "cross origin refused by default", header: "Origin: https://evil.example\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 403, body: "https://evil.example"},
		{name: "origin allowed", opts: WSOptions{AllowedOrigins: []string{"https://app.example.com"}}, header: "Origin: https://APP.example.com\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 101, proto: "mqtt"},
		{name: "wildcard", opts: WSOptions{AllowedOrigins: []string{"https://*.example.com"}}, header: "Origin: https://a.b.example.com\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 101, proto: "mqtt"},
		{name: "wildcard needs a subdomain", opts: WSOptions{AllowedOrigins: []string{"https://*.example.com"}}, header: "Origin: https://example.com\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 403},
		{name: "wildcard lookalike", opts: WSOptions{AllowedOrigins: []string{"https://*.example.com"}}, header: "Origin: https://evil-example.com\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 403},
		{name: "wildcard other scheme", opts: WSOptions{AllowedOrigins: []string{"https://*.example.com"}}, header: "Origin: http://a.example.com\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 403},
		{name: "wildcard port", opts: WSOptions{AllowedOrigins: []string{"https://*.example.com:*"}}, header: "Origin: https://a.example.com:8443\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 101, proto: "mqtt"},
		{name: "star", opts: WSOptions{AllowedOrigins: []string{"*"}}, header: "Origin: https://anything.test\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 101, proto: "mqtt"},
		{name: "null origin refused", header: "Origin: null\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 403},
		{name: "origin with path refused", opts: WSOptions{AllowedOrigins: []string{"https://*"}}, header: "Origin: https://a.test/x\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 403},
		{name: "two origins refused", opts: WSOptions{AllowedOrigins: []string{"*"}}, header: "Origin: https://a.test\r\nOrigin: https://b.test\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 403},
		// DNS rebinding: evil.example now resolves to the listener, and
		// the page's Origin matches the Host the browser sends.
		{name: "rebinding refused", host: "evil.example:{port}", header: "Origin: http://evil.example:{port}\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 403},
		{name: "https origin on a plain listener", header: "Origin: https://{host}\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 403},
		{name: "another port", header: "Origin: http://127.0.0.1:1\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 403},
		{name: "localhost on loopback", host: "localhost:{port}", header: "Origin: http://LOCALHOST:{port}\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 101, proto: "mqtt"},
		{name: "public origin, default port", opts: WSOptions{PublicOrigins: []string{"https://broker.example.com"}}, host: "broker.example.com", header: "Origin: https://broker.example.com:443\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 101, proto: "mqtt"},
		{name: "public origin, other scheme", opts: WSOptions{PublicOrigins: []string{"https://broker.example.com"}}, header: "Origin: http://broker.example.com\r\nSec-WebSocket-Protocol: mqtt\r\n", status: 403},
		{name: "origin checked before subprotocol", header: "Origin: https://evil.example\r\n", status: 403},
		{name: "not a websocket request", noUpgrade: true, status: 426, body: "WebSocket"},
		{name: "bad version", header: "Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Version: 8\r\n", status: 426},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			accepted := make(chan string, 1)
			addr := startWS(t, tt.opts, func(c net.Conn, r *http.Request) {
				accepted <- c.(*WSConn).Subprotocol()
				c.Close()
			})
			var resp *http.Response
			if tt.noUpgrade {
				var err error
				resp, err = http.Get("http://" + addr + "/mqtt")
				if err != nil {
					t.Fatal(err)
				}
			} else {
				_, port, _ := net.SplitHostPort(addr)
				host := addr
				if tt.host != "" {
					host = strings.ReplaceAll(tt.host, "{port}", port)
				}
				header := strings.ReplaceAll(strings.ReplaceAll(tt.header, "{host}", addr), "{port}", port)
				resp, _, _ = rawHandshakeHost(t, addr, host, header, nil)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d (%q), want %d", resp.StatusCode, b, tt.status)
			}
			if tt.status != 101 {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
				if !strings.Contains(string(b), tt.body) {
					t.Errorf("body %q does not mention %q", b, tt.body)
				}
				select {
				case <-accepted:
					t.Errorf("accept called for a refused request")
				default:
				}
				return
			}
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != tt.proto {
				t.Errorf("response subprotocol %q, want %q", got, tt.proto)
			}
			select {
			case got := <-accepted:
				if got != tt.proto {
					t.Errorf("conn subprotocol %q, want %q", got, tt.proto)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("accept not called")
			}
		})
	}
}

// TestWSPipelinedFrames: frames sent in the same segment as the request are
// kept (the HTTP server buffered them before the hijack).
func TestWSPipelinedFrames(t *testing.T) {
	got := make(chan string, 1)
	addr := startWS(t, WSOptions{}, func(c net.Conn, r *http.Request) {
		defer c.Close()
		b, _ := readAllSmall(c, 64)
		got <- string(b)
	})
	after := cat(cf(ws.OpBinary, true, "\x10\x02"), cf(ws.OpBinary, true, "ab"), cf(ws.OpClose, true, closeBody(1000, "")))
	resp, c, br := rawHandshake(t, addr, "Sec-WebSocket-Protocol: mqtt\r\n", after)
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if s := <-got; s != "\x10\x02ab" {
		t.Fatalf("server read %q", s)
	}
	h, err := ws.ReadHeader(br)
	if err != nil || h.OpCode != ws.OpClose {
		t.Fatalf("want close frame, got %+v, %v", h, err)
	}
	_ = c
}

func TestWSEndToEnd(t *testing.T) {
	big := make([]byte, 256<<10)
	for i := range big {
		big[i] = byte(i*7 + i>>8)
	}
	serverErr := make(chan error, 1)
	addr := startWS(t, WSOptions{}, func(c net.Conn, r *http.Request) {
		defer c.Close()
		serverErr <- func() error {
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			got := make([]byte, len(big))
			if _, err := io.ReadFull(c, got); err != nil {
				return fmt.Errorf("server read: %w", err)
			}
			if !bytes.Equal(got, big) {
				return errors.New("server read corrupted data")
			}
			if _, err := c.Write(big); err != nil {
				return fmt.Errorf("server write: %w", err)
			}
			// Then the client closes.
			if n, err := c.Read(got); err != io.EOF {
				return fmt.Errorf("server read after client close: %d, %v", n, err)
			}
			return nil
		}()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialWS(ctx, "ws://"+addr+"/mqtt", "mqtt", http.Header{"Origin": {"http://" + addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(big))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("client read corrupted data")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-serverErr; err != nil {
		t.Fatal(err)
	}
}

func TestDialWSSubprotocolRefused(t *testing.T) {
	addr := startWS(t, WSOptions{}, func(c net.Conn, r *http.Request) { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := DialWS(ctx, "ws://"+addr+"/mqtt", "stomp", nil); err == nil {
		c.Close()
		t.Fatal("dial succeeded with an unsupported subprotocol")
	}
}

// TestWSConcurrentWrites: writers, pings and a reader at once; every frame
// arrives whole. Run with -race.
func TestWSConcurrentWrites(t *testing.T) {
	const writers, perWriter, size = 8, 50, 1500
	done := make(chan error, 1)
	addr := startWS(t, WSOptions{}, func(c net.Conn, r *http.Request) {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		var wg sync.WaitGroup
		readErr := make(chan error, 1)
		go func() { _, err := readAllSmall(c, 7); readErr <- err }()
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				msg := bytes.Repeat([]byte{byte('a' + w)}, size)
				for range perWriter {
					if _, err := c.Write(msg); err != nil {
						return
					}
				}
			}()
		}
		wg.Wait()
		err := <-readErr // the client's close
		if err != io.EOF {
			done <- fmt.Errorf("server read: %v", err)
			return
		}
		done <- nil
	})
	_, c, br := rawHandshake(t, addr, "Sec-WebSocket-Protocol: mqtt\r\n", nil)
	// Pings and data from the client while the server writes.
	go func() {
		for i := range 20 {
			_, _ = c.Write(cf(ws.OpPing, true, fmt.Sprint(i)))
			_, _ = c.Write(cf(ws.OpBinary, true, "\xc0\x00"))
		}
	}()
	counts := map[byte]int{}
	pongs := 0
	for counts['a']+counts['b']+counts['c']+counts['d']+counts['e']+counts['f']+counts['g']+counts['h'] < writers*perWriter || pongs < 20 {
		h, err := ws.ReadHeader(br)
		if err != nil {
			t.Fatalf("read frame: %v (pongs %d, counts %v)", err, pongs, counts)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatal(err)
		}
		switch h.OpCode {
		case ws.OpPong:
			pongs++
		case ws.OpBinary:
			if len(p) != size || bytes.Count(p, p[:1]) != size {
				t.Fatalf("torn frame: %d bytes, %q...", len(p), p[:min(10, len(p))])
			}
			counts[p[0]]++
		default:
			t.Fatalf("unexpected frame %+v", h)
		}
	}
	if _, err := c.Write(cf(ws.OpClose, true, closeBody(1000, ""))); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestWSReadDeadline: a deadline between or inside frames leaves the stream
// intact.
func TestWSReadDeadline(t *testing.T) {
	done := make(chan string, 1)
	proceed := make(chan struct{})
	addr := startWS(t, WSOptions{}, func(c net.Conn, r *http.Request) {
		defer c.Close()
		var got []byte
		buf := make([]byte, 16)
		timeouts := 0
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		for len(got) < 6 {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				if !isTimeout(err) {
					done <- "error: " + err.Error()
					return
				}
				timeouts++
				if timeouts == 1 {
					close(proceed)
				}
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			}
		}
		done <- string(got)
	})
	_, c, _ := rawHandshake(t, addr, "Sec-WebSocket-Protocol: mqtt\r\n", nil)
	f := cf(ws.OpBinary, true, "abcdef")
	if _, err := c.Write(f[:8]); err != nil { // header and 2 payload bytes
		t.Fatal(err)
	}
	<-proceed
	if _, err := c.Write(f[8:]); err != nil {
		t.Fatal(err)
	}
	if s := <-done; s != "abcdef" {
		t.Fatalf("server got %q", s)
	}
}

func TestWSTrustedProxies(t *testing.T) {
	got := make(chan string, 1)
	opts := WSOptions{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	addr := startWS(t, opts, func(c net.Conn, r *http.Request) {
		got <- c.RemoteAddr().String()
		c.Close()
	})
	resp, _, _ := rawHandshake(t, addr, "Sec-WebSocket-Protocol: mqtt\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.9\r\n", nil)
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if s := <-got; s != "203.0.113.9:0" {
		t.Fatalf("RemoteAddr %s, want 203.0.113.9:0", s)
	}
	resp, _, _ = rawHandshake(t, addr, "Sec-WebSocket-Protocol: mqtt\r\nX-Forwarded-For: 203.0.113.9\r\nForwarded: for=6.6.6.6\r\n", nil)
	if resp.StatusCode != 400 {
		t.Fatalf("conflicting headers: status %d, want 400", resp.StatusCode)
	}
	resp, _, _ = rawHandshake(t, addr, "Sec-WebSocket-Protocol: mqtt\r\n", nil)
	if s := <-got; resp.StatusCode != 101 || !strings.HasPrefix(s, "127.0.0.1:") || s == "127.0.0.1:0" {
		t.Fatalf("no header: status %d, RemoteAddr %s", resp.StatusCode, s)
	}
}

func TestWithRemoteAddr(t *testing.T) {
	a := &net.TCPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 1}
	fc := newFakeConn(nil)
	if c := WithRemoteAddr(fc, a); c.RemoteAddr() != a || c.(*addrConn).Unwrap() != fc {
		t.Errorf("wrapped conn: RemoteAddr %v", c.RemoteAddr())
	}
	wc := newWSConn(newFakeConn(nil), nil, false, "")
	if c := WithRemoteAddr(wc, a); c != net.Conn(wc) || wc.RemoteAddr() != a {
		t.Errorf("WSConn: RemoteAddr %v", c.RemoteAddr())
	}
}

// Same-origin over TLS: the certificate's names (wildcards included) and
// addresses, at the listener's port, with https only.
func TestSameOriginTLS(t *testing.T) {
	cert := &x509.Certificate{DNSNames: []string{"broker.example.com", "*.devices.example.com"}, IPAddresses: []net.IP{net.ParseIP("192.0.2.7")}}
	h := NewWSHandler(WSOptions{ServerCert: func() *x509.Certificate { return cert }}, nil).(*wsHandler)
	local := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 8884}
	for _, tt := range []struct {
		origin string
		tls    bool
		want   bool
	}{
		{"https://broker.example.com:8884", true, true},
		{"https://a.devices.example.com:8884", true, true},
		{"https://192.0.2.7:8884", true, true},  // the address the certificate names (a NAT's)
		{"http://192.0.2.7:8884", false, false}, // without TLS, only the local address
		{"https://10.1.2.3:8884", true, true},
		{"https://broker.example.com", true, false}, // port 443, not the listener's
		{"https://evil.example:8884", true, false},
		{"http://broker.example.com:8884", true, false},
		{"https://broker.example.com:8884", false, false}, // no TLS: the certificate proves nothing
		{"http://10.1.2.3:8884", false, true},
	} {
		r := httptest.NewRequest("GET", "/mqtt", nil)
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(local)))
		r.Host = "evil.example:8884"
		if tt.tls {
			r.TLS = &tls.ConnectionState{}
		}
		if got := h.sameOrigin(r, tt.origin); got != tt.want {
			t.Errorf("sameOrigin(%q, tls %v) = %v, want %v", tt.origin, tt.tls, got, tt.want)
		}
	}
}

func TestMatchOrigin(t *testing.T) {
	tests := []struct {
		pattern, origin string
		want            bool
	}{
		{"https://*.example.com", "https://a.example.com", true},
		{"https://*.example.com", "https://a.b.example.com", true},
		{"https://*.example.com", "https://example.com", false},
		{"https://*.example.com", "https://a.example.com.evil", false},
		{"https://*.example.com", "https://a.example.com:1", false},
		{"*", "https://x", true},
		{"*", "", true},
		{"https://*", "https://x/y", false},
		{"https://a*b*c", "https://abxbc", true},
		{"https://a*b*c", "https://abxbd", false},
		{"https://a.com", "https://a.com", true},
		{"", "https://a.com", false},
	}
	for _, tt := range tests {
		if got := matchOrigin(tt.pattern, tt.origin); got != tt.want {
			t.Errorf("matchOrigin(%q, %q) = %v, want %v", tt.pattern, tt.origin, got, tt.want)
		}
	}
}

// TestWSAcceptPanic: a panicking accept does not leak the hijacked conn.
func TestWSAcceptPanic(t *testing.T) {
	srv := httptest.NewUnstartedServer(NewWSHandler(WSOptions{}, func(c net.Conn, r *http.Request) {
		panic("boom")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	resp, c, _ := rawHandshake(t, addr, "Sec-WebSocket-Protocol: mqtt\r\n", nil)
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after panic: %d, %v; want EOF", n, err)
	}
}
