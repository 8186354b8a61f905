package broker

import (
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// A QoS 2 publisher whose session came from a node that was lost resends
// a PUBLISH under a packet ID that node had received (and named). The
// message is routed again under that name: a session that took it
// already does not get it twice, one that missed it (the lost node never
// routed it there) gets it, and the publisher gets its PUBREC.
func TestQoS2ResendRoutedAgainUnderItsName(t *testing.T) {
	b := New(config.Default().Limits, nil)
	lb := servedBroker(t, b, memory.New(), nil)
	name := session.Origin{Instance: 9, Seq: 41}
	sub := []store.Subscription{{Filter: "r/#", Options: packet.Subscription{Filter: "r/#", QoS: 2}}}
	b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "took", Version: 5, ExpiryInterval: 60}, Subs: sub,
		Taken: []session.Origin{name}})
	b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "missed", Version: 5, ExpiryInterval: 60}, Subs: sub})
	b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "pub", Version: 5, ExpiryInterval: 60},
		Inbound: []uint16{5}, InboundOrigins: []session.Origin{name}})

	pub := dialRaw(t, lb.addr, packet.V5)
	if !pub.connect("pub", false, 60).SessionPresent {
		t.Fatal("publisher's session not present")
	}
	resend := &packet.Publish{Dup: true, QoS: 2, PacketID: 5, Topic: "r/1", Payload: []byte("x")}
	pub.mustSend(resend)
	pub.ack(packet.PUBREC, 5)
	if _, queued := b.QueueTotals(); queued != 1 {
		t.Fatalf("%d messages queued, want 1: for the session that missed it only", queued)
	}
	if n := b.Stats.Repeats.Load(); n != 1 {
		t.Fatalf("%d copies skipped, want 1 (the session that took it)", n)
	}

	// Once: a further resend of the same ID is the usual duplicate.
	pub.mustSend(resend)
	pub.ack(packet.PUBREC, 5)
	if _, queued := b.QueueTotals(); queued != 1 {
		t.Fatalf("%d messages queued after a second resend, want still 1", queued)
	}
}

// A persistent session's memory of the messages it took survives a
// restart from the store: a copy of a message its client acknowledged
// before the restart, reaching it afterwards (relayed late), is not
// delivered again.
func TestTakenSurvivesRestart(t *testing.T) {
	st := memory.New()
	b := New(config.Default().Limits, nil)
	b.SetStore(st)
	if err := b.Restore(); err != nil {
		t.Fatal(err)
	}
	lb := serveLoopback(t, b)
	sub := []store.Subscription{{Filter: "r/#", Options: packet.Subscription{Filter: "r/#", QoS: 1}}}
	b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "s", Version: 5, ExpiryInterval: 600}, Subs: sub})
	name := session.Origin{Instance: 9, Seq: 7}
	copyOf := func() *session.Message {
		return &session.Message{Topic: "r/1", Payload: []byte("x"), QoS: 1, Origin: name}
	}
	if safe, missing := b.InjectTo(copyOf(), []string{"s"}); !safe || len(missing) != 0 {
		t.Fatalf("InjectTo: safe %v, missing %v", safe, missing)
	}
	c := dialRaw(t, lb.addr, packet.V5)
	c.connect("s", false, 600)
	p, ok := c.read().(*packet.Publish)
	if !ok || p.QoS != 1 {
		t.Fatalf("got %+v, want the queued QoS 1 message", p)
	}
	c.mustSend(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	c.mustSend(&packet.Disconnect{})
	deadline := time.Now().Add(time.Minute)
	for inflight, queued := b.QueueTotals(); inflight+queued > 0; inflight, queued = b.QueueTotals() {
		if time.Now().After(deadline) {
			t.Fatal("the PUBACK was not taken within a minute")
		}
		time.Sleep(5 * time.Millisecond) // the PUBACK is on its way
	}
	lb.stop()

	b2 := New(config.Default().Limits, nil)
	b2.SetStore(st)
	if err := b2.Restore(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b2.Close(time.Second) })
	if !b2.HasSession("s") {
		t.Fatal("session not restored")
	}
	if safe, _ := b2.InjectTo(copyOf(), []string{"s"}); !safe {
		t.Fatal("InjectTo not safe")
	}
	if _, queued := b2.QueueTotals(); queued != 0 {
		t.Fatalf("%d messages queued after the restart: the acknowledged message was taken again", queued)
	}
	if n := b2.Stats.Repeats.Load(); n != 1 {
		t.Fatalf("%d copies skipped, want 1", n)
	}
}
