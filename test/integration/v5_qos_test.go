package integration

import (
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// QoS 1 and 2 flows, packet by packet, client to broker and broker to client.
func TestV5QoS12BothDirections(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := v5Raw(t, addr, "q-sub", true, 0)
	v5RawSub(t, sub, 1, 0, packet.Subscription{Filter: "q/#", QoS: 2})
	pub, _ := v5Raw(t, addr, "q-pub", true, 0)

	// QoS 1 in: PUBACK 0x00 (there is a subscriber); out: PUBLISH QoS 1.
	if a := v5PubQoS1(t, pub, 10, "q/one", "one"); a.ReasonCode != packet.Success {
		t.Fatalf("PUBACK 0x%02x", byte(a.ReasonCode))
	}
	p := v5ReadPub(t, sub, "q/one", "one")
	if p.QoS != 1 || p.PacketID == 0 || p.Dup {
		t.Fatalf("QoS 1 out: qos %d id %d dup %v", p.QoS, p.PacketID, p.Dup)
	}
	sub.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})

	// QoS 2 in: PUBREC, PUBREL, PUBCOMP; the message goes out at QoS 2.
	pub.Send(&packet.Publish{QoS: 2, PacketID: 11, Topic: "q/two", Payload: []byte("two")})
	if a := v5ReadAck(t, pub, packet.PUBREC); a.PacketID != 11 || a.ReasonCode != packet.Success {
		t.Fatalf("PUBREC id %d code 0x%02x", a.PacketID, byte(a.ReasonCode))
	}
	p = v5ReadPub(t, sub, "q/two", "two")
	if p.QoS != 2 || p.PacketID == 0 {
		t.Fatalf("QoS 2 out: qos %d id %d", p.QoS, p.PacketID)
	}
	pub.Send(&packet.Ack{Kind: packet.PUBREL, PacketID: 11})
	if a := v5ReadAck(t, pub, packet.PUBCOMP); a.PacketID != 11 || a.ReasonCode != packet.Success {
		t.Fatalf("PUBCOMP id %d code 0x%02x", a.PacketID, byte(a.ReasonCode))
	}
	// QoS 2 out: PUBREC from the subscriber, PUBREL from the broker.
	sub.Send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
	if a := v5ReadAck(t, sub, packet.PUBREL); a.PacketID != p.PacketID || a.ReasonCode != packet.Success {
		t.Fatalf("PUBREL id %d code 0x%02x, want id %d", a.PacketID, byte(a.ReasonCode), p.PacketID)
	}
	sub.Send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
	v5Silent(t, sub, v5Quiet)

	// No subscriber: 0x10 on both PUBACK and PUBREC.
	if a := v5PubQoS1(t, pub, 12, "nobody/here", "x"); a.ReasonCode != packet.NoMatchingSubscribers {
		t.Fatalf("PUBACK without subscribers 0x%02x, want 0x10", byte(a.ReasonCode))
	}
	pub.Send(&packet.Publish{QoS: 2, PacketID: 13, Topic: "nobody/here", Payload: []byte("x")})
	if a := v5ReadAck(t, pub, packet.PUBREC); a.ReasonCode != packet.NoMatchingSubscribers {
		t.Fatalf("PUBREC without subscribers 0x%02x, want 0x10", byte(a.ReasonCode))
	}
}

// Paho end to end: QoS 1 and 2 publishes complete and arrive at their QoS.
func TestV5QoS12Paho(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := dialV5(t, addr, "qp-sub", nil)
	sub.sub(t, paho.SubscribeOptions{Topic: "qp/t", QoS: 2})
	pub, _ := dialV5(t, addr, "qp-pub", nil)
	for _, q := range []byte{1, 2} {
		r := pub.pub(t, &paho.Publish{Topic: "qp/t", QoS: q, Payload: []byte{'0' + q}})
		if r.ReasonCode != 0 {
			t.Fatalf("QoS %d publish: reason 0x%02x", q, r.ReasonCode)
		}
		if m := sub.expect(t); m.QoS != q || string(m.Payload) != string([]byte{'0' + q}) {
			t.Fatalf("QoS %d: got QoS %d payload %q", q, m.QoS, m.Payload)
		}
	}
}

