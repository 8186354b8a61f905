package broker

import (
	"sync"
	"testing"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// holdingBackplane names every message and holds back the QoS 2 ones
// from clients (ForwardLater), as a cluster node does while their packet
// IDs are not replicated (cut off from the queue stream, or fenced): it
// never sends them.
type holdingBackplane struct {
	mu   sync.Mutex
	seq  uint64
	held map[session.Origin]bool
}

func (p *holdingBackplane) name(m *session.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq++
	m.Origin = session.Origin{Instance: 3, Seq: p.seq}
}

func (p *holdingBackplane) Forward(m *session.Message) (bool, <-chan struct{}) {
	p.name(m)
	return false, nil
}

func (p *holdingBackplane) ForwardLater(m *session.Message) (bool, <-chan struct{}, func(ok, replicated bool)) {
	p.name(m)
	p.mu.Lock()
	p.held[m.Origin] = true
	p.mu.Unlock()
	return true, nil, func(bool, bool) {}
}

func (p *holdingBackplane) HeldBack(o session.Origin) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held[o]
}

func (p *holdingBackplane) Interest(string, string, bool)                {}
func (p *holdingBackplane) Retain(*session.Message)                      {}
func (p *holdingBackplane) Claim(string, bool) (*SessionSnapshot, error) { return nil, nil }
func (p *holdingBackplane) SessionChanged(*SessionSnapshot)              {}
func (p *holdingBackplane) SessionEnded(string)                          {}

// A QoS 2 message that a node received and named but still holds back
// (its packet ID not replicated: the node is cut off from the queue
// stream, or fenced) is sent by that node only while its publisher's
// session is there. When the session is handed over meanwhile, it must
// carry the message's name with the packet ID, so that the client's
// resend is routed on the next node under that name. Without it the
// next node took the resend as one its first node had routed,
// acknowledged it and routed it nowhere: the fault suite's pause-node
// lost an acknowledged QoS 2 message so for the pinned subscriber (the
// publisher's node frozen with it in hand, its session then claimed by
// another node while the first was still fenced).
func TestHandOverCarriesNameOfHeldBackMessage(t *testing.T) {
	first := New(config.Default().Limits, nil)
	first.SetStore(memory.New())
	first.SetBackplane(&holdingBackplane{held: map[session.Origin]bool{}})
	if err := first.Restore(); err != nil {
		t.Fatal(err)
	}
	lf := serveLoopback(t, first)
	t.Cleanup(lf.stop)
	pub := dialRaw(t, lf.addr, packet.V5)
	pub.connect("pub", false, 60)
	pub.mustSend(&packet.Publish{QoS: 2, PacketID: 5, Topic: "r/1", Payload: []byte("held")})
	pub.ack(packet.PUBREC, 5)
	pub.nc.Close()

	b, lb := handOverPub(t, first)

	// A cluster node holds the PUBREC until the message is sent (the fake
	// lets it out at once): the client, which never had it, resends the
	// PUBLISH, DUP set, where its session went.
	again := dialRaw(t, lb.addr, packet.V5)
	if !again.connect("pub", false, 60).SessionPresent {
		t.Fatal("publisher's session not present")
	}
	again.mustSend(&packet.Publish{Dup: true, QoS: 2, PacketID: 5, Topic: "r/1", Payload: []byte("held")})
	again.ack(packet.PUBREC, 5)
	if _, queued := b.QueueTotals(); queued != 1 {
		t.Fatalf("%d messages queued for the subscriber, want 1: the resend of a message its first node never sent, routed under its name", queued)
	}
}
