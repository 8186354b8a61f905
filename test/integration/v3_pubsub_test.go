package integration

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// Every publish QoS against every subscription QoS: the message arrives once,
// at min(publish QoS, subscription QoS) [MQTT-3.8.4-6].
func TestV3PublishSubscribeQoSMatrix(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	pub := v3Connect(t, addr, "v3-matrix-pub", nil)
	for sq := byte(0); sq <= 2; sq++ {
		sub := v3Connect(t, addr, fmt.Sprintf("v3-matrix-sub%d", sq), nil)
		filter := fmt.Sprintf("v3/matrix/%d", sq)
		sub.sub(filter, sq)
		for pq := byte(0); pq <= 2; pq++ {
			payload := fmt.Sprintf("sub%d-pub%d", sq, pq)
			pub.pub(filter, pq, false, payload)
			sub.expectMsg(filter, payload, min(sq, pq), false)
		}
		sub.expectNone(100 * time.Millisecond)
	}
}

// The broker sends QoS 1 and 2 to a subscriber with the full flows, seen at
// the packet level: PUBLISH QoS 1 -> PUBACK; PUBLISH QoS 2 -> PUBREC ->
// PUBREL -> PUBCOMP; and it acknowledges the inbound flows from a raw
// publisher in the 3.1.1 form.
func TestV3RawQoSFlowsBothDirections(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub := v3RawConnect(t, addr, packet.V311, "v3-flow-sub", true)
	v3RawSub(t, sub, 1, "v3/flow", 2)
	pub := v3RawConnect(t, addr, packet.V311, "v3-flow-pub", true)

	// QoS 1 in.
	pub.Send(&packet.Publish{Topic: "v3/flow", QoS: 1, PacketID: 7, Payload: []byte("one")})
	if a, ok := pub.Read().(*packet.Ack); !ok || a.Kind != packet.PUBACK || a.PacketID != 7 {
		t.Fatalf("want PUBACK 7, got %#v", a)
	}
	// QoS 1 out.
	p := v3RawExpectPublish(t, sub, "v3/flow", "one", 1)
	if p.PacketID == 0 || p.Dup || p.Retain {
		t.Fatalf("delivered QoS 1: id %d dup %v retain %v", p.PacketID, p.Dup, p.Retain)
	}
	sub.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})

	// QoS 2 in.
	pub.Send(&packet.Publish{Topic: "v3/flow", QoS: 2, PacketID: 8, Payload: []byte("two")})
	if a, ok := pub.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREC || a.PacketID != 8 {
		t.Fatalf("want PUBREC 8, got %#v", a)
	}
	// A duplicate before PUBREL is acknowledged but not delivered again
	// [MQTT-4.3.3-2].
	pub.Send(&packet.Publish{Topic: "v3/flow", QoS: 2, PacketID: 8, Dup: true, Payload: []byte("two")})
	if a, ok := pub.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREC || a.PacketID != 8 {
		t.Fatalf("want PUBREC 8 for the duplicate, got %#v", a)
	}
	pub.Send(&packet.Ack{Kind: packet.PUBREL, PacketID: 8})
	if a, ok := pub.Read().(*packet.Ack); !ok || a.Kind != packet.PUBCOMP || a.PacketID != 8 {
		t.Fatalf("want PUBCOMP 8, got %#v", a)
	}
	// QoS 2 out.
	p = v3RawExpectPublish(t, sub, "v3/flow", "two", 2)
	sub.Send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
	if a, ok := sub.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREL || a.PacketID != p.PacketID {
		t.Fatalf("want PUBREL %d, got %#v", p.PacketID, a)
	}
	sub.Send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
	v3RawExpectNothing(t, sub, 150*time.Millisecond)

	// QoS 0 in and out.
	pub.Send(&packet.Publish{Topic: "v3/flow", Payload: []byte("zero")})
	v3RawExpectPublish(t, sub, "v3/flow", "zero", 0)

	// PINGREQ is answered.
	pub.Send(&packet.Pingreq{})
	if _, ok := pub.Read().(*packet.Pingresp); !ok {
		t.Fatalf("want PINGRESP")
	}
}

