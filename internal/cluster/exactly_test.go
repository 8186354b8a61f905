package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/store"
)

// A QoS 2 message in flight to a persistent subscriber when its node is
// lost is delivered exactly once: on the node its client reconnects to,
// what the client had received comes again under the same packet ID with
// DUP set, and what it had answered with PUBREC comes as PUBREL, never as
// a new PUBLISH.
func TestQoS2InflightExactlyOnceAcrossNodeLoss(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	u1, u3 := nodes[0], nodes[2]

	s := dialRaw(t, u3.addr)
	if ack := s.Connect("s", false); ack.ReasonCode != 0 {
		t.Fatalf("s on u3: CONNACK 0x%02x", byte(ack.ReasonCode))
	}
	s.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "e/#", QoS: 2}}})
	if _, ok := s.Read().(*packet.Suback); !ok {
		t.Fatal("s: expected SUBACK")
	}
	waitRecorded(t, u1, "s")
	waitIndexed(t, u1, "e/x", "u3")
	pub, _, _ := connect(t, u1.addr, "pub")
	publish := func(payload string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "e/x", QoS: 2, Payload: []byte(payload)}); err != nil {
			t.Fatalf("publish %s: %v", payload, err)
		}
	}
	// What s received before its node was lost: packet ID by payload, and
	// whether s answered it with PUBREC (and had the PUBREL).
	const n = 6
	ids := make(map[string]uint16)
	recd := make(map[string]bool)
	for i := range n {
		payload := fmt.Sprint("m", i)
		publish(payload)
		p, ok := s.Read().(*packet.Publish)
		if !ok || string(p.Payload) != payload || p.QoS != 2 {
			t.Fatalf("s: got %+v, want QoS 2 PUBLISH %s", p, payload)
		}
		ids[payload] = p.PacketID
		if i%2 == 0 {
			s.Send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
			if a, ok := s.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREL || a.PacketID != p.PacketID {
				t.Fatalf("s: got %+v, want PUBREL %d", a, p.PacketID)
			}
			recd[payload] = true
		}
	}

	s.Close()
	waitPending(t, u3, n)
	u3.n.Close()

	s2, ack := reconnectRaw(t, u1.addr, "s")
	if !ack.SessionPresent {
		t.Fatal("s on u1: session present = false")
	}
	byID := make(map[uint16]string)
	for p, id := range ids {
		byID[id] = p
	}
	for range n {
		switch p := s2.Read().(type) {
		case *packet.Publish:
			payload := string(p.Payload)
			if recd[payload] {
				t.Fatalf("s on u1: %s sent again as PUBLISH (id %d, DUP %v) after its PUBREC", payload, p.PacketID, p.Dup)
			}
			if !p.Dup || p.PacketID != ids[payload] {
				t.Fatalf("s on u1: %s resent with packet ID %d, DUP %v; want ID %d with DUP", payload, p.PacketID, p.Dup, ids[payload])
			}
		case *packet.Ack:
			if p.Kind != packet.PUBREL || !recd[byID[p.PacketID]] {
				t.Fatalf("s on u1: got %+v, want PUBREL only for what s answered with PUBREC", p)
			}
		default:
			t.Fatalf("s on u1: unexpected %T", p)
		}
	}
}

// qos2Sub is a raw MQTT 3.1.1 subscriber that completes QoS 2 flows as a
// client keeping its session state would, and records every PUBLISH.
type qos2Sub struct {
	r        *raw
	waitRel  map[uint16]string // PUBREC sent, PUBREL not yet received
	got      map[string][]*packet.Publish
	complete map[string]bool // PUBCOMP sent
}

// handle answers one packet; it reports the payload of a PUBLISH.
func (q *qos2Sub) handle(t *testing.T, p packet.Packet) {
	switch p := p.(type) {
	case *packet.Publish:
		pl := string(p.Payload)
		q.got[pl] = append(q.got[pl], p)
		q.waitRel[p.PacketID] = pl
		q.r.Send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
	case *packet.Ack:
		if p.Kind == packet.PUBREL {
			q.complete[q.waitRel[p.PacketID]] = true
			delete(q.waitRel, p.PacketID)
			q.r.Send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
		}
	}
}

// Under continuous QoS 2 traffic, a persistent subscriber whose node is
// lost gets no message twice as a new PUBLISH.
func TestQoS2StreamExactlyOnceAcrossNodeLoss(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	u1, u3 := nodes[0], nodes[2]
	q := &qos2Sub{r: dialRaw(t, u3.addr), waitRel: map[uint16]string{}, got: map[string][]*packet.Publish{}, complete: map[string]bool{}}
	if ack := q.r.Connect("s", false); ack.ReasonCode != 0 {
		t.Fatalf("s on u3: CONNACK 0x%02x", byte(ack.ReasonCode))
	}
	q.r.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "e/#", QoS: 2}}})
	if _, ok := q.r.Read().(*packet.Suback); !ok {
		t.Fatal("s: expected SUBACK")
	}
	waitRecorded(t, u1, "s")
	waitIndexed(t, u1, "e/x", "u3")
	pub, _, _ := connect(t, u1.addr, "pub")
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		i := 0
		defer func() { done <- i }()
		for ; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			_, err := pub.Publish(ctx, &paho.Publish{Topic: "e/x", QoS: 2, Payload: []byte(fmt.Sprint("m", i))})
			cancel()
			if err != nil {
				t.Errorf("publish m%d: %v", i, err)
				return
			}
		}
	}()
	for len(q.got) < 40 {
		q.handle(t, q.r.Read())
	}
	q.r.Close()
	u3.n.Close()
	q.r, _ = reconnectRaw(t, u1.addr, "s")
	for len(q.got) < 80 {
		q.handle(t, q.r.Read())
	}
	close(stop)
	last := <-done
	for len(q.got) < last {
		q.handle(t, q.r.Read())
	}
	for pl, ps := range q.got {
		for _, p := range ps[1:] {
			if !p.Dup || p.PacketID != ps[0].PacketID {
				t.Errorf("%s delivered again as a new PUBLISH (ID %d, DUP %v; first ID %d)", pl, p.PacketID, p.Dup, ps[0].PacketID)
			}
		}
	}
}

