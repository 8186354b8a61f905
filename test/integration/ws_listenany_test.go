package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
	"github.com/starling-mqtt/starling/internal/transport"
)

// listen_any serves everything on one port, told by the first byte: MQTT
// over TCP (paho.golang), MQTT over WebSocket (paho.mqtt.golang's ws://
// dialer), the HTTP API, and TLS with MQTT or WebSocket inside.
func TestWSListenAny(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	srv := startTLSBroker(t, pki, func(c *starling.Config) {
		c.TCP, c.HTTP, c.MQTTS, c.HTTPS = "", "", "", ""
		c.ListenAny = "127.0.0.1:0"
	})
	addr := srv.ListenAnyAddr().String()

	nc, err := net.DialTimeout("tcp", addr, testutil.Patience(t))
	if err != nil {
		t.Fatal(err)
	}
	sub := wsV5Client(t, nc, "any-tcp")
	sub.sub(t, paho.SubscribeOptions{Topic: "any/#", QoS: 1})

	// paho.mqtt.golang over ws:// on the same port.
	o := mqtt.NewClientOptions().AddBroker("ws://" + addr + "/mqtt").SetClientID("any-ws").SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(testutil.Patience(t)).
		SetWriteTimeout(testutil.Patience(t)).SetStore(mqtt.NewMemoryStore())
	wsc := mqtt.NewClient(o)
	if tok := wsc.Connect(); !tok.WaitTimeout(testutil.Patience(t)) || tok.Error() != nil {
		t.Fatalf("connect over ws: %v", tok.Error())
	}
	defer wsc.Disconnect(100)
	if tok := wsc.Publish("any/ws", 1, false, "over ws"); !tok.WaitTimeout(testutil.Patience(t)) || tok.Error() != nil {
		t.Fatalf("publish over ws: %v", tok.Error())
	}
	if m := sub.expect(t); m.Topic != "any/ws" || string(m.Payload) != "over ws" {
		t.Fatalf("got %s %q", m.Topic, m.Payload)
	}

	// Plain HTTP on the same port: the API.
	hc := &http.Client{Timeout: testutil.Patience(t)}
	resp, err := hc.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %s %q", resp.Status, body)
	}

	// TLS, then MQTT inside.
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	td := tls.Dialer{Config: pki.ClientConfig()}
	tc, err := td.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("TLS: %v", err)
	}
	overTLS := wsV5Client(t, tc, "any-mqtts")
	overTLS.pub(t, &paho.Publish{Topic: "any/mqtts", QoS: 1, Payload: []byte("over tls")})
	if m := sub.expect(t); m.Topic != "any/mqtts" {
		t.Fatalf("got %s", m.Topic)
	}

	// TLS, then WebSocket inside.
	wss, err := transport.DialWSConfig(ctx, "wss://"+addr+"/mqtt", transport.WSDialConfig{Subprotocol: "mqtt", TLSConfig: pki.ClientConfig()})
	if err != nil {
		t.Fatalf("wss: %v", err)
	}
	overWSS := wsV5Client(t, wss, "any-wss")
	overWSS.pub(t, &paho.Publish{Topic: "any/wss", QoS: 1, Payload: []byte("over wss")})
	if m := sub.expect(t); m.Topic != "any/wss" {
		t.Fatalf("got %s", m.Topic)
	}
}

