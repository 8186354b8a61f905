package integration

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/starling-mqtt/starling"
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

	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sub := wsV5Client(t, nc, "any-tcp")
	sub.sub(t, paho.SubscribeOptions{Topic: "any/#", QoS: 1})

	// paho.mqtt.golang over ws:// on the same port.
	o := mqtt.NewClientOptions().AddBroker("ws://" + addr + "/mqtt").SetClientID("any-ws").SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).SetStore(mqtt.NewMemoryStore())
	wsc := mqtt.NewClient(o)
	if tok := wsc.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect over ws: %v", tok.Error())
	}
	defer wsc.Disconnect(100)
	if tok := wsc.Publish("any/ws", 1, false, "over ws"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish over ws: %v", tok.Error())
	}
	if m := sub.expect(t); m.Topic != "any/ws" || string(m.Payload) != "over ws" {
		t.Fatalf("got %s %q", m.Topic, m.Payload)
	}

	// Plain HTTP on the same port: the API.
	hc := &http.Client{Timeout: 5 * time.Second}
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
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