// Messages are delivered at min(publish QoS, subscription QoS).
func TestV5QoSDowngradedToSubscription(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := v5Raw(t, addr, "dg-sub", true, 0)
	sa := v5RawSub(t, sub, 1, 0,
		packet.Subscription{Filter: "dg/0", QoS: 0},
		packet.Subscription{Filter: "dg/1", QoS: 1})
	if sa.ReasonCodes[0] != packet.Success || sa.ReasonCodes[1] != packet.GrantedQoS1 {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	pub, _ := dialV5(t, addr, "dg-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "dg/0", QoS: 2, Payload: []byte("a")})
	if p := v5ReadPub(t, sub, "dg/0", "a"); p.QoS != 0 || p.PacketID != 0 {
		t.Fatalf("QoS 2 on a QoS 0 subscription arrived at QoS %d", p.QoS)
	}
	pub.pub(t, &paho.Publish{Topic: "dg/1", QoS: 2, Payload: []byte("b")})
	if p := v5ReadPub(t, sub, "dg/1", "b"); p.QoS != 1 {
		t.Fatalf("QoS 2 on a QoS 1 subscription arrived at QoS %d", p.QoS)
	}
	// A lower publish QoS is not upgraded.
	pub.pub(t, &paho.Publish{Topic: "dg/1", QoS: 0, Payload: []byte("c")})
	if p := v5ReadPub(t, sub, "dg/1", "c"); p.QoS != 0 {
		t.Fatalf("QoS 0 on a QoS 1 subscription arrived at QoS %d", p.QoS)
	}
}

// An unacknowledged QoS 1 message is sent again with DUP on reconnect of a
// persistent session.
func TestV5RedeliveryQoS1Dup(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := v5Raw(t, addr, "rd1", false, 60)
	v5RawSub(t, sub, 1, 0, packet.Subscription{Filter: "rd1/t", QoS: 1})
	pub, _ := dialV5(t, addr, "rd1-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "rd1/t", QoS: 1, Payload: []byte("again")})
	first := v5ReadPub(t, sub, "rd1/t", "again")
	if first.Dup {
		t.Fatalf("first delivery has DUP set")
	}
	sub.Close()

	sub2, ack := v5Raw(t, addr, "rd1", false, 60)
	if !ack.SessionPresent {
		t.Fatalf("session not present")
	}
	p := v5ReadPub(t, sub2, "rd1/t", "again")
	if !p.Dup || p.PacketID != first.PacketID || p.QoS != 1 {
		t.Fatalf("redelivery: dup %v id %d qos %d, want dup true id %d qos 1", p.Dup, p.PacketID, p.QoS, first.PacketID)
	}
	sub2.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	v5Silent(t, sub2, v5Quiet)
	sub2.Close()

	// Acknowledged: not sent a third time.
	sub3, _ := v5Raw(t, addr, "rd1", false, 60)
	v5Silent(t, sub3, v5Quiet)
}

// A QoS 2 message past PUBREC is resumed with PUBREL, not a new PUBLISH.
func TestV5RedeliveryQoS2Pubrel(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := v5Raw(t, addr, "rd2", false, 60)
	v5RawSub(t, sub, 1, 0, packet.Subscription{Filter: "rd2/t", QoS: 2})
	pub, _ := dialV5(t, addr, "rd2-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "rd2/t", QoS: 2, Payload: []byte("twice?")})
	p := v5ReadPub(t, sub, "rd2/t", "twice?")
	sub.Send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
	v5ReadAck(t, sub, packet.PUBREL)
	sub.Close()

	sub2, _ := v5Raw(t, addr, "rd2", false, 60)
	rel := v5ReadAck(t, sub2, packet.PUBREL)
	if rel.PacketID != p.PacketID {
		t.Fatalf("PUBREL for %d, want %d", rel.PacketID, p.PacketID)
	}
	sub2.Send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
	v5Silent(t, sub2, v5Quiet)
}

// A QoS 2 PUBLISH received twice before PUBREL is delivered once.
func TestV5QoS2InboundExactlyOnce(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := dialV5(t, addr, "eo-sub", nil)
	sub.sub(t, paho.SubscribeOptions{Topic: "eo/t", QoS: 2})
	pub, _ := v5Raw(t, addr, "eo-pub", true, 0)
	pub.Send(&packet.Publish{QoS: 2, PacketID: 7, Topic: "eo/t", Payload: []byte("once")})
	v5ReadAck(t, pub, packet.PUBREC)
	pub.Send(&packet.Publish{QoS: 2, PacketID: 7, Dup: true, Topic: "eo/t", Payload: []byte("once")})
	if a := v5ReadAck(t, pub, packet.PUBREC); a.PacketID != 7 || a.ReasonCode >= 0x80 {
		t.Fatalf("second PUBREC id %d code 0x%02x", a.PacketID, byte(a.ReasonCode))
	}
	pub.Send(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
	if a := v5ReadAck(t, pub, packet.PUBCOMP); a.ReasonCode != packet.Success {
		t.Fatalf("PUBCOMP 0x%02x", byte(a.ReasonCode))
	}
	if m := sub.expect(t); string(m.Payload) != "once" {
		t.Fatalf("got %q", m.Payload)
	}
	sub.expectNone(t, v5Quiet)

	// After PUBCOMP the packet ID is free: the same ID is a new message.
	pub.Send(&packet.Publish{QoS: 2, PacketID: 7, Topic: "eo/t", Payload: []byte("new")})
	v5ReadAck(t, pub, packet.PUBREC)
	if m := sub.expect(t); string(m.Payload) != "new" {
		t.Fatalf("got %q", m.Payload)
	}
}

// PUBREL for an unknown packet ID is answered with PUBCOMP 0x92.
func TestV5PubrelUnknownID(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	r, _ := v5Raw(t, addr, "rel", true, 0)
	r.Send(&packet.Ack{Kind: packet.PUBREL, PacketID: 99})
	a := v5ReadAck(t, r, packet.PUBCOMP)
	if a.PacketID != 99 || a.ReasonCode != packet.PacketIDNotFound {
		t.Fatalf("PUBCOMP id %d code 0x%02x, want 99 0x92", a.PacketID, byte(a.ReasonCode))
	}
}
