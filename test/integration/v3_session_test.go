package integration

import (
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

func v3Persistent(o *mqtt.ClientOptions) {
	o.SetCleanSession(false).SetResumeSubs(true)
}

// Clean session false: the session survives a disconnect, CONNACK says
// session present, subscriptions are kept and QoS 1/2 messages published
// meanwhile are delivered on reconnect; QoS 0 ones are not kept.
func TestV3PersistentSessionOfflineDelivery(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	s := v3Connect(t, addr, "v3-persist", v3Persistent)
	if s.sessionPresent() {
		t.Fatalf("first connect: session present")
	}
	s.sub("persist/#", 2)
	s.Disconnect(250)

	pub := v3Connect(t, addr, "v3-persist-pub", nil)
	pub.pub("persist/q1", 1, false, "one")
	pub.pub("persist/q2", 2, false, "two")
	pub.pub("persist/q0", 0, false, "zero")
	pub.pub("persist/q2b", 2, false, "three")

	s2 := v3Connect(t, addr, "v3-persist", v3Persistent)
	if !s2.sessionPresent() {
		t.Fatalf("reconnect: session present = false [MQTT-3.2.2-2]")
	}
	s2.expectMsg("persist/q1", "one", 1, false)
	s2.expectMsg("persist/q2", "two", 2, false)
	s2.expectMsg("persist/q2b", "three", 2, false)
	s2.expectNone(150 * time.Millisecond)

	// The subscription is still there without subscribing again.
	pub.pub("persist/live", 1, false, "live")
	s2.expectMsg("persist/live", "live", 1, false)
}

// The same over a raw connection: session present, and queued messages are
// sent right after CONNACK with fresh packet IDs.
func TestV3RawPersistentSession(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	r := v3RawConnect(t, addr, packet.V311, "v3-rawpersist", false)
	v3RawSub(t, r, 1, "rp/t", 1)
	r.Send(&packet.Disconnect{})
	r.ExpectClosed(0)

	pub := v3Connect(t, addr, "v3-rawpersist-pub", nil)
	pub.pub("rp/t", 1, false, "queued")

	r2 := testutil.Dial(t, addr, packet.V311)
	ack := r2.Connect("v3-rawpersist", false)
	if ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("CONNACK code 0x%02x session present %v, want 0 true", byte(ack.ReasonCode), ack.SessionPresent)
	}
	p := v3RawExpectPublish(t, r2, "rp/t", "queued", 1)
	r2.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	v3RawExpectNothing(t, r2, 100*time.Millisecond)
}

// An unacknowledged QoS 1 delivery is sent again with DUP set when the
// client reconnects to its session [MQTT-4.4.0-1].
func TestV3UnackedRedeliveredWithDup(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	r := v3RawConnect(t, addr, packet.V311, "v3-dup", false)
	v3RawSub(t, r, 1, "dup/t", 2)
	pub := v3Connect(t, addr, "v3-dup-pub", nil)
	pub.pub("dup/t", 1, false, "a")
	pub.pub("dup/t", 2, false, "b")
	p1 := v3RawExpectPublish(t, r, "dup/t", "a", 1)
	p2 := v3RawExpectPublish(t, r, "dup/t", "b", 2)
	if p1.Dup || p2.Dup {
		t.Fatalf("first delivery with DUP set")
	}
	r.Send(&packet.Disconnect{}) // no PUBACK, no PUBREC
	r.ExpectClosed(0)

	r2 := testutil.Dial(t, addr, packet.V311)
	if ack := r2.Connect("v3-dup", false); !ack.SessionPresent {
		t.Fatalf("session not present")
	}
	q1 := v3RawExpectPublish(t, r2, "dup/t", "a", 1)
	q2 := v3RawExpectPublish(t, r2, "dup/t", "b", 2)
	if !q1.Dup || !q2.Dup || q1.PacketID != p1.PacketID || q2.PacketID != p2.PacketID {
		t.Fatalf("redelivery: dup %v/%v ids %d/%d, want dup true and ids %d/%d", q1.Dup, q2.Dup, q1.PacketID, q2.PacketID, p1.PacketID, p2.PacketID)
	}
	r2.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: q1.PacketID}, &packet.Ack{Kind: packet.PUBREC, PacketID: q2.PacketID})
	if a, ok := r2.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREL || a.PacketID != q2.PacketID {
		t.Fatalf("want PUBREL %d, got %#v", q2.PacketID, a)
	}
	// A PUBREL not yet completed is resent on the next reconnect.
	r2.Send(&packet.Disconnect{})
	r2.ExpectClosed(0)
	r3 := testutil.Dial(t, addr, packet.V311)
	r3.Connect("v3-dup", false)
	if a, ok := r3.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREL || a.PacketID != q2.PacketID {
		t.Fatalf("want PUBREL %d resent, got %#v", q2.PacketID, a)
	}
	r3.Send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: q2.PacketID})
	v3RawExpectNothing(t, r3, 100*time.Millisecond)
}

// Clean session true discards the previous session: no session present, no
// subscriptions, no queued messages [MQTT-3.1.2-6].
func TestV3CleanSessionDiscards(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	s := v3Connect(t, addr, "v3-clean", v3Persistent)
	s.sub("clean/t", 1)
	s.Disconnect(250)
	pub := v3Connect(t, addr, "v3-clean-pub", nil)
	pub.pub("clean/t", 1, false, "queued while offline")

	c := v3Connect(t, addr, "v3-clean", nil) // clean session
	if c.sessionPresent() {
		t.Fatalf("clean session: session present")
	}
	c.expectNone(200 * time.Millisecond)
	pub.pub("clean/t", 1, false, "after")
	c.expectNone(150 * time.Millisecond)
	c.Disconnect(250)
	// The DISCONNECT and the next CONNECT travel on different connections;
	// give the broker the moment to end the first before the second takes
	// it over (a takeover of a live session rightly reports it present).
	time.Sleep(100 * time.Millisecond)

	// The clean session ended with its connection: nothing persists either.
	s2 := v3Connect(t, addr, "v3-clean", v3Persistent)
	if s2.sessionPresent() {
		t.Fatalf("after a clean session: session present")
	}
	pub.pub("clean/t", 1, false, "again")
	s2.expectNone(150 * time.Millisecond)
}

