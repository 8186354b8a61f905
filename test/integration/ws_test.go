package integration

import (
	"context"
	"net"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/testutil"
	"github.com/starling-mqtt/starling/internal/transport"
)

// MQTT over WebSocket reaches the same broker as TCP: a WebSocket subscriber
// gets what a TCP publisher sends, including a message far above 64 KiB.
func TestWebSocketAndTCPShareTheBroker(t *testing.T) {
	t.Parallel()
	srv, addr := testutil.StartBroker(t, func(c *testutilConfig) { c.Limits.MaxPacketSize = 4 << 20 })
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	wsc, err := transport.DialWS(ctx, "ws://"+srv.HTTPAddr().String()+"/mqtt", "mqtt", nil)
	if err != nil {
		t.Fatalf("dial ws: %v", err)
	}
	sub := wsV5Client(t, wsc, "ws-sub")
	sub.sub(t, paho.SubscribeOptions{Topic: "ws/#", QoS: 1})
	pub, _ := dialV5(t, addr, "tcp-pub", nil)
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i)
	}
	for _, payload := range [][]byte{[]byte("small"), big} {
		pub.pub(t, &paho.Publish{Topic: "ws/x", QoS: 1, Payload: payload})
		m := sub.expect(t)
		if m.Topic != "ws/x" || string(m.Payload) != string(payload) {
			t.Fatalf("got %q with %d bytes, want %d", m.Topic, len(m.Payload), len(payload))
		}
	}
}

type testutilConfig = starling.Config

// wsV5Client runs a paho.golang client over an established WebSocket.
func wsV5Client(t *testing.T, nc net.Conn, id string) *v5Client {
	t.Helper()
	c := &v5Client{recv: make(chan *paho.Publish, 100), disc: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.recv <- pr.Packet
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	// KeepAlive 0: paho.golang (v0.23) writes a packet as several Writes
	// (net.Buffers, one writev only on a *net.TCPConn) and its pinger sends
	// a PINGREQ right after CONNACK from another goroutine, so over a TLS or
	// WebSocket conn the PINGREQ can land inside the next packet (seen as a
	// SUBSCRIBE whose topic filter length is 0xC000). Without keep alive
	// there is no pinger.
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 0}); err != nil {
		t.Fatalf("connect over ws: %v", err)
	}
	t.Cleanup(func() {
		c.Disconnect(&paho.Disconnect{})
		nc.Close()
		<-c.Done()
	})
	return c
}
