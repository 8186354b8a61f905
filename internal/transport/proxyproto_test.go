package transport

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// hexBytes decodes "0d 0a ..." style hex.
func hexBytes(s string) string {
	var b []byte
	for _, f := range strings.Fields(s) {
		var v byte
		for _, c := range []byte(f) {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= c - '0'
			case c >= 'a' && c <= 'f':
				v |= c - 'a' + 10
			default:
				panic("bad hex " + f)
			}
		}
		b = append(b, v)
	}
	return string(b)
}

const v2SigHex = "0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a"

// Golden headers written from the spec (proxy-protocol.txt, sections 2.1
// and 2.2).
var proxyHeaderTests = []struct {
	name     string
	in       string
	src, dst string // "" for nil
	err      error
	rest     string // what must remain in the reader
}{
	{name: "v1 tcp4", in: "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /", src: "192.168.0.1:56324", dst: "192.168.0.11:443", rest: "GET /"},
	{name: "v1 tcp6", in: "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n\x10", src: "[2001:db8::1]:1", dst: "[2001:db8::2]:65535", rest: "\x10"},
	{name: "v1 tcp6 max length", in: "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n", src: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", dst: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
	{name: "v1 unknown", in: "PROXY UNKNOWN\r\nx", rest: "x"},
	{name: "v1 unknown 107 bytes", in: "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\nx", rest: "x"},
	{name: "v1 108 bytes", in: "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 655350\r\n", err: ErrProxyHeader},
	{name: "v1 no CRLF", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", err: ErrProxyHeader},
	{name: "v1 family mismatch", in: "PROXY TCP4 ::1 ::1 1 2\r\n", err: ErrProxyHeader},
	{name: "v1 tcp6 with ipv4", in: "PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n", err: ErrProxyHeader},
	{name: "v1 leading zero port", in: "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", err: ErrProxyHeader},
	{name: "v1 port too big", in: "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", err: ErrProxyHeader},
	{name: "v1 leading zero address", in: "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", err: ErrProxyHeader},
	{name: "v1 double space", in: "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", err: ErrProxyHeader},
	{name: "v1 missing field", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", err: ErrProxyHeader},
	{name: "v1 bad protocol", in: "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", err: ErrProxyHeader},
	{name: "v1 truncated", in: "PROXY TCP4 1.2.3.4", err: io.ErrUnexpectedEOF},
	{name: "not a header", in: "\x10\x0c\x00\x04MQTT", err: ErrNoProxyHeader},
	{name: "P but not PROXY", in: "POST / HTTP/1.1\r\n", err: ErrNoProxyHeader},
	{name: "empty", in: "", err: ErrNoProxyHeader},
	{
		name: "v2 tcp4",
		in:   hexBytes(v2SigHex+" 21 11 00 0c  c0 a8 00 01  c0 a8 00 0b  db 04  01 bb") + "\x10",
		src:  "192.168.0.1:56068", dst: "192.168.0.11:443", rest: "\x10",
	},
	{
		name: "v2 tcp4 with TLVs",
		in:   hexBytes(v2SigHex+" 21 11 00 13  0a 00 00 01  0a 00 00 02  00 50  07 5b  01 00 04 6d 71 74 74") + "rest",
		src:  "10.0.0.1:80", dst: "10.0.0.2:1883", rest: "rest",
	},
	{
		name: "v2 tcp6",
		in: hexBytes(v2SigHex+" 21 21 00 24  20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01"+
			" 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 02  30 39  22 b3") + "x",
		src: "[2001:db8::1]:12345", dst: "[2001:db8::2]:8883", rest: "x",
	},
	{
		name: "v2 tcp6 v4-mapped",
		in: hexBytes(v2SigHex + " 21 21 00 24  00 00 00 00 00 00 00 00 00 00 ff ff 01 02 03 04" +
			" 00 00 00 00 00 00 00 00 00 00 ff ff 05 06 07 08  00 01  00 02"),
		src: "1.2.3.4:1", dst: "5.6.7.8:2",
	},
	{name: "v2 local", in: hexBytes(v2SigHex+" 20 00 00 00") + "x", rest: "x"},
	{name: "v2 local with addresses", in: hexBytes(v2SigHex+" 20 11 00 0c  01 01 01 01 02 02 02 02 00 01 00 02") + "x", rest: "x"},
	{name: "v2 unspec", in: hexBytes(v2SigHex+" 21 00 00 02 aa bb") + "x", rest: "x"},
	{name: "v2 udp4", in: hexBytes(v2SigHex+" 21 12 00 0c  01 01 01 01 02 02 02 02 00 01 00 02") + "x", rest: "x"},
	{name: "v2 unix", in: hexBytes(v2SigHex+" 21 31 00 d8") + strings.Repeat("\x00", 216) + "x", rest: "x"},
	{name: "v2 bad version", in: hexBytes(v2SigHex + " 11 11 00 0c  01 01 01 01 02 02 02 02 00 01 00 02"), err: ErrProxyHeader},
	{name: "v2 bad command", in: hexBytes(v2SigHex + " 22 11 00 0c  01 01 01 01 02 02 02 02 00 01 00 02"), err: ErrProxyHeader},
	{name: "v2 bad family", in: hexBytes(v2SigHex + " 21 41 00 00"), err: ErrProxyHeader},
	{name: "v2 bad transport", in: hexBytes(v2SigHex + " 21 13 00 0c  01 01 01 01 02 02 02 02 00 01 00 02"), err: ErrProxyHeader},
	{name: "v2 length too short", in: hexBytes(v2SigHex + " 21 11 00 04  01 01 01 01"), err: ErrProxyHeader},
	{name: "v2 truncated addresses", in: hexBytes(v2SigHex + " 21 11 00 0c  01 01 01"), err: io.ErrUnexpectedEOF},
	{name: "v2 truncated TLVs", in: hexBytes(v2SigHex + " 21 11 ff ff  01 01 01 01 02 02 02 02 00 01 00 02 00"), err: io.ErrUnexpectedEOF},
	{name: "v2 truncated header", in: hexBytes(v2SigHex + " 21"), err: io.ErrUnexpectedEOF},
	{name: "v2 bad signature", in: hexBytes("0d 0a 0d 0a 00 0d 0a 51 55 49 54 0b 21 11 00 00"), err: ErrNoProxyHeader},
}

func TestReadProxyHeader(t *testing.T) {
	for _, tt := range proxyHeaderTests {
		t.Run(tt.name, func(t *testing.T) {
			r := bufio.NewReader(strings.NewReader(tt.in))
			src, dst, err := ReadProxyHeader(r)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if s := addrString(src); s != tt.src {
				t.Errorf("src = %s, want %s", s, tt.src)
			}
			if s := addrString(dst); s != tt.dst {
				t.Errorf("dst = %s, want %s", s, tt.dst)
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != tt.rest {
				t.Errorf("rest = %q, want %q", rest, tt.rest)
			}
		})
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// proxyTest is a ProxyListener on 127.0.0.1 whose conns are handled by serve.
type proxyTest struct {
	l      *ProxyListener
	wg     sync.WaitGroup
	mu     sync.Mutex
	errors []error
}

func startProxy(t *testing.T, trusted string, timeout time.Duration, serve func(net.Conn)) *proxyTest {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pt := &proxyTest{}
	pt.l = &ProxyListener{Listener: ln, HeaderTimeout: timeout}
	if trusted != "" {
		pt.l.Trusted = []netip.Prefix{netip.MustParsePrefix(trusted)}
	}
	pt.l.OnError = func(remote net.Addr, err error) {
		pt.mu.Lock()
		pt.errors = append(pt.errors, err)
		pt.mu.Unlock()
	}
	pt.wg.Add(1)
	go func() {
		defer pt.wg.Done()
		for {
			c, err := pt.l.Accept()
			if err != nil {
				return
			}
			pt.wg.Add(1)
			go func() {
				defer pt.wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		pt.l.Close()
		pt.wg.Wait()
	})
	return pt
}

func (pt *proxyTest) hookErrors() []error {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return append([]error(nil), pt.errors...)
}

func dialSend(t *testing.T, addr, data string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if data != "" {
		if _, err := c.Write([]byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

type readResult struct {
	remote string
	data   string
	err    error
}

// echoResult reads 5 bytes and reports them with the RemoteAddr.
func echoResult(out chan<- readResult) func(net.Conn) {
	return func(c net.Conn) {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 5)
		_, err := io.ReadFull(c, buf)
		out <- readResult{remote: c.RemoteAddr().String(), data: string(buf), err: err}
	}
}

func TestProxyListener(t *testing.T) {
	tests := []struct {
		name    string
		trusted string
		send    string
		remote  string // "" = the real peer
		data    string
		err     error
	}{
		{name: "trusted v1", trusted: "127.0.0.0/8", send: "PROXY TCP4 203.0.113.7 10.0.0.1 4242 1883\r\nhello", remote: "203.0.113.7:4242", data: "hello"},
		{name: "trusted v2", trusted: "127.0.0.1/32", send: hexBytes(v2SigHex+" 21 11 00 0c  cb 00 71 07  0a 00 00 01  10 92  07 5b") + "hello", remote: "203.0.113.7:4242", data: "hello"},
		{name: "trusted local", trusted: "127.0.0.0/8", send: hexBytes(v2SigHex+" 20 00 00 00") + "hello", data: "hello"},
		{name: "trusted without header", trusted: "127.0.0.0/8", send: "\x10\x0c\x00\x04MQTT", err: ErrNoProxyHeader},
		{name: "trusted with bad header", trusted: "127.0.0.0/8", send: "PROXY TCP4 1.2.3.4\r\n", err: ErrProxyHeader},
		{name: "untrusted v1 rejected", trusted: "10.0.0.0/8", send: "PROXY TCP4 203.0.113.7 10.0.0.1 4242 1883\r\nhello", err: ErrUntrustedProxyHeader},
		{name: "untrusted v2 rejected", trusted: "", send: hexBytes(v2SigHex+" 21 11 00 0c  cb 00 71 07  0a 00 00 01  10 92  07 5b") + "hello", err: ErrUntrustedProxyHeader},
		{name: "untrusted plain passes", trusted: "10.0.0.0/8", send: "POST /x", data: "POST "},
		{name: "untrusted mqtt passes", trusted: "", send: "\x10\x0c\x00\x04MQTT", data: "\x10\x0c\x00\x04M"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := make(chan readResult, 1)
			pt := startProxy(t, tt.trusted, 5*time.Second, echoResult(out))
			c := dialSend(t, pt.l.Addr().String(), tt.send)
			r := <-out
			if tt.err != nil {
				if !errors.Is(r.err, tt.err) {
					t.Fatalf("err = %v, want %v", r.err, tt.err)
				}
				if errs := pt.hookErrors(); len(errs) != 1 || !errors.Is(errs[0], tt.err) {
					t.Errorf("OnError got %v", errs)
				}
				// The conn was closed by the listener.
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err == nil {
					t.Errorf("rejected conn still open")
				}
				return
			}
			if r.err != nil || r.data != tt.data {
				t.Fatalf("read %q, %v; want %q", r.data, r.err, tt.data)
			}
			want := tt.remote
			if want == "" {
				want = c.LocalAddr().String()
			}
			if r.remote != want {
				t.Errorf("RemoteAddr = %s, want %s", r.remote, want)
			}
			if errs := pt.hookErrors(); len(errs) != 0 {
				t.Errorf("OnError got %v", errs)
			}
		})
	}
}

// TestProxyHeaderTimeout: a silent trusted peer is dropped after
// HeaderTimeout, and does not hold up Accept for the next peer.
func TestProxyHeaderTimeout(t *testing.T) {
	out := make(chan readResult, 2)
	pt := startProxy(t, "127.0.0.0/8", time.Second, echoResult(out))
	start := time.Now()
	dialSend(t, pt.l.Addr().String(), "PROXY TCP4 1.2.") // stalls mid-header
	dialSend(t, pt.l.Addr().String(), "PROXY TCP4 203.0.113.7 10.0.0.1 4242 1883\r\nhello")
	first := <-out
	if first.err != nil || first.remote != "203.0.113.7:4242" {
		t.Fatalf("second peer: %+v", first)
	}
	if d := time.Since(start); d > 700*time.Millisecond {
		t.Errorf("second peer served after %v: blocked by the first", d)
	}
	second := <-out
	if !isTimeout(second.err) {
		t.Fatalf("stalled peer: err = %v, want a timeout", second.err)
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 5*time.Second {
		t.Errorf("stalled peer dropped after %v, want ~1s", d)
	}
	if errs := pt.hookErrors(); len(errs) != 1 {
		t.Errorf("OnError got %v", errs)
	}
}

// TestProxyUserDeadlineKept: a read deadline set before the header is read
// still applies after it, and a later one replaces the header's.
func TestProxyUserDeadlineKept(t *testing.T) {
	out := make(chan error, 1)
	pt := startProxy(t, "127.0.0.0/8", 5*time.Second, func(c net.Conn) {
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 2)
		if _, err := io.ReadFull(c, buf); err != nil {
			out <- err
			return
		}
		// No more data: the user's deadline, not the header's 5 s, ends this.
		start := time.Now()
		_, err := c.Read(buf)
		if !isTimeout(err) || time.Since(start) > 2*time.Second {
			out <- errors.New("user deadline lost: " + time.Since(start).String())
			return
		}
		out <- nil
	})
	dialSend(t, pt.l.Addr().String(), "PROXY UNKNOWN\r\nhi")
	if err := <-out; err != nil {
		t.Fatal(err)
	}
}
