package integration

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
	"github.com/starling-mqtt/starling/internal/transport"
)

// dialWS opens a WebSocket to srv's http listener, with extra handshake
// headers.
func dialWS(t *testing.T, srv *starling.Server, hdr http.Header) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	c, err := transport.DialWS(ctx, "ws://"+srv.HTTPAddr().String()+"/mqtt", "mqtt", hdr)
	if err != nil {
		t.Fatalf("dial ws: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// labelledMetric reads a labelled metric from the broker's /metrics: its
// value by the label's value.
func labelledMetric(t *testing.T, srv *starling.Server, name string) map[string]float64 {
	t.Helper()
	resp, err := (&http.Client{Timeout: testutil.Patience(t)}).Get("http://" + srv.HTTPAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), name+"{")
		if !ok {
			continue
		}
		labels, val, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		_, lv, _ := strings.Cut(labels, "=")
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[strings.Trim(lv, `"`)] = f
	}
	return out
}

// metric reads one unlabelled counter or gauge from srv's /metrics.
func metric(t *testing.T, srv *starling.Server, name string) float64 {
	t.Helper()
	resp, err := (&http.Client{Timeout: testutil.Patience(t)}).Get("http://" + srv.HTTPAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// limits.max_connections_per_address counts WebSocket clients (by the
// address a trusted proxy forwarded) and TCP clients (by the PROXY header)
// from the same address together, and frees a place when one leaves.
func TestWSPerAddressLimit(t *testing.T) {
	t.Parallel()
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.TrustedProxies = []string{"127.0.0.1"}
		c.ProxyProtocolListeners.TCP = []string{"127.0.0.1"}
		c.Limits.MaxConnectionsPerAddress = 2
		c.Limits.ConnectRatePerAddress = 0
	})
	from := http.Header{"X-Forwarded-For": {"198.51.100.7"}}
	ws1 := testutil.NewRaw(t, dialWS(t, srv, from), packet.V5)
	ws1.Connect("pa-ws1", true)
	tcp1 := testutil.NewRaw(t, dialProxied(t, addr, "198.51.100.7:5000"), packet.V5)
	tcp1.Connect("pa-tcp1", true)

	// Both listeners are full for that address...
	expectDropped(t, dialWS(t, srv, from))
	expectDropped(t, dialProxied(t, addr, "198.51.100.7:5001"))
	// ...not for another one.
	testutil.NewRaw(t, dialWS(t, srv, http.Header{"X-Forwarded-For": {"198.51.100.8"}}), packet.V5).Connect("pa-other", true)
	if n := metric(t, srv, "mqtt_clients_refused_total"); n < 2 {
		t.Fatalf("mqtt_clients_refused_total = %v, want 2 or more", n)
	}

	// A WebSocket client leaves: its place is free again.
	ws1.Send(&packet.Disconnect{})
	ws1.Close()
	deadline := time.Now().Add(testutil.Patience(t))
	for {
		nc := dialWS(t, srv, from)
		r := testutil.NewRaw(t, nc, packet.V5)
		r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "pa-ws3", KeepAlive: 30})
		if p, err := r.Next(testutil.Patience(t)); err == nil {
			if ack, ok := p.(*packet.Connack); ok && ack.ReasonCode == packet.Success {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no place for a new WebSocket client after one left")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wsV5Try connects a paho.golang client over WebSocket, returns the
// CONNACK and closes the connection again.
func wsV5Try(t *testing.T, srv *starling.Server, id string) *paho.Connack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	nc, err := transport.DialWS(ctx, "ws://"+srv.HTTPAddr().String()+"/mqtt", "mqtt", nil)
	if err != nil {
		t.Fatalf("dial ws: %v", err)
	}
	defer nc.Close()
	c := paho.NewClient(paho.ClientConfig{Conn: nc})
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true})
	if ack == nil {
		t.Fatalf("connect %s over ws: no CONNACK: %v", id, err)
	}
	if err == nil {
		c.Disconnect(&paho.Disconnect{})
	}
	<-c.Done()
	return ack
}