func TestV3Wildcards(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	pub := v3Connect(t, addr, "v3-wild-pub", nil)
	plus := v3Connect(t, addr, "v3-wild-plus", nil)
	plus.sub("sport/+/score", 1)
	hash := v3Connect(t, addr, "v3-wild-hash", nil)
	hash.sub("sport/#", 1)
	all := v3Connect(t, addr, "v3-wild-all", nil)
	all.sub("#", 1)

	pub.pub("sport/tennis/score", 1, false, "a")
	plus.expectMsg("sport/tennis/score", "a", 1, false)
	hash.expectMsg("sport/tennis/score", "a", 1, false)
	all.expectMsg("sport/tennis/score", "a", 1, false)

	// '+' matches exactly one level; '#' includes the parent level
	// [MQTT-4.7.1-2].
	pub.pub("sport/tennis/player1/score", 1, false, "b")
	hash.expectMsg("sport/tennis/player1/score", "b", 1, false)
	all.expectMsg("sport/tennis/player1/score", "b", 1, false)
	pub.pub("sport", 1, false, "c")
	hash.expectMsg("sport", "c", 1, false)
	all.expectMsg("sport", "c", 1, false)
	// '+' matches an empty level.
	pub.pub("sport//score", 1, false, "d")
	plus.expectMsg("sport//score", "d", 1, false)
	hash.expectMsg("sport//score", "d", 1, false)
	all.expectMsg("sport//score", "d", 1, false)
	// No match at all for the sport filters.
	pub.pub("other/score", 1, false, "e")
	all.expectMsg("other/score", "e", 1, false)

	plus.expectNone(100 * time.Millisecond)
	hash.expectNone(10 * time.Millisecond)
	all.expectNone(10 * time.Millisecond)
}

// Topics beginning with '$' are not matched by filters starting with a
// wildcard [MQTT-4.7.2-1], but are matched by filters naming them.
func TestV3DollarTopicsNotMatchedByLeadingWildcard(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	hash := v3Connect(t, addr, "v3-dollar-hash", nil)
	hash.sub("#", 1)
	plus := v3Connect(t, addr, "v3-dollar-plus", nil)
	plus.sub("+/x", 1)
	plusAll := v3Connect(t, addr, "v3-dollar-plusall", nil)
	plusAll.sub("+/#", 1)
	sys := v3Connect(t, addr, "v3-dollar-sys", nil)
	sys.sub("$test/#", 1)
	sysPlus := v3Connect(t, addr, "v3-dollar-sysplus", nil)
	sysPlus.sub("$test/+", 1)

	pub := v3Connect(t, addr, "v3-dollar-pub", nil)
	pub.pub("$test/x", 1, false, "dollar")
	sys.expectMsg("$test/x", "dollar", 1, false)
	sysPlus.expectMsg("$test/x", "dollar", 1, false)
	hash.expectNone(200 * time.Millisecond)
	plus.expectNone(10 * time.Millisecond)
	plusAll.expectNone(10 * time.Millisecond)

	// The same filters do see an ordinary topic of the same shape.
	pub.pub("SYS/x", 1, false, "plain")
	hash.expectMsg("SYS/x", "plain", 1, false)
	plus.expectMsg("SYS/x", "plain", 1, false)
	plusAll.expectMsg("SYS/x", "plain", 1, false)
	sys.expectNone(100 * time.Millisecond)
}

// Overlapping subscriptions of one client: this broker delivers one copy at
// the highest granted QoS [MQTT-3.3.5-1].
func TestV3OverlappingSubscriptionsOneCopyHighestQoS(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub := v3Connect(t, addr, "v3-overlap-sub", nil)
	sub.sub("ov/#", 0)
	sub.sub("ov/+/c", 2)
	sub.sub("ov/b/c", 1)
	pub := v3Connect(t, addr, "v3-overlap-pub", nil)

	pub.pub("ov/b/c", 2, false, "all three")
	sub.expectMsg("ov/b/c", "all three", 2, false)
	sub.expectNone(200 * time.Millisecond)

	// All three match again; the highest subscription QoS (2) caps a QoS 1
	// publish at 1.
	pub.pub("ov/b/c", 1, false, "qos1")
	sub.expectMsg("ov/b/c", "qos1", 1, false)
	sub.expectNone(100 * time.Millisecond)

	// ov/x matches only ov/# at QoS 0.
	pub.pub("ov/x", 2, false, "hash only")
	sub.expectMsg("ov/x", "hash only", 0, false)
	sub.expectNone(100 * time.Millisecond)
}

// Resubscribing to the same filter replaces the subscription (its QoS)
// rather than adding a second one [MQTT-3.8.4-3]; unsubscribe stops delivery.
func TestV3ResubscribeReplacesAndUnsubscribe(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub := v3Connect(t, addr, "v3-resub-sub", nil)
	pub := v3Connect(t, addr, "v3-resub-pub", nil)
	sub.sub("rs/t", 2)
	sub.sub("rs/t", 0)
	pub.pub("rs/t", 2, false, "x")
	sub.expectMsg("rs/t", "x", 0, false)
	sub.expectNone(100 * time.Millisecond)

	tok := sub.Unsubscribe("rs/t")
	if !tok.WaitTimeout(v3Wait) || tok.Error() != nil {
		t.Fatalf("unsubscribe: %v", tok.Error())
	}
	pub.pub("rs/t", 1, false, "y")
	sub.expectNone(200 * time.Millisecond)
}