// limits.max_queued_messages bounds the offline queue; when full the newest
// message is dropped, so the oldest five arrive, in order.
func TestV3OfflineQueueBound(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Limits.MaxQueued = 5 })
	// The will tells when the broker has detached the session: a message
	// published earlier would go inflight to the old connection instead of
	// into the offline queue.
	watch := v3Watcher(t, addr, "v3-bound-watch", "bound/offline")
	s := v3Connect(t, addr, "v3-bound", func(o *mqtt.ClientOptions) {
		v3Persistent(o)
		o.SetWill("bound/offline", "detached", 0, false)
	})
	s.sub("bound/t", 1)
	s.kill()
	watch.expectMsg("bound/offline", "detached", 0, false)
	pub := v3Connect(t, addr, "v3-bound-pub", nil)
	for i := range 10 {
		pub.pub("bound/t", 1, false, fmt.Sprint(i))
	}
	s2 := v3Connect(t, addr, "v3-bound", v3Persistent)
	if !s2.sessionPresent() {
		t.Fatalf("session not present")
	}
	for i := range 5 {
		s2.expectMsg("bound/t", fmt.Sprint(i), 1, false)
	}
	s2.expectNone(300 * time.Millisecond)
}

// A second connection with the same client ID takes over: the first one is
// closed [MQTT-3.1.4-2], and the session carries on for the new one.
func TestV3TakeoverClosesFirstConnection(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	lost := make(chan error, 1)
	first := v3Connect(t, addr, "v3-takeover", func(o *mqtt.ClientOptions) {
		v3Persistent(o)
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	})
	first.sub("takeover/t", 1)

	second := v3Connect(t, addr, "v3-takeover", v3Persistent)
	select {
	case <-lost:
	case <-time.After(v3Wait):
		t.Fatalf("first connection not closed after takeover")
	}
	if !second.sessionPresent() {
		t.Fatalf("takeover: session present = false")
	}
	pub := v3Connect(t, addr, "v3-takeover-pub", nil)
	pub.pub("takeover/t", 1, false, "to the second")
	second.expectMsg("takeover/t", "to the second", 1, false)
	first.expectNone(100 * time.Millisecond)

	// The same at the packet level: the old socket is closed without a
	// DISCONNECT (3.1.1 has none from the server).
	r1 := v3RawConnect(t, addr, packet.V311, "v3-takeover-raw", true)
	r2 := v3RawConnect(t, addr, packet.V311, "v3-takeover-raw", true)
	if d := r1.ExpectClosed(0); d != nil {
		t.Fatalf("3.1.1 connection got DISCONNECT on takeover")
	}
	r2.Send(&packet.Pingreq{})
	if _, ok := r2.Read().(*packet.Pingresp); !ok {
		t.Fatalf("new connection not served after takeover")
	}
}

// An empty client ID is accepted with clean session (the broker assigns
// one) [MQTT-3.1.3-6] and rejected with return code 0x02 otherwise
// [MQTT-3.1.3-8].
func TestV3EmptyClientID(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	r := v3Raw(t, addr)
	ack := r.Connect("", true)
	if ack.ReasonCode != 0 || ack.SessionPresent {
		t.Fatalf("empty ID, clean: code 0x%02x present %v", byte(ack.ReasonCode), ack.SessionPresent)
	}
	v3RawSub(t, r, 1, "empty/t", 1)
	r.Send(&packet.Publish{Topic: "empty/t", QoS: 1, PacketID: 9, Payload: []byte("me")})
	// Either order is fine for PUBACK and the delivery; both must arrive.
	var gotAck, gotPub bool
	for range 2 {
		switch p := r.Read().(type) {
		case *packet.Ack:
			gotAck = p.Kind == packet.PUBACK && p.PacketID == 9
		case *packet.Publish:
			gotPub = p.Topic == "empty/t" && string(p.Payload) == "me"
		}
	}
	if !gotAck || !gotPub {
		t.Fatalf("empty-ID client: PUBACK %v delivery %v", gotAck, gotPub)
	}

	// Two empty-ID clients get distinct sessions: no takeover.
	r2 := v3Raw(t, addr)
	if ack := r2.Connect("", true); ack.ReasonCode != 0 {
		t.Fatalf("second empty ID: code 0x%02x", byte(ack.ReasonCode))
	}
	r.Send(&packet.Pingreq{})
	if _, ok := r.Read().(*packet.Pingresp); !ok {
		t.Fatalf("first empty-ID client was taken over by the second")
	}

	r3 := v3Raw(t, addr)
	ack = r3.Connect("", false)
	if ack.ReasonCode != packet.V3IdentifierRejected || ack.SessionPresent {
		t.Fatalf("empty ID, persistent: code 0x%02x present %v, want 0x02", byte(ack.ReasonCode), ack.SessionPresent)
	}
	r3.ExpectClosed(0)

	// paho reports the same refusal.
	_, err := v3TryConnect(t, addr, "", v3Persistent)
	if err == nil {
		t.Fatalf("paho: empty client ID with clean session false accepted")
	}
}
