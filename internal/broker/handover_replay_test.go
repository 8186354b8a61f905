package broker

import (
	"testing"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// A publisher's session recovered from a lost node's record, with a QoS 2
// packet ID that node received and named but may not have routed, moves
// on to another node before its client resends: the hand-over carries
// the name, so the resend there is routed under it (the lost node's copy
// never left it). Without the name it was taken as an ordinary repeat,
// acknowledged and routed nowhere: an acknowledged message lost.
func TestHandOverCarriesNameOfUnroutedInboundID(t *testing.T) {
	name := session.Origin{Instance: 9, Seq: 41}
	first := New(config.Default().Limits, nil)
	first.SetStore(memory.New())
	if err := first.Restore(); err != nil {
		t.Fatal(err)
	}
	first.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "pub", Version: 5, ExpiryInterval: 60},
		Inbound: []uint16{5, 6}, InboundOrigins: []session.Origin{name, {}}})
	b, lb := handOverPub(t, first)

	pub := dialRaw(t, lb.addr, packet.V5)
	if !pub.connect("pub", false, 60).SessionPresent {
		t.Fatal("publisher's session not present")
	}
	// ID 6 was received and routed by the node the session left: its
	// resend is the usual duplicate, not routed again.
	pub.mustSend(&packet.Publish{Dup: true, QoS: 2, PacketID: 6, Topic: "r/1", Payload: []byte("routed")})
	pub.ack(packet.PUBREC, 6)
	if _, queued := b.QueueTotals(); queued != 0 {
		t.Fatalf("%d messages queued for a resend its first node routed, want 0", queued)
	}
	pub.mustSend(&packet.Publish{Dup: true, QoS: 2, PacketID: 5, Topic: "r/1", Payload: []byte("x")})
	pub.ack(packet.PUBREC, 5)
	if _, queued := b.QueueTotals(); queued != 1 {
		t.Fatalf("%d messages queued, want 1: the resend routed under its name", queued)
	}
}

// handOverPub hands client "pub"'s session over from first to a new
// broker, as a cluster's hand-over would, where the persistent session
// "sub" subscribes to r/# at QoS 2; it returns the new broker, serving
// on loopback.
func handOverPub(t *testing.T, first *Broker) (*Broker, *loopBroker) {
	t.Helper()
	h := first.PrepareHandOver("pub", false)
	if h.Snapshot == nil {
		t.Fatal("no snapshot to hand over")
	}
	first.CommitHandOver(h, func() {})

	b := New(config.Default().Limits, nil)
	lb := servedBroker(t, b, memory.New(), nil)
	sub := []store.Subscription{{Filter: "r/#", Options: packet.Subscription{Filter: "r/#", QoS: 2}}}
	b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "sub", Version: 5, ExpiryInterval: 60}, Subs: sub})
	b.Adopt(h.Snapshot)
	return b, lb
}
