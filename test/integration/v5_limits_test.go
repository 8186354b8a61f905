package integration

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// limits.max_connections: the connection above it gets CONNACK 0x97; a
// takeover does not count; a freed slot can be used again.
func TestV5MaxConnections(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.MaxConnections = 2 })
	a, _ := v5Raw(t, addr, "mc-a", true, 0)
	v5Raw(t, addr, "mc-b", true, 0)
	_, ack := v5RawConnect(t, addr, &packet.Connect{ClientID: "mc-c", CleanStart: true})
	if ack.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("third connection: CONNACK 0x%02x, want 0x97", byte(ack.ReasonCode))
	}
	// Taking over mc-b replaces a connection: allowed.
	_, ack = v5RawConnect(t, addr, &packet.Connect{ClientID: "mc-b", CleanStart: true})
	if ack.ReasonCode != packet.Success {
		t.Fatalf("takeover at the limit: CONNACK 0x%02x, want 0", byte(ack.ReasonCode))
	}
	a.Send(&packet.Disconnect{})
	v5WaitEOF(t, a)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, ack = v5RawConnect(t, addr, &packet.Connect{ClientID: "mc-d", CleanStart: true})
		if ack.ReasonCode == packet.Success {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed: CONNACK 0x%02x", byte(ack.ReasonCode))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// limits.max_qos 1: announced as Maximum QoS, subscriptions granted at most
// 1, a QoS 2 PUBLISH gets DISCONNECT 0x9B, a QoS 2 will CONNACK 0x9B.
func TestV5MaxQoS(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.MaxQoS = 1 })
	r, ack := v5Raw(t, addr, "mq", true, 0)
	if q := ack.Properties.MaximumQoS; q == nil || *q != 1 {
		t.Fatalf("CONNACK Maximum QoS %v, want 1", q)
	}
	if sa := v5RawSub(t, r, 1, 0, packet.Subscription{Filter: "mq/t", QoS: 2}); sa.ReasonCodes[0] != packet.GrantedQoS1 {
		t.Fatalf("SUBACK %x, want granted QoS 1", sa.ReasonCodes)
	}
	// Its own QoS 1 message comes back; PUBACK and PUBLISH in either order.
	r.Send(&packet.Publish{QoS: 1, PacketID: 2, Topic: "mq/t", Payload: []byte("one")})
	var acked, got bool
	for range 2 {
		switch p := r.Read().(type) {
		case *packet.Ack:
			acked = p.Kind == packet.PUBACK && p.PacketID == 2 && p.ReasonCode == packet.Success
		case *packet.Publish:
			got = p.Topic == "mq/t" && string(p.Payload) == "one" && p.QoS == 1
			r.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
		}
	}
	if !acked || !got {
		t.Fatalf("QoS 1 round trip: acked %v delivered %v", acked, got)
	}
	r.Send(&packet.Publish{QoS: 2, PacketID: 3, Topic: "mq/t", Payload: []byte("two")})
	r.ExpectClosed(packet.QoSNotSupported)

	_, ack = v5RawConnect(t, addr, &packet.Connect{ClientID: "mq-will", CleanStart: true,
		Will: &packet.Will{Topic: "mq/will", Payload: []byte("w"), QoS: 2}})
	if ack.ReasonCode != packet.QoSNotSupported {
		t.Fatalf("QoS 2 will: CONNACK 0x%02x, want 0x9B", byte(ack.ReasonCode))
	}
	// The default broker announces no Maximum QoS (2 is the default).
	_, addr2 := testutil.StartBroker(t, nil)
	_, ack = v5Raw(t, addr2, "mq2", true, 0)
	if ack.Properties.MaximumQoS != nil {
		t.Fatalf("default broker announces Maximum QoS %d", *ack.Properties.MaximumQoS)
	}
}

// srv.Close tells connected MQTT 5 clients DISCONNECT 0x8B.
func TestV5ServerShutdown(t *testing.T) {
	t.Parallel()
	srv, addr := testutil.StartBroker(t, nil)
	c, _ := dialV5(t, addr, "sd-paho", nil)
	r, _ := v5Raw(t, addr, "sd-raw", true, 0)
	done := make(chan struct{})
	go func() { srv.Close(); close(done) }()
	r.ExpectClosed(packet.ServerShuttingDown)
	select {
	case d := <-c.disc:
		if d.ReasonCode != byte(packet.ServerShuttingDown) {
			t.Fatalf("paho got DISCONNECT 0x%02x, want 0x8B", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("paho client got no DISCONNECT")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("srv.Close did not return")
	}
}

// Malformed and forbidden input ends that connection with the right reason
// code; the broker keeps serving everyone else.
func TestV5MalformedInput(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := dialV5(t, addr, "mal-sub", nil)
	sub.sub(t, paho.SubscribeOptions{Topic: "mal/#", QoS: 1})

	for _, tc := range []struct {
		name string
		send func(r *v5Conn)
		code packet.ReasonCode
	}{
		{"reserved packet type 0", func(r *v5Conn) { r.WriteRaw([]byte{0x00, 0x00}) }, packet.MalformedPacket},
		{"PUBLISH QoS 3", func(r *v5Conn) { r.WriteRaw([]byte{0x36, 0x05, 0x00, 0x01, 'a', 0x00, 0x01}) }, packet.MalformedPacket},
		{"remaining length of 5 bytes", func(r *v5Conn) { r.WriteRaw([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f}) }, packet.MalformedPacket},
		{"PUBLISH body shorter than its topic", func(r *v5Conn) { r.WriteRaw([]byte{0x30, 0x03, 0x00, 0x09, 'a'}) }, packet.MalformedPacket},
		{"second CONNECT", func(r *v5Conn) {
			r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: "again", CleanStart: true})
		}, packet.ProtocolError},
		{"PUBLISH to a + wildcard", func(r *v5Conn) {
			r.Send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "mal/+", Payload: []byte("x")})
		}, packet.TopicNameInvalid},
		{"PUBLISH to a # wildcard", func(r *v5Conn) {
			r.Send(&packet.Publish{Topic: "mal/#", Payload: []byte("x")})
		}, packet.TopicNameInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := v5Raw(t, addr, "", true, 0)
			tc.send(r)
			r.ExpectClosed(tc.code)
		})
	}
	sub.expectNone(t, 100*time.Millisecond)
	pub, _ := dialV5(t, addr, "mal-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "mal/ok", QoS: 1, Payload: []byte("still serving")})
	if m := sub.expect(t); string(m.Payload) != "still serving" {
		t.Fatalf("got %q", m.Payload)
	}
}
