package integration

import (
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/starling-mqtt/starling/internal/testutil"
)

// paho.mqtt.golang's own WebSocket dialer (a ws:// URL) against the http
// listener: a subscriber over ws gets QoS 0, 1 and 2 messages and a 300 KiB
// one (beyond the 64 KiB that breaks other brokers' WebSocket paths) from a
// publisher over ws and one over tcp, on the same broker.
func TestWSPahoV3URL(t *testing.T) {
	t.Parallel()
	srv, tcpAddr := testutil.StartBroker(t, nil)
	wsURL := "ws://" + srv.HTTPAddr().String() + "/mqtt"
	connect := func(url, id string, recv chan mqtt.Message) mqtt.Client {
		t.Helper()
		o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetProtocolVersion(4).
			SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).
			SetConnectTimeout(testutil.Patience(t)).SetWriteTimeout(testutil.Patience(t)).SetStore(mqtt.NewMemoryStore()).
			SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { recv <- m })
		c := mqtt.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(testutil.Patience(t)) || tok.Error() != nil {
			t.Fatalf("connect %s: %v", url, tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(100) })
		return c
	}
	recv := make(chan mqtt.Message, 20)
	sub := connect(wsURL, "v3-ws-sub", recv)
	if tok := sub.Subscribe("v3ws/#", 2, nil); !tok.WaitTimeout(testutil.Patience(t)) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	wsPub := connect(wsURL, "v3-ws-pub", make(chan mqtt.Message, 1))
	tcpPub := connect("tcp://"+tcpAddr, "v3-tcp-pub", make(chan mqtt.Message, 1))

	big := payloadOf(300 << 10)
	type msg struct {
		pub     mqtt.Client
		topic   string
		qos     byte
		payload []byte
	}
	var sent []msg
	for _, p := range []struct {
		name string
		c    mqtt.Client
	}{{"ws", wsPub}, {"tcp", tcpPub}} {
		for qos := byte(0); qos <= 2; qos++ {
			sent = append(sent, msg{p.c, fmt.Sprintf("v3ws/%s/q%d", p.name, qos), qos, []byte(fmt.Sprintf("%s qos %d", p.name, qos))})
		}
		sent = append(sent, msg{p.c, "v3ws/" + p.name + "/big", 1, big})
	}
	for _, m := range sent {
		if tok := m.pub.Publish(m.topic, m.qos, false, m.payload); !tok.WaitTimeout(testutil.Patience(t)) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", m.topic, tok.Error())
		}
	}
	got := map[string]mqtt.Message{}
	deadline := time.After(testutil.Patience(t))
	for len(got) < len(sent) {
		select {
		case m := <-recv:
			got[m.Topic()] = m
		case <-deadline:
			t.Fatalf("received %d of %d messages over ws within 10 s", len(got), len(sent))
		}
	}
	for _, m := range sent {
		r, ok := got[m.topic]
		if !ok {
			t.Fatalf("%s not received", m.topic)
		}
		if r.Qos() != m.qos || string(r.Payload()) != string(m.payload) {
			t.Fatalf("%s: QoS %d, %d bytes; want QoS %d, %d bytes", m.topic, r.Qos(), len(r.Payload()), m.qos, len(m.payload))
		}
	}
}