// A subscriber's own publications are delivered back to it in 3.1.1 (there
// is no No Local before MQTT 5).
func TestV3OwnPublicationsDelivered(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	c := v3Connect(t, addr, "v3-self", nil)
	c.sub("self/t", 1)
	c.pub("self/t", 1, false, "echo")
	c.expectMsg("self/t", "echo", 1, false)
}

// Many messages at QoS 1 and 2, published without waiting, arrive complete
// and in order (100 QoS 2 in flight: more than max_inflight, which a 3.1.1
// client is never told).
func TestV3OrderedDelivery(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub := v3Connect(t, addr, "v3-order-sub", nil)
	sub.sub("order/t", 2)
	pub := v3Connect(t, addr, "v3-order-pub", nil)
	const n = 200
	toks := make([]mqtt.Token, 0, n)
	for i := range n {
		toks = append(toks, pub.Publish("order/t", byte(1+i%2), false, fmt.Sprint(i)))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(v3Wait) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	for i := range n {
		m := sub.expect()
		if string(m.Payload()) != fmt.Sprint(i) || m.Qos() != byte(1+i%2) {
			t.Fatalf("message %d: payload %q qos %d", i, m.Payload(), m.Qos())
		}
	}
	sub.expectNone(100 * time.Millisecond)
}

// A 256 KiB payload makes the round trip intact once max_packet_size allows
// it, at each QoS.
func TestV3LargeMessage(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.MaxPacketSize = 1 << 20 })
	payload := make([]byte, 256<<10)
	for i := range payload {
		payload[i] = byte(i*7 + i>>8)
	}
	sub := v3Connect(t, addr, "v3-large-sub", nil)
	sub.sub("large/t", 2)
	pub := v3Connect(t, addr, "v3-large-pub", nil)
	for q := byte(0); q <= 2; q++ {
		pub.pub("large/t", q, false, payload)
		m := sub.expect()
		if m.Topic() != "large/t" || m.Qos() != q || !bytes.Equal(m.Payload(), payload) {
			t.Fatalf("qos %d: topic %q qos %d payload %d bytes (equal %v)", q, m.Topic(), m.Qos(), len(m.Payload()), bytes.Equal(m.Payload(), payload))
		}
	}
}

// A packet above max_packet_size closes a 3.1.1 connection (no DISCONNECT in
// 3.1.1) and is not forwarded.
func TestV3PacketAboveMaxPacketSizeCloses(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.MaxPacketSize = 64 << 10 })
	sub := v3Connect(t, addr, "v3-toolarge-sub", nil)
	sub.sub("big/t", 1)
	r := v3RawConnect(t, addr, packet.V311, "v3-toolarge-pub", true)
	r.Send(&packet.Publish{Topic: "big/t", QoS: 1, PacketID: 1, Payload: make([]byte, 100<<10)})
	if d := r.ExpectClosed(0); d != nil {
		t.Fatalf("3.1.1 connection got a DISCONNECT: %+v", d)
	}
	sub.expectNone(200 * time.Millisecond)
}

// A 3.1.1 client cannot learn the broker's Receive Maximum (there is none
// before MQTT 5), so many QoS 2 messages awaiting PUBREL are legal: the
// broker must acknowledge them all rather than close the connection.
func TestV3ManyUnreleasedQoS2Accepted(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil) // max_inflight 256
	sub := v3Connect(t, addr, "v3-manyq2-sub", nil)
	sub.sub("manyq2/t", 2)
	r := v3RawConnect(t, addr, packet.V311, "v3-manyq2-pub", true)
	const n = 300 // above max_inflight
	var buf []byte
	for i := 1; i <= n; i++ {
		buf, _ = packet.Append(buf, &packet.Publish{Topic: "manyq2/t", QoS: 2, PacketID: uint16(i), Payload: []byte(fmt.Sprint(i))}, packet.V311)
	}
	r.WriteRaw(buf) // one write: all 300 are unreleased when the broker reads them
	for i := 1; i <= n; i++ {
		p, err := r.Next(v3Wait)
		if err != nil {
			t.Fatalf("PUBREC %d of %d: connection ended: %v", i, n, err)
		}
		if a, ok := p.(*packet.Ack); !ok || a.Kind != packet.PUBREC || a.PacketID != uint16(i) {
			t.Fatalf("want PUBREC %d, got %#v", i, p)
		}
	}
	for i := 1; i <= n; i++ {
		r.Send(&packet.Ack{Kind: packet.PUBREL, PacketID: uint16(i)})
		if a, ok := r.Read().(*packet.Ack); !ok || a.Kind != packet.PUBCOMP || a.PacketID != uint16(i) {
			t.Fatalf("want PUBCOMP %d, got %#v", i, a)
		}
	}
	for i := 1; i <= n; i++ {
		sub.expectMsg("manyq2/t", fmt.Sprint(i), 2, false)
	}
}