// A node that stores and delivers a message from another node but does not
// confirm it in time (its store or the queue stream was slow) gets it
// again through the relay stream: that copy is not delivered a second
// time to the sessions that had the first.
func TestLateConfirmedMessageNotDeliveredTwice(t *testing.T) {
	t.Parallel()
	gs := newGatedStore()
	nodes := startNodes(t, 3, func(i int, b *broker.Broker) {
		if i == 2 {
			b.SetStore(gs)
		}
	})
	u1, u3 := nodes[0], nodes[2]
	s := dialRaw(t, u3.addr)
	if ack := s.Connect("s", false); ack.ReasonCode != 0 {
		t.Fatalf("s on u3: CONNACK 0x%02x", byte(ack.ReasonCode))
	}
	s.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "e/#", QoS: 2}}})
	if _, ok := s.Read().(*packet.Suback); !ok {
		t.Fatal("s: expected SUBACK")
	}
	waitRecorded(t, u1, "s")
	waitIndexed(t, u1, "e/x", "u3")
	waitInterest(t, u1, "e/x")
	pub, _, _ := connect(t, u1.addr, "pub")
	publish := func(payload string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "e/x", QoS: 2, Payload: []byte(payload)}); err != nil {
			t.Fatalf("publish %s: %v", payload, err)
		}
	}
	// readUntil answers what s receives, as a client completing QoS 2
	// flows does, until a PUBLISH of payload, and returns the PUBLISHes.
	var got []*packet.Publish
	readUntil := func(payload string) {
		t.Helper()
		for {
			switch p := s.Read().(type) {
			case *packet.Publish:
				got = append(got, p)
				s.Send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
				if string(p.Payload) == payload {
					return
				}
			case *packet.Ack:
				if p.Kind == packet.PUBREL {
					s.Send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
				}
			}
		}
	}

	// u3 stores the message only after u1 has given up waiting for its
	// confirmation and relayed it.
	gs.hold()
	relayed := u1.n.rel.relayed.Load()
	publish("once")
	if u1.n.rel.relayed.Load() == relayed {
		t.Fatal("the message was not relayed: u3 confirmed it although its store was held")
	}
	gs.release()
	readUntil("once")
	// Once the relayed copy has been handled (the work queue is empty),
	// a later message shows whatever came before it.
	brokertest.WaitFor(t, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := (*u1.n.rel.js.Load()).Stream(ctx, relayStream)
		if err != nil {
			return fmt.Errorf("the relayed copy was never handled: %w", err)
		}
		if info, err := st.Info(ctx); err == nil && info.State.Msgs != 0 {
			return fmt.Errorf("the relayed copy was never handled: %d left", info.State.Msgs)
		}
		return nil
	})
	publish("after")
	readUntil("after")
	for _, p := range got[1 : len(got)-1] {
		t.Errorf("s got %q again (packet ID %d, DUP %v; first ID %d)", p.Payload, p.PacketID, p.Dup, got[0].PacketID)
	}
}

// Operations reach the queue stream in the order they commit: a delivery
// queued by a publish whose commit was slow may come after the
// acknowledgement that sent it under a packet ID. The older change is
// dropped, so that the node recovering the session resends the delivery
// under that packet ID rather than as a new message.
func TestMirrorKeepsNewestChangeOfDelivery(t *testing.T) {
	t.Parallel()
	n := startSolo(t, false).n
	msg := store.Message{Topic: "o/x", Payload: []byte("m"), QoS: 2}
	put := func(rev uint64, packetID uint16, state byte) broker.MirrorOp {
		return broker.MirrorOp{ClientID: "c", Seq: 7, Rev: rev,
			Out: &broker.SnapshotDelivery{Msg: msg, QoS: 2, PacketID: packetID, State: state}}
	}
	// Sent under packet ID 9 (revision 2) before the change that queued
	// it (revision 1) is committed.
	n.MirrorDeliveries([]broker.MirrorOp{put(2, 9, 2)}, true)
	n.MirrorDeliveries([]broker.MirrorOp{put(1, 0, 0)}, true)
	// Removed (revision 4): a late put of it (revision 3) does not bring it back.
	n.MirrorDeliveries([]broker.MirrorOp{{ClientID: "c", Seq: 8, Rev: 4}}, true)
	late := put(3, 0, 0)
	late.Seq = 8
	n.MirrorDeliveries([]broker.MirrorOp{late}, true)
	n.flushRemovals()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _, err := n.loadQueued(ctx, "c", "solo")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range out {
		got = append(got, fmt.Sprintf("packet ID %d state %d", d.PacketID, d.State))
	}
	if len(out) != 1 || out[0].PacketID != 9 || out[0].State != 2 {
		t.Fatalf("recovered %v, want only the delivery sent under packet ID 9 (state 2)", got)
	}
}
