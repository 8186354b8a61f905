package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store"
)

// A persistent session recovered from the queue stream after its node's
// loss remembers a message its client completed there even once that
// node has purged the entries that delivered it: the publisher's resend,
// which the node recovering the publisher's session routes again under
// the message's name (its packet ID reached the stream with it), does
// not reach the session a second time. Six kill-publisher-node cycles of
// the fault suite delivered QoS 2 messages twice without DUP that way
// (pub-park/11 to sub-move and parked-n3, both on the killed node with
// the publisher, both having completed it 70 ms before the kill).
func TestRecoveredSessionRemembersPurgedDeliveries(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	u1, u3 := nodes[0], nodes[2]

	// s: a persistent QoS 2 subscriber on u3, with the publisher.
	sc, _ := reconnectRaw(t, u3.addr, "mem-s")
	sc.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "mem/#", QoS: 2}}})
	if _, ok := sc.Read().(*packet.Suback); !ok {
		t.Fatal("mem-s: expected SUBACK")
	}
	pub, _ := reconnectRaw(t, u3.addr, "mem-pub")
	waitRecorded(t, u1, "mem-s")
	waitRecorded(t, u1, "mem-pub")

	// The publisher has its PUBREC but sends no PUBREL: its node is lost
	// before, and it resends the message where its session went.
	pub.Send(&packet.Publish{Topic: "mem/x", QoS: 2, PacketID: 7, Payload: []byte("once")})
	if a, ok := pub.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREC || a.PacketID != 7 {
		t.Fatalf("mem-pub: got %+v, want PUBREC 7", a)
	}
	q := &qos2Sub{r: sc, waitRel: map[uint16]string{}, got: map[string][]*packet.Publish{}, complete: map[string]bool{}}
	for !q.complete["once"] {
		q.handle(t, sc.Read())
	}
	// u3 purges the entries that delivered it, the session holding
	// nothing now.
	subj := queueSubject("mem-s", "u3")
	brokertest.WaitFor(t, func() error {
		puts, err := queuedPuts(u1.n.queue(), subj)
		if err != nil {
			return err
		}
		if puts > 0 {
			return fmt.Errorf("%d delivery entries of mem-s still in the stream", puts)
		}
		return nil
	})
	sc.Close()
	pub.Close()
	u3.n.Close()

	sc, _ = reconnectRaw(t, u1.addr, "mem-s")
	q.r = sc
	pub, ack := reconnectRaw(t, u1.addr, "mem-pub")
	if !ack.SessionPresent {
		t.Fatal("mem-pub on u1: session present = false")
	}
	pub.Send(&packet.Publish{Topic: "mem/x", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("once")})
	if a, ok := pub.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREC || a.PacketID != 7 {
		t.Fatalf("mem-pub on u1: got %+v, want PUBREC 7", a)
	}
	pub.Send(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
	pub.Read() // PUBCOMP
	pub.Send(&packet.Publish{Topic: "mem/x", QoS: 2, PacketID: 8, Payload: []byte("end")})
	for len(q.got["end"]) == 0 {
		q.handle(t, sc.Read())
	}
	if got := q.got["once"]; len(got) != 1 {
		var desc []string
		for _, p := range got {
			desc = append(desc, fmt.Sprintf("id %d dup %v", p.PacketID, p.Dup))
		}
		t.Fatalf("mem-s received the QoS 2 message %d times (%v), want once", len(got), desc)
	}
}

// queuedPuts counts the entries of subject subj that store a delivery.
func queuedPuts(s jetstream.Stream, subj string) (int, error) {
	puts, _, err := queuedKinds(s, subj)
	return puts, err
}

func TestTakenEncodingRoundTrips(t *testing.T) {
	names := []session.Origin{{Instance: 9, Seq: 5}, {Instance: 9, Seq: 6}, {Instance: 9, Seq: 3},
		{Instance: 4, Seq: 1 << 62}, {}, {Instance: 9, Seq: 7}}
	got := decodeTaken(encodeTaken(names))
	want := slices.DeleteFunc(slices.Clone(names), session.Origin.IsZero)
	if !slices.Equal(got, want) {
		t.Fatalf("decoded %v, want %v", got, want)
	}
}

// A stay's marker carries the memory the session arrived with, so a
// session moved to a node and recovered from that node's entries before
// it purged any (which writes the memory) still knows what it took on
// its earlier nodes; an earlier stay's memory is not this one's.
func TestStayMarkerCarriesMemory(t *testing.T) {
	t.Parallel()
	n := startSolo(t, false).n
	name := func(seq uint64) session.Origin { return session.Origin{Instance: 3, Seq: seq} }
	n.markStay("m", []session.Origin{name(1)}) // an earlier stay
	n.markStay("m", []session.Origin{name(2), name(3)})
	n.MirrorDeliveries([]broker.MirrorOp{{ClientID: "m", Seq: 1, Rev: 1, Out: &broker.SnapshotDelivery{
		Msg: store.Message{Topic: "m/x", Payload: []byte("m"), QoS: 2, Origin: store.Origin(name(4))}, QoS: 2}}}, true)

	rec := &broker.SessionSnapshot{Session: store.Session{ClientID: "m", Version: 5, ExpiryInterval: 600}}
	want := []session.Origin{name(2), name(3), name(4)}
	retry(t, func() error {
		s, err := n.withQueued(rec, "solo", false)
		if err != nil {
			return err
		}
		if !slices.Equal(s.Taken, want) {
			return fmt.Errorf("recovered session remembers %v, want %v", s.Taken, want)
		}
		return nil
	})
}

// A session that ends leaves no memory in the queue stream: the node
// purges its memory entry (written when its deliveries were purged) with
// its end.
func TestEndedSessionLeavesNoMemory(t *testing.T) {
	t.Parallel()
	tn := startSolo(t, false)
	c, _, recv := connect(t, tn.addr, "mem-end")
	sub(t, c, "end/#")
	publishAll(t, c, "end/x", "m", 3)
	expectAll(t, recv, payloads("m", 3))
	subj := queueSubject("mem-end", "solo")
	brokertest.WaitFor(t, func() error {
		puts, mem, err := queuedKinds(tn.n.queue(), subj)
		if err != nil {
			return err
		}
		if puts > 0 || mem == 0 {
			return fmt.Errorf("%d delivery entries and %d memory entries in the stream, want none and some", puts, mem)
		}
		return nil
	})
	zero := uint32(0)
	c.Disconnect(&paho.Disconnect{Properties: &paho.DisconnectProperties{SessionExpiryInterval: &zero}})
	brokertest.WaitFor(t, func() error {
		puts, mem, err := queuedKinds(tn.n.queue(), subj)
		if err != nil {
			return err
		}
		if puts+mem > 0 {
			return fmt.Errorf("%d delivery entries and %d memory entries left after the session ended", puts, mem)
		}
		return nil
	})
}

// queuedKinds counts the entries of subject subj that store a delivery,
// and those that hold a memory.
func queuedKinds(s jetstream.Stream, subj string) (puts, mem int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return puts, mem, nil
		}
		if err != nil {
			return 0, 0, err
		}
		var e queueEntry
		if err := json.Unmarshal(m.Data, &e); err != nil {
			return 0, 0, err
		}
		for _, c := range e.C {
			if c.Out != nil {
				puts++
			}
		}
		if len(e.T) > 0 {
			mem++
		}
		seq = m.Sequence + 1
	}
}
