package integration

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// restartable runs brokers one after another on the same data folder.
type restartable struct {
	t    *testing.T
	data string
	srv  *starling.Server
	addr string
}

func newRestartable(t *testing.T) *restartable {
	r := &restartable{t: t, data: t.TempDir()}
	r.start()
	return r
}

func (r *restartable) start() {
	r.srv, r.addr = testutil.StartBroker(r.t, func(c *starling.Config) { c.Data = r.data })
}

func (r *restartable) restart() {
	r.srv.Close()
	r.start()
}

func persistentConnect(t *testing.T, addr, id string, expiry uint32) (*testutil.Raw, *packet.Connack) {
	t.Helper()
	c := testutil.Dial(t, addr, packet.V5)
	c.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: id, KeepAlive: 30,
		Properties: packet.Properties{SessionExpiry: &expiry}})
	ack, ok := c.Read().(*packet.Connack)
	if !ok || ack.ReasonCode != 0 {
		t.Fatalf("connect %s: %+v", id, ack)
	}
	return c, ack
}

func TestDurableRetainedAndSubscriptionsSurviveRestart(t *testing.T) {
	t.Parallel()
	r := newRestartable(t)
	sub, _ := persistentConnect(t, r.addr, "d-sub", 3600)
	sid := 7
	sub.Send(&packet.Subscribe{PacketID: 1, Properties: packet.Properties{SubscriptionIDs: []int{sid}},
		Subscriptions: []packet.Subscription{{Filter: "d/+", QoS: 1, NoLocal: true}}})
	if _, ok := sub.Read().(*packet.Suback); !ok {
		t.Fatal("no SUBACK")
	}
	pub, _ := dialV5(t, r.addr, "d-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "d/kept", QoS: 1, Retain: true, Payload: []byte("retained")})
	live, ok := sub.Read().(*packet.Publish)
	if !ok {
		t.Fatal("no live copy")
	}
	sub.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: live.PacketID}, &packet.Pingreq{})
	sub.Read() // PINGRESP: the PUBACK before it was handled

	r.restart()
	s2, ack := persistentConnect(t, r.addr, "d-sub", 3600)
	if !ack.SessionPresent {
		t.Fatal("session not present after restart")
	}
	// The subscription is back with its options: a publish from another
	// client arrives with the subscription identifier...
	pub2, _ := dialV5(t, r.addr, "d-pub2", nil)
	pub2.pub(t, &paho.Publish{Topic: "d/live", QoS: 1, Payload: []byte("after")})
	p, ok := s2.Read().(*packet.Publish)
	if !ok || string(p.Payload) != "after" || len(p.Properties.SubscriptionIDs) != 1 || p.Properties.SubscriptionIDs[0] != sid {
		t.Fatalf("after restart got %+v", p)
	}
	s2.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	// ...and the retained message is still there for a new subscriber.
	fresh, _ := dialV5(t, r.addr, "d-fresh", nil)
	fresh.sub(t, paho.SubscribeOptions{Topic: "d/kept", QoS: 1})
	if m := fresh.expect(t); string(m.Payload) != "retained" || !m.Retain {
		t.Fatalf("retained after restart: %q retain=%v", m.Payload, m.Retain)
	}
}

func TestDurableQueuedAndInflightSurviveRestart(t *testing.T) {
	t.Parallel()
	r := newRestartable(t)
	sub, _ := persistentConnect(t, r.addr, "q-sub", 3600)
	sub.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "q/#", QoS: 2}}})
	sub.Read()
	pub, _ := dialV5(t, r.addr, "q-pub", nil)
	pub.pub(t, &paho.Publish{Topic: "q/1", QoS: 1, Payload: []byte("inflight")})
	first, ok := sub.Read().(*packet.Publish)
	if !ok || string(first.Payload) != "inflight" {
		t.Fatalf("got %+v", first)
	}
	// Not acknowledged; the subscriber goes away and more arrive.
	sub.Send(&packet.Disconnect{})
	time.Sleep(50 * time.Millisecond)
	pub.pub(t, &paho.Publish{Topic: "q/2", QoS: 2, Payload: []byte("queued")})

	r.restart()
	s2, ack := persistentConnect(t, r.addr, "q-sub", 3600)
	if !ack.SessionPresent {
		t.Fatal("session not present after restart")
	}
	again, ok := s2.Read().(*packet.Publish)
	if !ok || string(again.Payload) != "inflight" || !again.Dup || again.PacketID != first.PacketID {
		t.Fatalf("inflight after restart: %+v, want DUP id %d", again, first.PacketID)
	}
	s2.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: again.PacketID})
	queued, ok := s2.Read().(*packet.Publish)
	if !ok || string(queued.Payload) != "queued" || queued.QoS != 2 {
		t.Fatalf("queued after restart: %+v", queued)
	}
}