// Inside TLS, listen_any follows ALPN when the client offers it: "mqtt"
// goes to the broker even if what follows looks like HTTP, "http/1.1" to
// the HTTP server even if it looks like MQTT. Without ALPN the first byte
// decides (TestWSListenAny).
func TestWSListenAnyALPN(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	srv := startTLSBroker(t, pki, func(c *starling.Config) {
		c.TCP, c.HTTP, c.MQTTS, c.HTTPS = "", "", "", ""
		c.ListenAny = "127.0.0.1:0"
	})
	addr := srv.ListenAnyAddr().String()
	dial := func(proto string) *tls.Conn {
		t.Helper()
		cfg := pki.ClientConfig()
		cfg.NextProtos = []string{proto}
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer cancel()
		c, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("TLS with ALPN %s: %v", proto, err)
		}
		tc := c.(*tls.Conn)
		if got := tc.ConnectionState().NegotiatedProtocol; got != proto {
			t.Fatalf("ALPN negotiated %q, want %q", got, proto)
		}
		return tc
	}

	// "mqtt": an MQTT client is served...
	c := wsV5Client(t, dial("mqtt"), "alpn-mqtt")
	c.sub(t, paho.SubscribeOptions{Topic: "alpn", QoS: 1})
	// ...and an HTTP request is taken for malformed MQTT: closed, no answer.
	hc := dial("mqtt")
	hc.SetDeadline(time.Now().Add(testutil.Patience(t)))
	io.WriteString(hc, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if b, err := io.ReadAll(hc); len(b) != 0 || isTimeout(err) {
		t.Fatalf("HTTP request with ALPN mqtt: got %q, %v; want the connection closed", b, err)
	}

	// "http/1.1": HTTP is served...
	tr := &http.Transport{TLSClientConfig: pki.ClientConfig()}
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: testutil.Patience(t)}).Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil || resp.TLS.NegotiatedProtocol != "http/1.1" {
		t.Fatalf("GET /healthz with ALPN http/1.1: %s", resp.Status)
	}
	// ...and an MQTT CONNECT gets an HTTP error, not a CONNACK.
	mc := dial("http/1.1")
	mc.SetDeadline(time.Now().Add(testutil.Patience(t)))
	connect, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "x"}, packet.V5)
	// The line end makes HTTP answer at once; MQTT would answer the CONNECT
	// before looking at it.
	mc.Write(append(connect, "\r\n\r\n"...))
	b, _ := io.ReadAll(mc)
	if !strings.HasPrefix(string(b), "HTTP/1.1 400") {
		t.Fatalf("MQTT CONNECT with ALPN http/1.1: got %q, want an HTTP 400", b)
	}

	// wss with ALPN http/1.1 (what browsers offer) reaches MQTT over
	// WebSocket.
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	wcfg := pki.ClientConfig()
	wcfg.NextProtos = []string{"http/1.1"}
	wss, err := transport.DialWSConfig(ctx, "wss://"+addr+"/mqtt", transport.WSDialConfig{Subprotocol: "mqtt", TLSConfig: wcfg})
	if err != nil {
		t.Fatalf("wss: %v", err)
	}
	p := wsV5Client(t, wss, "alpn-wss")
	p.pub(t, &paho.Publish{Topic: "alpn", QoS: 1, Payload: []byte("via wss")})
	if m := c.expect(t); string(m.Payload) != "via wss" {
		t.Fatalf("got %q", m.Payload)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A client that reaches the broker through listen_any by TLS with ALPN
// "mqtt" belongs to listener listen_any like any other there: with
// anonymous clients allowed on listen_any only, it gets in (the tcp
// listener refuses it), and it is counted under listen_any.
func TestWSListenAnyALPNListenerName(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	srv := startTLSBroker(t, pki, func(c *starling.Config) {
		c.HTTP, c.MQTTS, c.HTTPS = "", "", ""
		c.ListenAny = "127.0.0.1:0"
		c.Auth.AllowAnonymous = false
		c.Auth.AnonymousListeners = []string{"listen_any"}
	})
	addr := srv.ListenAnyAddr().String()

	// The tcp listener is not listen_any: anonymous is refused there.
	if _, ack := v5RawConnect(t, srv.Addr().String(), &packet.Connect{ClientID: "anon-tcp", CleanStart: true}); ack.ReasonCode != packet.NotAuthorized {
		t.Fatalf("anonymous on tcp: CONNACK 0x%02x, want 0x87", byte(ack.ReasonCode))
	}

	cfg := pki.ClientConfig()
	cfg.NextProtos = []string{"mqtt"}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	nc, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("TLS with ALPN mqtt: %v", err)
	}
	if got := nc.(*tls.Conn).ConnectionState().NegotiatedProtocol; got != "mqtt" {
		t.Fatalf("ALPN negotiated %q, want mqtt", got)
	}
	c := wsV5Client(t, nc, "alpn-anon") // fails the test unless CONNACK 0
	c.sub(t, paho.SubscribeOptions{Topic: "alpn/anon", QoS: 1})

	// Counted under listen_any: the HTTP scrape itself is not an MQTT
	// connection, so exactly the one client.
	hc := &http.Client{Timeout: testutil.Patience(t), Transport: &http.Transport{TLSClientConfig: pki.ClientConfig()}}
	resp, err := hc.Get("https://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `mqtt_listener_connections{listener="listen_any"} 1`
	if !strings.Contains(string(body), want+"\n") {
		t.Fatalf("/metrics has no %q", want)
	}
}
