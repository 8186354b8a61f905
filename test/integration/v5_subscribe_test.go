package integration

import (
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// Overlapping subscriptions of one client: one copy, every subscription
// identifier, the highest QoS [MQTT-3.3.4-2, 3.3.4-3, 3.3.4-4].
func TestV5OverlappingSubscriptionIDs(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := v5Raw(t, addr, "ov-sub", true, 0)
	v5RawSub(t, sub, 1, 1, packet.Subscription{Filter: "ov/+", QoS: 0})
	v5RawSub(t, sub, 2, 2, packet.Subscription{Filter: "ov/#", QoS: 2})
	v5RawSub(t, sub, 3, 0, packet.Subscription{Filter: "ov/x", QoS: 1}) // no identifier
	pub, _ := dialV5(t, addr, "ov-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "ov/x", QoS: 2, Payload: []byte("both")})
	p := v5ReadPub(t, sub, "ov/x", "both")
	ids := slices.Sorted(slices.Values(p.Properties.SubscriptionIDs))
	if !slices.Equal(ids, []int{1, 2}) {
		t.Fatalf("subscription identifiers %v, want [1 2]", p.Properties.SubscriptionIDs)
	}
	if p.QoS != 2 {
		t.Fatalf("QoS %d, want 2 (the highest granted)", p.QoS)
	}
	sub.Send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
	rel := v5ReadAck(t, sub, packet.PUBREL)
	sub.Send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: rel.PacketID})
	v5Silent(t, sub, v5Quiet) // one copy only

	// Only "ov/#" matches a deeper topic: only its identifier.
	pub.pub(t, &paho.Publish{Topic: "ov/x/y", QoS: 0, Payload: []byte("deep")})
	p = v5ReadPub(t, sub, "ov/x/y", "deep")
	if !slices.Equal(p.Properties.SubscriptionIDs, []int{2}) {
		t.Fatalf("subscription identifiers %v, want [2]", p.Properties.SubscriptionIDs)
	}
}

// No Local: a client does not get its own messages on that subscription.
func TestV5NoLocal(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	a, _ := dialV5(t, addr, "nl-a", nil)
	a.sub(t, paho.SubscribeOptions{Topic: "nl/local", QoS: 1, NoLocal: true},
		paho.SubscribeOptions{Topic: "nl/echo", QoS: 1})
	a.pub(t, &paho.Publish{Topic: "nl/local", QoS: 1, Payload: []byte("own")})
	a.pub(t, &paho.Publish{Topic: "nl/echo", QoS: 1, Payload: []byte("echo")})
	if m := a.expect(t); m.Topic != "nl/echo" {
		t.Fatalf("got own message on %q despite No Local", m.Topic)
	}
	a.expectNone(t, v5Quiet)
	b, _ := dialV5(t, addr, "nl-b", nil)
	b.pub(t, &paho.Publish{Topic: "nl/local", QoS: 1, Payload: []byte("other")})
	if m := a.expect(t); m.Topic != "nl/local" || string(m.Payload) != "other" {
		t.Fatalf("got %q %q, want another client's message", m.Topic, m.Payload)
	}
}

