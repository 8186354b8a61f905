package integration

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// handshakeStatus sends a WebSocket upgrade for /mqtt with the given Host
// and Origin over nc and returns the response status.
func handshakeStatus(t *testing.T, nc net.Conn, host, origin string) int {
	t.Helper()
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(testutil.Patience(t)))
	req := "GET /mqtt HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n" +
		"Origin: " + origin + "\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// DNS rebinding: a page of evil.example whose name now resolves to the
// broker sends a Host and an Origin that agree; the broker judges the
// Origin by its own names (websocket.public_origins, the address the
// connection arrived at, the certificate), not by Host.
func TestWSOriginRebinding(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	srv := startTLSBroker(t, pki, func(c *starling.Config) {
		c.WebSocket.PublicOrigins = []string{"https://mqtt.example.com"}
	})
	plain, secure := srv.HTTPAddr().String(), srv.HTTPSAddr().String()
	_, plainPort, _ := net.SplitHostPort(plain)
	_, securePort, _ := net.SplitHostPort(secure)
	dialPlain := func() net.Conn {
		nc, err := net.DialTimeout("tcp", plain, testutil.Patience(t))
		if err != nil {
			t.Fatal(err)
		}
		return nc
	}
	dialTLS := func() net.Conn {
		nc, err := tls.DialWithDialer(&net.Dialer{Timeout: testutil.Patience(t)}, "tcp", secure, pki.ClientConfig())
		if err != nil {
			t.Fatal(err)
		}
		return nc
	}
	for _, tt := range []struct {
		name         string
		dial         func() net.Conn
		host, origin string
		want         int
	}{
		{"rebound name", dialPlain, "evil.example:" + plainPort, "http://evil.example:" + plainPort, http.StatusForbidden},
		{"rebound name over TLS", dialTLS, "evil.example:" + securePort, "https://evil.example:" + securePort, http.StatusForbidden},
		{"page of the listener's address", dialPlain, plain, "http://" + plain, http.StatusSwitchingProtocols},
		{"localhost over loopback", dialPlain, "localhost:" + plainPort, "http://localhost:" + plainPort, http.StatusSwitchingProtocols},
		{"https origin on the plain listener", dialPlain, plain, "https://" + plain, http.StatusForbidden},
		{"http origin on the TLS listener", dialTLS, secure, "http://" + secure, http.StatusForbidden},
		{"https page of the TLS listener", dialTLS, secure, "https://" + secure, http.StatusSwitchingProtocols},
		{"a public origin behind a proxy", dialPlain, "mqtt.example.com", "https://mqtt.example.com", http.StatusSwitchingProtocols},
		{"the public origin's name on another port", dialPlain, "mqtt.example.com:8443", "https://mqtt.example.com:8443", http.StatusForbidden},
	} {
		if got := handshakeStatus(t, tt.dial(), tt.host, tt.origin); got != tt.want {
			t.Errorf("%s (Host %s, Origin %s): status %d, want %d", tt.name, tt.host, tt.origin, got, tt.want)
		}
	}
}
