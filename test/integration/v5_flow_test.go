package integration

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// The broker keeps at most the client's Receive Maximum QoS 1 messages
// unacknowledged, and sends the next one after a PUBACK.
func TestV5ClientReceiveMaximum(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	cp := &packet.Connect{ClientID: "rm-sub", CleanStart: true}
	cp.Properties.ReceiveMaximum = v5U16(2)
	sub, _ := v5RawConnect(t, addr, cp)
	v5RawSub(t, sub, 1, 0, packet.Subscription{Filter: "rm/t", QoS: 1})
	pub, _ := dialV5(t, addr, "rm-pub", nil)
	for i := 1; i <= 3; i++ {
		pub.pub(t, &paho.Publish{Topic: "rm/t", QoS: 1, Payload: fmt.Appendf(nil, "m%d", i)})
	}
	p1 := v5ReadPub(t, sub, "rm/t", "m1")
	v5ReadPub(t, sub, "rm/t", "m2")
	v5Silent(t, sub, v5Quiet) // m3 waits for quota
	sub.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p1.PacketID})
	v5ReadPub(t, sub, "rm/t", "m3")
}

// The broker announces limits.max_inflight as Receive Maximum, and a client
// with more unreleased QoS 2 messages gets DISCONNECT 0x93.
func TestV5ServerReceiveMaximumExceeded(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.MaxInflight = 2 })
	r, ack := v5Raw(t, addr, "rmx", true, 0)
	if rm := ack.Properties.ReceiveMaximum; rm == nil || *rm != 2 {
		t.Fatalf("CONNACK Receive Maximum %v, want 2", rm)
	}
	for id := uint16(1); id <= 2; id++ {
		r.Send(&packet.Publish{QoS: 2, PacketID: id, Topic: "rmx/t", Payload: []byte("x")})
		v5ReadAck(t, r, packet.PUBREC)
	}
	r.Send(&packet.Publish{QoS: 2, PacketID: 3, Topic: "rmx/t", Payload: []byte("x")})
	r.ExpectClosed(packet.ReceiveMaximumExceeded)
}

// A packet above the broker's Maximum Packet Size gets DISCONNECT 0x95.
func TestV5ServerMaximumPacketSize(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.MaxPacketSize = 1024 })
	r, ack := v5Raw(t, addr, "mps", true, 0)
	if m := ack.Properties.MaximumPacketSize; m == nil || *m != 1024 {
		t.Fatalf("CONNACK Maximum Packet Size %v, want 1024", m)
	}
	// Just under the limit is fine.
	small := &packet.Publish{QoS: 1, PacketID: 1, Topic: "mps/t", Payload: bytes.Repeat([]byte{'a'}, 1100)}
	n, _ := packet.Size(small, packet.V5)
	small.Payload = small.Payload[:1100-(n-1024)]
	if n, _ := packet.Size(small, packet.V5); n != 1024 {
		t.Fatalf("test bug: packet size %d", n)
	}
	r.Send(small)
	v5ReadAck(t, r, packet.PUBACK)
	r.Send(&packet.Publish{QoS: 1, PacketID: 2, Topic: "mps/t", Payload: bytes.Repeat([]byte{'b'}, len(small.Payload)+1)})
	r.ExpectClosed(packet.PacketTooLarge)
}

// The broker never sends a subscriber a packet above its Maximum Packet
// Size: the message is dropped for it, later ones still arrive.
func TestV5ClientMaximumPacketSize(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := dialV5(t, addr, "cmps-sub", &paho.Connect{CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{MaximumPacketSize: v5U32(200)}})
	sub.sub(t, paho.SubscribeOptions{Topic: "cmps/t", QoS: 1})
	pub, _ := dialV5(t, addr, "cmps-pub", nil)
	for _, q := range []byte{0, 1} {
		pub.pub(t, &paho.Publish{Topic: "cmps/t", QoS: q, Payload: bytes.Repeat([]byte{'x'}, 1000)})
		pub.pub(t, &paho.Publish{Topic: "cmps/t", QoS: q, Payload: []byte("small")})
		m := sub.expect(t)
		if string(m.Payload) != "small" {
			t.Fatalf("QoS %d: got a %d-byte payload, want only the small message", q, len(m.Payload))
		}
	}
	sub.expectNone(t, v5Quiet)
}

