package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/packet"
)

// A removal whose queue stream entry was not confirmed is written again
// once the stream takes writes. It was not: the stream kept the delivery
// as last written, and the node that recovered the session after its
// node's loss sent it again. For QoS 2 the entry left was the PUBLISH
// sent under its packet ID when the client's PUBREC state did not land
// either (the acknowledgement goes out after the bounded wait, or at once
// when the write fails): the client had completed the flow and released
// the ID, so it took the resend, flagged DUP under the same ID, as a new
// message. A hundred partition-node cycles delivered 105 QoS 2 messages
// twice that way, 91 of them in one burst of a session handed over to the
// pinned subscriber's node while the stream was electing a leader.
func TestLostRemovalWrittenAgain(t *testing.T) {
	t.Parallel()
	tn := startSolo(t, false)
	const id = "lost-removal"
	s, _, recv := connect(t, tn.addr, id)
	if s == nil {
		t.Fatalf("%s refused", id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	if _, err := s.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "lr/#", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}

	// The stream takes the delivery (the PUBLISH sent under its packet
	// ID) and loses what the client's PUBREC and PUBCOMP change.
	var lostRemovals atomic.Int32
	lose := func(clientID string, changes []queueChange) bool {
		if clientID != id {
			return false
		}
		for _, c := range changes {
			if c.Out != nil && c.Out.PacketID != 0 && c.Out.State == 2 {
				return false // the PUBLISH sent
			}
		}
		for _, c := range changes {
			if c.Out == nil && c.In == 0 {
				lostRemovals.Add(1)
			}
		}
		return true
	}
	tn.n.mir.lose.Store(&lose)
	defer tn.n.mir.lose.Store(nil)

	p, _, _ := connect(t, tn.addr, id+"-pub")
	if p == nil {
		t.Fatal("publisher refused")
	}
	if _, err := p.Publish(ctx, &paho.Publish{Topic: "lr/x", QoS: 2, Payload: []byte("once")}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-recv:
		if string(m.Payload) != "once" {
			t.Fatalf("got %q", m.Payload)
		}
	case <-ctx.Done():
		t.Fatal("the subscriber never got the message")
	}
	// paho completes the flow on its own: PUBREC, then PUBCOMP.
	waitFor(t, "the removal's entry lost", func() bool { return lostRemovals.Load() > 0 })
	tn.n.mir.lose.Store(nil) // the stream takes writes again

	// What a takeover would replay: nothing, the client has it all.
	brokertest.WaitFor(t, func() error {
		rctx, rcancel := context.WithTimeout(context.Background(), readyWait)
		defer rcancel()
		out, _, err := tn.n.loadQueued(rctx, id, tn.n.Name())
		if err != nil {
			return err
		}
		if len(out) > 0 {
			return fmt.Errorf("the stream still holds %d deliveries the client completed (the first under packet ID %d, state %d): a takeover would send them again",
				len(out), out[0].PacketID, out[0].State)
		}
		return nil
	})
}

// The same for a QoS 2 packet ID received from a publisher: a release
// (its PUBREL) whose entry was not confirmed is written again. Left in
// the stream, the ID would still await PUBREL in the session that a
// takeover recovers, and a later message's resend under it (DUP set, its
// first send lost with its node) would be taken as already received.
func TestLostReleaseWrittenAgain(t *testing.T) {
	t.Parallel()
	tn := startSolo(t, false)
	const id = "lost-release"
	var lostReleases atomic.Int32
	lose := func(clientID string, changes []queueChange) bool {
		if clientID != id {
			return false
		}
		for _, c := range changes {
			if c.In != 0 && c.Rel {
				lostReleases.Add(1)
				return true
			}
		}
		return false
	}
	tn.n.mir.lose.Store(&lose)
	defer tn.n.mir.lose.Store(nil)

	p := dialRaw(t, tn.addr)
	defer p.Close()
	if ack := p.Connect(id, false); ack.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK 0x%02x", id, byte(ack.ReasonCode))
	}
	p.Send(&packet.Publish{QoS: 2, PacketID: 7, Topic: "lrel/x", Payload: []byte("once")})
	if a, ok := p.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREC || a.PacketID != 7 {
		t.Fatalf("got %+v, want PUBREC 7", a)
	}
	p.Send(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
	if a, ok := p.Read().(*packet.Ack); !ok || a.Kind != packet.PUBCOMP || a.PacketID != 7 {
		t.Fatalf("got %+v, want PUBCOMP 7", a)
	}
	waitFor(t, "the release's entry lost", func() bool { return lostReleases.Load() > 0 })
	tn.n.mir.lose.Store(nil)

	brokertest.WaitFor(t, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), readyWait)
		defer cancel()
		_, in, err := tn.n.loadQueued(ctx, id, tn.n.Name())
		if err != nil {
			return err
		}
		if _, ok := in[7]; ok {
			return fmt.Errorf("the stream still has packet ID 7 awaiting PUBREL, which the publisher released")
		}
		return nil
	})
}
