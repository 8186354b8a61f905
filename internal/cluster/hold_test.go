package cluster

import (
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// A QoS 2 message from a client goes to no subscriber, by whatever
// operation, before its publish has committed, its packet ID in the
// queue stream: here the subscriber was offline when it was published,
// and its client reconnects while the publish waits for the stream (a
// test hook holds it, as a slow stream would); the reconnect's
// operation, which sends the queued message under a packet ID, waits for
// the publish too. Sent at once, the client had the message before its
// packet ID was replicated: the node lost then, the publisher's resend
// elsewhere is a new message under a new name, and the subscriber's
// session, recovered elsewhere, takes it again.
func TestQoS2NotSentBeforeItsPacketIDIsReplicated(t *testing.T) {
	t.Parallel()
	tn := startSolo(t, false)
	s, _ := reconnectRaw(t, tn.addr, "hold-s")
	s.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "hold/#", QoS: 2}}})
	if _, ok := s.Read().(*packet.Suback); !ok {
		t.Fatal("hold-s: expected SUBACK")
	}
	s.Send(&packet.Disconnect{})
	s.Close()
	waitFor(t, "hold-s offline", func() bool {
		c, ok := tn.b.Client("hold-s")
		return ok && !c.Connected
	})
	pub, _ := reconnectRaw(t, tn.addr, "hold-pub")

	id := "hold-pub"
	tn.n.mir.holdFor.Store(&id)
	t.Cleanup(func() { tn.n.mir.holdFor.Store(nil) }) // before the node stops: the publish waits on it
	pub.Send(&packet.Publish{Topic: "hold/x", QoS: 2, PacketID: 3, Payload: []byte("held")})
	waitFor(t, "the message queued for hold-s", func() bool {
		_, queued := tn.b.QueueTotals()
		return queued == 1
	})
	s, ack := reconnectRaw(t, tn.addr, "hold-s")
	if !ack.SessionPresent {
		t.Fatal("hold-s: session present = false")
	}
	// Nothing may come while the publish waits; a delivery sent at once
	// comes within milliseconds (a slower run can only miss the fault,
	// never fail here wrongly).
	if p, err := s.Next(time.Second); err == nil {
		t.Fatalf("hold-s got %+v while the publisher's packet ID was not replicated", p)
	}
	tn.n.mir.holdFor.Store(nil)
	p, ok := s.Read().(*packet.Publish)
	if !ok || string(p.Payload) != "held" {
		t.Fatalf("hold-s: got %+v, want the message once the publish committed", p)
	}
	if a, ok := pub.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREC || a.PacketID != 3 {
		t.Fatalf("hold-pub: got %+v, want PUBREC 3", a)
	}
}