// limits.max_connections counts WebSocket clients as it counts TCP ones:
// with a limit of 2, two paho.golang clients over WebSocket are served and
// exchange messages, a third gets CONNACK 0x97, a TCP client CONNACK 0x97
// too, a 3.1.1 client over ws:// (paho.mqtt.golang) CONNACK 3; when a
// WebSocket client leaves, its place can be taken over WebSocket again.
func TestWSMaxConnections(t *testing.T) {
	t.Parallel()
	srv, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.MaxConnections = 2 })
	a := wsV5Client(t, dialWS(t, srv, nil), "mcws-a")
	a.sub(t, paho.SubscribeOptions{Topic: "mcws", QoS: 1})
	bConn := dialWS(t, srv, nil)
	b := wsV5Client(t, bConn, "mcws-b")

	if ack := wsV5Try(t, srv, "mcws-c"); ack.ReasonCode != byte(packet.QuotaExceeded) {
		t.Fatalf("third WebSocket client: CONNACK 0x%02x, want 0x97", ack.ReasonCode)
	}
	if _, ack := v5RawConnect(t, addr, &packet.Connect{ClientID: "mcws-tcp", CleanStart: true}); ack.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("TCP client at the limit: CONNACK 0x%02x, want 0x97", byte(ack.ReasonCode))
	}
	o := mqtt.NewClientOptions().AddBroker("ws://" + srv.HTTPAddr().String() + "/mqtt").SetClientID("mcws-v3").
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(testutil.Patience(t))
	v3 := mqtt.NewClient(o)
	if tok := v3.Connect(); !tok.WaitTimeout(testutil.Patience(t)) || tok.Error() != packets.ErrorRefusedServerUnavailable {
		v3.Disconnect(0)
		t.Fatalf("3.1.1 over ws at the limit: %v, want %v", tok.Error(), packets.ErrorRefusedServerUnavailable)
	}

	// The two inside are unaffected.
	b.pub(t, &paho.Publish{Topic: "mcws", QoS: 1, Payload: []byte("still here")})
	if m := a.expect(t); string(m.Payload) != "still here" {
		t.Fatalf("got %q", m.Payload)
	}

	// b leaves: a new WebSocket client gets its place.
	b.Disconnect(&paho.Disconnect{})
	bConn.Close()
	deadline := time.Now().Add(testutil.Patience(t))
	for {
		ack := wsV5Try(t, srv, "mcws-d")
		if ack.ReasonCode == byte(packet.Success) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed: CONNACK 0x%02x", ack.ReasonCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// limits.publish_rate slows a WebSocket publisher exactly as a TCP one
// (TestClientLimits): 60 QoS 1 publishes at 20/s are all acknowledged, the
// last after about 2 s.
func TestWSPublishRate(t *testing.T) {
	t.Parallel()
	srv, _ := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.PublishRate = 20 })
	r := testutil.NewRaw(t, dialWS(t, srv, nil), packet.V5)
	r.Connect("rate-ws", true)
	var batch []packet.Packet
	for i := 1; i <= 60; i++ {
		batch = append(batch, &packet.Publish{Topic: "t", QoS: 1, PacketID: uint16(i), Payload: []byte("x")})
	}
	start := time.Now()
	r.Send(batch...)
	for i := 1; i <= 60; i++ {
		if a, ok := r.Read().(*packet.Ack); !ok || a.PacketID != uint16(i) || a.ReasonCode >= 0x80 {
			t.Fatalf("publish %d: %+v", i, a)
		}
	}
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Fatalf("60 publishes at 20/s over WebSocket acknowledged in %v: not slowed down", took)
	}
}

// A silent WebSocket client is cut off after 1.5 x keep alive with
// DISCONNECT 0x8D, and its will is published, as over TCP
// (TestV5KeepAliveTimeout); WebSocket pings do not count as MQTT activity.
func TestWSKeepAliveTimeout(t *testing.T) {
	t.Parallel()
	srv, addr := testutil.StartBroker(t, nil)
	sub, _ := dialV5(t, addr, "wska-sub", nil)
	sub.sub(t, paho.SubscribeOptions{Topic: "wska/will", QoS: 1})

	r := testutil.NewRaw(t, dialWS(t, srv, nil), packet.V5)
	start := time.Now()
	r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: "wska", CleanStart: true, KeepAlive: 1,
		Will: &packet.Will{Topic: "wska/will", Payload: []byte("timed out"), QoS: 1}})
	if ack, ok := r.Read().(*packet.Connack); !ok || ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK %+v", ack)
	}
	r.ExpectClosed(packet.KeepAliveTimeout)
	if el := time.Since(start); el < time.Second {
		t.Fatalf("cut off after %v, before the keep alive", el)
	}
	if m := sub.expect(t); m.Topic != "wska/will" || string(m.Payload) != "timed out" {
		t.Fatalf("will: got %q %q", m.Topic, m.Payload)
	}
}