// The broker's half of QoS 2 exactly once survives a restart: a PUBLISH
// resent after PUBREC with the same packet ID is not delivered again, and
// the PUBREL that follows completes normally.
func TestDurableInboundQoS2SurvivesRestart(t *testing.T) {
	t.Parallel()
	r := newRestartable(t)
	sub, _ := dialV5(t, r.addr, "x-sub", &paho.Connect{CleanStart: false, KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(3600)}})
	sub.sub(t, paho.SubscribeOptions{Topic: "x/t", QoS: 2})
	pub, _ := persistentConnect(t, r.addr, "x-pub", 3600)
	pub.Send(&packet.Publish{Topic: "x/t", QoS: 2, PacketID: 7, Payload: []byte("once")})
	if a, ok := pub.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREC {
		t.Fatalf("got %+v, want PUBREC", a)
	}
	if m := sub.expect(t); string(m.Payload) != "once" {
		t.Fatalf("got %q", m.Payload)
	}
	time.Sleep(200 * time.Millisecond) // the subscriber's own QoS 2 flow completes

	r.restart()
	p2, _ := persistentConnect(t, r.addr, "x-pub", 3600)
	p2.Send(&packet.Publish{Topic: "x/t", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("once")})
	if a, ok := p2.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREC || a.ReasonCode >= 0x80 {
		t.Fatalf("got %+v, want PUBREC", a)
	}
	p2.Send(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
	if a, ok := p2.Read().(*packet.Ack); !ok || a.Kind != packet.PUBCOMP || a.ReasonCode != 0 {
		t.Fatalf("got %+v, want PUBCOMP 0 (the packet ID was remembered)", a)
	}
	sub2, _ := dialV5(t, r.addr, "x-sub", &paho.Connect{CleanStart: false, KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(3600)}})
	sub2.expectNone(t, 300*time.Millisecond)
}

// A will waiting on its delay when the broker stops is published after the
// restart once the delay has passed, unless the client came back.
func TestDurableWillDelayAcrossRestart(t *testing.T) {
	t.Parallel()
	r := newRestartable(t)
	delay := uint32(1)
	expiry := uint32(60)
	c := testutil.Dial(t, r.addr, packet.V5)
	c.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: "w-client", KeepAlive: 30,
		Properties: packet.Properties{SessionExpiry: &expiry},
		Will:       &packet.Will{Topic: "w/gone", Payload: []byte("bye"), QoS: 1, Properties: packet.Properties{WillDelay: &delay}}})
	c.Read()
	// The watcher's session is persistent and subscribed before the
	// restart: the delay counts from the drop, so the will may go out
	// before a watcher that subscribed only after the restart is there.
	persistent := &paho.Connect{CleanStart: false, KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(3600)}}
	w1, _ := dialV5(t, r.addr, "w-watch", persistent)
	w1.sub(t, paho.SubscribeOptions{Topic: "w/#", QoS: 1})
	r.restart() // the connections end with the broker
	watcher, _ := dialV5(t, r.addr, "w-watch", persistent)
	if m := watcher.expect(t); string(m.Payload) != "bye" {
		t.Fatalf("will after restart: %q", m.Payload)
	}
}

func u32(v uint32) *uint32 { return &v }

// Clients cannot write into the broker's $SYS tree: v5 gets 0x87, and
// nothing reaches a subscriber.
func TestSysTopicsAreReadOnly(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, nil)
	watcher, _ := dialV5(t, addr, "sys-watch", nil)
	watcher.sub(t, paho.SubscribeOptions{Topic: "$SYS/forged/#", QoS: 1})
	c, _ := dialV5(t, addr, "sys-writer", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, &paho.Publish{Topic: "$SYS/forged/uptime", QoS: 1, Payload: []byte("forged")})
	if err == nil || r == nil || r.ReasonCode != byte(packet.NotAuthorized) {
		t.Fatalf("publish to $SYS: %v %+v, want PUBACK 0x87", err, r)
	}
	watcher.expectNone(t, 200*time.Millisecond)
}

// The same promise for a 3.1.1 client (paho.mqtt.golang): a persistent
// session's subscription and the QoS 1 messages queued for it while it was
// away survive a restart of the broker.
func TestDurableV311SessionSurvivesRestart(t *testing.T) {
	t.Parallel()
	r := newRestartable(t)
	s := v3Connect(t, r.addr, "v3-durable", v3Persistent)
	s.sub("v3d/#", 1)
	s.close()
	pub := v3Connect(t, r.addr, "v3-durable-pub", nil)
	for _, p := range []string{"one", "two"} {
		pub.pub("v3d/x", 1, false, p)
	}
	pub.close()

	r.restart()
	s2 := v3Connect(t, r.addr, "v3-durable", v3Persistent)
	if !s2.sessionPresent() {
		t.Fatal("3.1.1 session not present after restart")
	}
	s2.expectMsg("v3d/x", "one", 1, false)
	s2.expectMsg("v3d/x", "two", 1, false)
	// And the subscription itself is back.
	p2 := v3Connect(t, r.addr, "v3-durable-pub2", nil)
	p2.pub("v3d/y", 1, false, "live")
	s2.expectMsg("v3d/y", "live", 1, false)
}