// Retain Handling 0 sends retained messages on every subscribe, 1 only when
// the subscription is new, 2 never.
func TestV5RetainHandling(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	pub, _ := dialV5(t, addr, "rh-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "rh/t", QoS: 1, Retain: true, Payload: []byte("kept")})

	c0, _ := v5Raw(t, addr, "rh0", true, 0)
	for i := range 2 {
		v5RawSub(t, c0, uint16(i+1), 0, packet.Subscription{Filter: "rh/t", QoS: 0, RetainHandling: 0})
		if p := v5ReadPub(t, c0, "rh/t", "kept"); !p.Retain {
			t.Fatalf("retain handling 0, subscribe %d: retain flag not set", i+1)
		}
	}
	c1, _ := v5Raw(t, addr, "rh1", true, 0)
	v5RawSub(t, c1, 1, 0, packet.Subscription{Filter: "rh/t", QoS: 0, RetainHandling: 1})
	v5ReadPub(t, c1, "rh/t", "kept")
	v5RawSub(t, c1, 2, 0, packet.Subscription{Filter: "rh/t", QoS: 0, RetainHandling: 1})
	v5Silent(t, c1, v5Quiet)

	c2, _ := v5Raw(t, addr, "rh2", true, 0)
	v5RawSub(t, c2, 1, 0, packet.Subscription{Filter: "rh/t", QoS: 0, RetainHandling: 2})
	v5Silent(t, c2, v5Quiet)
	// The subscription itself works.
	pub.pub(t, &paho.Publish{Topic: "rh/t", QoS: 0, Payload: []byte("live")})
	if p := v5ReadPub(t, c2, "rh/t", "live"); p.Retain {
		t.Fatalf("live message has the retain flag")
	}
}

// Retain As Published keeps the retain flag on live deliveries; without it
// the flag is cleared. Retained messages sent on subscribe always have it.
func TestV5RetainAsPublished(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	sub, _ := dialV5(t, addr, "rap-sub", nil)
	sub.sub(t, paho.SubscribeOptions{Topic: "rap/yes", QoS: 1, RetainAsPublished: true},
		paho.SubscribeOptions{Topic: "rap/no", QoS: 1})
	pub, _ := dialV5(t, addr, "rap-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "rap/yes", QoS: 1, Retain: true, Payload: []byte("y")})
	if m := sub.expect(t); m.Topic != "rap/yes" || !m.Retain {
		t.Fatalf("retain as published: got %q retain %v, want retain true", m.Topic, m.Retain)
	}
	pub.pub(t, &paho.Publish{Topic: "rap/no", QoS: 1, Retain: true, Payload: []byte("n")})
	if m := sub.expect(t); m.Topic != "rap/no" || m.Retain {
		t.Fatalf("without retain as published: got %q retain %v, want retain false", m.Topic, m.Retain)
	}
	pub.pub(t, &paho.Publish{Topic: "rap/yes", QoS: 1, Payload: []byte("plain")})
	if m := sub.expect(t); m.Retain {
		t.Fatalf("non-retained message delivered with retain flag")
	}
	late, _ := dialV5(t, addr, "rap-late", nil)
	late.sub(t, paho.SubscribeOptions{Topic: "rap/no", QoS: 1})
	if m := late.expect(t); string(m.Payload) != "n" || !m.Retain {
		t.Fatalf("retained on subscribe: got %q retain %v, want retain true", m.Payload, m.Retain)
	}
}

// Retained messages are stored, replaced by a newer one and cleared by an
// empty payload, which is still delivered to current subscribers.
func TestV5RetainedStoreReplaceClear(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	pub, _ := dialV5(t, addr, "ret-pub", nil)
	fresh := func(id string) *v5Client {
		c, _ := dialV5(t, addr, id, nil)
		c.sub(t, paho.SubscribeOptions{Topic: "ret/#", QoS: 2})
		return c
	}
	pub.pub(t, &paho.Publish{Topic: "ret/t", QoS: 2, Retain: true, Payload: []byte("v1")})
	c1 := fresh("ret-1")
	if m := c1.expect(t); string(m.Payload) != "v1" || !m.Retain || m.QoS != 2 {
		t.Fatalf("stored: got %q retain %v qos %d", m.Payload, m.Retain, m.QoS)
	}
	pub.pub(t, &paho.Publish{Topic: "ret/t", QoS: 1, Retain: true, Payload: []byte("v2")})
	c1.expect(t) // live copy
	c2 := fresh("ret-2")
	if m := c2.expect(t); string(m.Payload) != "v2" || m.QoS != 1 {
		t.Fatalf("replaced: got %q qos %d, want v2 at QoS 1", m.Payload, m.QoS)
	}
	c2.expectNone(t, v5Quiet)

	pub.pub(t, &paho.Publish{Topic: "ret/t", QoS: 1, Retain: true})
	if m := c1.expect(t); len(m.Payload) != 0 {
		t.Fatalf("current subscriber got %q, want the empty message", m.Payload)
	}
	c3 := fresh("ret-3")
	c3.expectNone(t, v5Quiet)
}

// Topics starting with $ are not matched by filters starting with a
// wildcard [MQTT-4.7.2-1].
func TestV5DollarTopicsNotMatchedByWildcards(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	all, _ := dialV5(t, addr, "dl-all", nil)
	all.sub(t, paho.SubscribeOptions{Topic: "#", QoS: 1})
	plus, _ := dialV5(t, addr, "dl-plus", nil)
	plus.sub(t, paho.SubscribeOptions{Topic: "+/x", QoS: 1})
	dollar, _ := dialV5(t, addr, "dl-dollar", nil)
	dollar.sub(t, paho.SubscribeOptions{Topic: "$dl/#", QoS: 1})
	pub, _ := dialV5(t, addr, "dl-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "$dl/x", QoS: 1, Payload: []byte("$")})
	if m := dollar.expect(t); m.Topic != "$dl/x" {
		t.Fatalf("explicit $ filter got %q", m.Topic)
	}
	all.expectNone(t, v5Quiet)
	plus.expectNone(t, 50*time.Millisecond)
	// Control: an ordinary topic reaches both wildcard filters.
	pub.pub(t, &paho.Publish{Topic: "dl/x", QoS: 1, Payload: []byte("plain")})
	if m := all.expect(t); m.Topic != "dl/x" {
		t.Fatalf("# got %q", m.Topic)
	}
	if m := plus.expect(t); m.Topic != "dl/x" {
		t.Fatalf("+/x got %q", m.Topic)
	}
}

// Invalid filters get SUBACK 0x8F, each on its own; valid ones in the same
// SUBSCRIBE are granted.
func TestV5InvalidFilter(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	r, _ := v5Raw(t, addr, "inv", true, 0)
	sa := v5RawSub(t, r, 1, 0,
		packet.Subscription{Filter: "ok/t", QoS: 1},
		packet.Subscription{Filter: "a/#/b", QoS: 1},
		packet.Subscription{Filter: "a+/b", QoS: 1},
		packet.Subscription{Filter: "x/#b", QoS: 0},
		packet.Subscription{Filter: "$share/grp", QoS: 0},
		packet.Subscription{Filter: "ok/#", QoS: 2})
	want := []packet.ReasonCode{1, 0x8F, 0x8F, 0x8F, 0x8F, 2}
	if !slices.Equal(sa.ReasonCodes, want) {
		t.Fatalf("SUBACK %x, want %x", sa.ReasonCodes, want)
	}
}

// Unsubscribing a filter the client does not have gets 0x11; a known one
// 0x00, after which nothing more arrives.
func TestV5UnsubscribeUnknown(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	r, _ := v5Raw(t, addr, "uns", true, 0)
	v5RawSub(t, r, 1, 0, packet.Subscription{Filter: "uns/t", QoS: 1})
	r.Send(&packet.Unsubscribe{PacketID: 2, Filters: []string{"uns/t", "uns/never"}})
	ua := v5Read[*packet.Unsuback](t, r)
	want := []packet.ReasonCode{packet.Success, packet.NoSubscriptionExisted}
	if ua.PacketID != 2 || !slices.Equal(ua.ReasonCodes, want) {
		t.Fatalf("UNSUBACK id %d %x, want %x", ua.PacketID, ua.ReasonCodes, want)
	}
	pub, _ := dialV5(t, addr, "uns-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "uns/t", QoS: 1, Payload: []byte("x")})
	v5Silent(t, r, v5Quiet)
}