// A topic alias set by the client resolves to its topic on later publishes.
func TestV5TopicAliasFromClient(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := dialV5(t, addr, "tac-sub", nil)
	sub.sub(t, paho.SubscribeOptions{Topic: "alias/#", QoS: 1})
	r, ack := v5Raw(t, addr, "tac-pub", true, 0)
	if m := ack.Properties.TopicAliasMaximum; m == nil || *m != 64 {
		t.Fatalf("CONNACK Topic Alias Maximum %v, want 64 (default limit)", m)
	}
	p := &packet.Publish{QoS: 1, PacketID: 1, Topic: "alias/full", Payload: []byte("1")}
	p.Properties.TopicAlias = v5U16(1)
	r.Send(p)
	v5ReadAck(t, r, packet.PUBACK)
	p = &packet.Publish{QoS: 1, PacketID: 2, Topic: "", Payload: []byte("2")}
	p.Properties.TopicAlias = v5U16(1)
	r.Send(p)
	if a := v5ReadAck(t, r, packet.PUBACK); a.ReasonCode != packet.Success {
		t.Fatalf("PUBACK 0x%02x", byte(a.ReasonCode))
	}
	// Re-map alias 1 to another topic.
	p = &packet.Publish{QoS: 1, PacketID: 3, Topic: "alias/other", Payload: []byte("3")}
	p.Properties.TopicAlias = v5U16(1)
	r.Send(p)
	v5ReadAck(t, r, packet.PUBACK)
	p = &packet.Publish{QoS: 1, PacketID: 4, Payload: []byte("4")}
	p.Properties.TopicAlias = v5U16(1)
	r.Send(p)
	v5ReadAck(t, r, packet.PUBACK)
	for _, want := range [][2]string{{"alias/full", "1"}, {"alias/full", "2"}, {"alias/other", "3"}, {"alias/other", "4"}} {
		m := sub.expect(t)
		if m.Topic != want[0] || string(m.Payload) != want[1] {
			t.Fatalf("got %q %q, want %q %q", m.Topic, m.Payload, want[0], want[1])
		}
		if m.Properties != nil && m.Properties.TopicAlias != nil {
			t.Fatalf("the client's alias was forwarded to a subscriber that allows none")
		}
	}
}

// Invalid client topic aliases: 0 or above the maximum is 0x94, an unknown
// alias with an empty topic is 0x82.
func TestV5TopicAliasInvalid(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.MaxTopicAlias = 5 })
	for _, tc := range []struct {
		name  string
		topic string
		alias uint16
		code  packet.ReasonCode
	}{
		{"zero", "ta/x", 0, packet.TopicAliasInvalid},
		{"above maximum", "ta/x", 6, packet.TopicAliasInvalid},
		{"unknown with empty topic", "", 3, packet.ProtocolError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, _ := v5Raw(t, addr, "", true, 0)
			p := &packet.Publish{QoS: 0, Topic: tc.topic, Payload: []byte("x")}
			p.Properties.TopicAlias = v5U16(tc.alias)
			r.Send(p)
			r.ExpectClosed(tc.code)
		})
	}
}

// A subscriber announcing Topic Alias Maximum gets the topic once, then the
// alias with an empty topic.
func TestV5TopicAliasToClient(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	cp := &packet.Connect{ClientID: "tas-sub", CleanStart: true}
	cp.Properties.TopicAliasMaximum = v5U16(5)
	sub, _ := v5RawConnect(t, addr, cp)
	v5RawSub(t, sub, 1, 0, packet.Subscription{Filter: "tas/#", QoS: 0})
	pub, _ := dialV5(t, addr, "tas-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "tas/long/topic/name", Payload: []byte("1")})
	pub.pub(t, &paho.Publish{Topic: "tas/long/topic/name", Payload: []byte("2")})
	p1 := v5ReadPub(t, sub, "tas/long/topic/name", "1")
	if p1.Properties.TopicAlias == nil {
		t.Fatalf("first message carries no topic alias")
	}
	a := *p1.Properties.TopicAlias
	if a < 1 || a > 5 {
		t.Fatalf("alias %d outside 1..5", a)
	}
	p2 := v5ReadPub(t, sub, "", "2")
	if p2.Properties.TopicAlias == nil || *p2.Properties.TopicAlias != a {
		t.Fatalf("second message alias %v, want %d", p2.Properties.TopicAlias, a)
	}

	// A subscriber that announces none gets no aliases.
	plain, _ := v5Raw(t, addr, "tas-plain", true, 0)
	v5RawSub(t, plain, 1, 0, packet.Subscription{Filter: "tas/#", QoS: 0})
	pub.pub(t, &paho.Publish{Topic: "tas/long/topic/name", Payload: []byte("3")})
	pub.pub(t, &paho.Publish{Topic: "tas/long/topic/name", Payload: []byte("4")})
	for _, want := range []string{"3", "4"} {
		if p := v5ReadPub(t, plain, "tas/long/topic/name", want); p.Properties.TopicAlias != nil {
			t.Fatalf("alias %d sent to a client with Topic Alias Maximum 0", *p.Properties.TopicAlias)
		}
	}
}

// v5PubCtx publishes without failing the test, returning paho's answer.
func v5PubCtx(c *v5Client, p *paho.Publish) (*paho.PublishResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Publish(ctx, p)
}
