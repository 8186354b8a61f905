package cluster

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/packet"
)

// A QoS 2 message that a node received and delivered to its own
// persistent session, but whose packet ID never reached the queue stream
// before the node was cut off, is not delivered twice once the majority
// has taken the node's sessions over: its publisher resends it to where
// its session went, which does not know the packet ID and routes it as a
// new message, so the first copy must not follow the evicted subscriber
// there. (The fault suite's partition-node found that second copy,
// without DUP, in the publishers' node's offline session.)
func TestQoS2OfEvictedPublisherReachesEvictedSessionOnce(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	u1, u3 := nodes[0], nodes[2]

	// park: an offline persistent QoS 2 subscriber on u3, with the
	// publisher; far: another on u1.
	subscribe := func(addr, id string) {
		t.Helper()
		c, ack := reconnectRaw(t, addr, id)
		if ack.SessionPresent {
			t.Fatalf("%s: session present on first connect", id)
		}
		c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "o/#", QoS: 2}}})
		if _, ok := c.Read().(*packet.Suback); !ok {
			t.Fatalf("%s: expected SUBACK", id)
		}
		c.Send(&packet.Disconnect{})
		c.Close()
	}
	subscribe(u3.addr, "park")
	subscribe(u1.addr, "far")
	pub, _ := reconnectRaw(t, u3.addr, "pub")
	waitRecorded(t, u1, "park")
	waitRecorded(t, u1, "pub")
	waitIndexed(t, u3, "o/x", "u1")

	// The queue stream out of reach from here on, as in a partition:
	// the message reaches park on u3, and its packet ID stays on u3.
	u3.n.holdMir.Store(true)
	pub.Send(&packet.Publish{Topic: "o/x", QoS: 2, PacketID: 7, Payload: []byte("once")})
	waitPending(t, u3, 1)
	u3.n.muted.Store(true)
	waitFor(t, "u3 fenced", func() bool { return !u3.n.Health().Ready })
	waitFor(t, "u1 takes over u3's sessions", func() bool { return u1.b.HasSession("park") && u1.b.HasSession("pub") })

	u3.n.holdMir.Store(false)
	u3.n.muted.Store(false)
	waitFor(t, "u3 serving again without the sessions taken over", func() bool {
		return u3.n.Health().Ready && !u3.b.HasSession("park") && !u3.b.HasSession("pub")
	})
	// The publisher had no PUBREC: it resends, DUP set, where its session
	// went; u1 never saw packet ID 7 and takes the message as new.
	pub.ExpectClosed(0)
	pub, ack := reconnectRaw(t, u1.addr, "pub")
	if !ack.SessionPresent {
		t.Fatal("pub on u1: session present = false")
	}
	pub.Send(&packet.Publish{Topic: "o/x", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("once")})
	if a, ok := pub.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREC || a.PacketID != 7 {
		t.Fatalf("pub on u1: got %+v, want PUBREC 7", a)
	}
	pub.Send(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
	if a, ok := pub.Read().(*packet.Ack); !ok || a.Kind != packet.PUBCOMP {
		t.Fatalf("pub on u1: got %+v, want PUBCOMP", a)
	}
	// What u3 relayed for the evicted sessions has been consumed: every
	// copy on its way to park is in its session now.
	brokertest.WaitFor(t, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
		defer cancel()
		s, err := (*u1.n.rel.js.Load()).Stream(ctx, relayStream)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(relayPrefix+">"))
		if err != nil {
			return err
		}
		if info.State.Msgs > 0 {
			return fmt.Errorf("relay stream holds %d messages", info.State.Msgs)
		}
		return nil
	})
	pub.Send(&packet.Publish{Topic: "o/x", QoS: 2, PacketID: 8, Payload: []byte("end")})
	if a, ok := pub.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREC || a.PacketID != 8 {
		t.Fatalf("pub on u1: got %+v, want PUBREC 8", a)
	}

	for _, id := range []string{"park", "far"} {
		c, ack := reconnectRaw(t, u1.addr, id)
		if !ack.SessionPresent {
			t.Fatalf("%s on u1: session present = false", id)
		}
		q := &qos2Sub{r: c, waitRel: map[uint16]string{}, got: map[string][]*packet.Publish{}, complete: map[string]bool{}}
		for len(q.got["end"]) == 0 {
			q.handle(t, c.Read())
		}
		if got := q.got["once"]; len(got) != 1 {
			var desc []string
			for _, p := range got {
				desc = append(desc, fmt.Sprintf("id %d dup %v", p.PacketID, p.Dup))
			}
			t.Errorf("%s received the QoS 2 message %d times (%v), want once", id, len(got), desc)
		}
		c.Close()
	}
}
