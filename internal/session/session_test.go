package session

import (
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

var t0 = time.Unix(1_700_000_000, 0)

func msg(topic string, qos byte) *Message {
	return &Message{Topic: topic, Payload: []byte("x"), QoS: qos}
}

func pub(t *testing.T, p packet.Packet) *packet.Publish {
	t.Helper()
	o, ok := p.(*Outgoing)
	if !ok {
		t.Fatalf("got %T, want *Outgoing", p)
	}
	// The shared-bytes encoding must equal the plain encoder's output.
	for _, v := range []byte{packet.V311, packet.V5} {
		fast, err := o.AppendPacket(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := packet.Append(nil, o.Publish(v), v)
		if err != nil {
			t.Fatal(err)
		}
		if string(fast) != string(plain) {
			t.Fatalf("v%d: AppendPacket % x, packet.Append % x", v, fast, plain)
		}
	}
	return o.Publish(packet.V5)
}

func TestQoS1WindowAndQueue(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10, MaxInflight: 10})
	s.Attach(nil, Link{Version: packet.V5, ReceiveMax: 2}, t0)
	var ids []uint16
	for i := 0; i < 4; i++ {
		p := s.Deliver(nil, Delivery{Msg: msg("t", 1), QoS: 1}, t0)
		if i < 2 {
			ids = append(ids, pub(t, p).PacketID)
		} else if p != nil {
			t.Fatalf("delivery %d sent beyond receive maximum 2", i)
		}
	}
	if s.Inflight() != 2 || s.Queued() != 2 {
		t.Fatalf("inflight %d queued %d, want 2 and 2", s.Inflight(), s.Queued())
	}
	if ids[0] == 0 || ids[0] == ids[1] {
		t.Fatalf("packet IDs %v must be non-zero and distinct", ids)
	}
	next, ok := s.Puback(nil, ids[0], t0)
	if !ok || len(next) != 1 {
		t.Fatalf("PUBACK freed %d, ok=%v; want one queued message sent", len(next), ok)
	}
	if _, ok := s.Puback(nil, ids[0], t0); ok {
		t.Fatal("second PUBACK for the same ID accepted")
	}
}

func TestQoS0NotQueuedOffline(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	if p := s.Deliver(nil, Delivery{Msg: msg("t", 0), QoS: 0}, t0); p != nil || s.Queued() != 0 {
		t.Fatalf("QoS 0 to an offline session: sent %v queued %d", p, s.Queued())
	}
}

func TestQueueOverflowDropsNewest(t *testing.T) {
	s := New("c", Limits{MaxQueued: 2})
	for i := 0; i < 5; i++ {
		s.Deliver(nil, Delivery{Msg: &Message{Topic: "t", Payload: []byte{byte('a' + i)}, QoS: 1}, QoS: 1}, t0)
	}
	if s.Queued() != 2 || s.Stats.DroppedQueueFull != 3 {
		t.Fatalf("queued %d dropped %d, want 2 and 3", s.Queued(), s.Stats.DroppedQueueFull)
	}
	pkts := s.Attach(nil, Link{Version: packet.V311, ReceiveMax: 65535}, t0)
	if len(pkts) != 2 || string(pub(t, pkts[0]).Payload) != "a" || string(pub(t, pkts[1]).Payload) != "b" {
		t.Fatalf("resumed %d packets, want the two oldest in order", len(pkts))
	}
}

// The queued-bytes bound drops the newest message like the count bound, and
// the bytes are given back as the queue drains, is revoked or is taken.
func TestQueueBytesBound(t *testing.T) {
	s := New("c", Limits{MaxQueued: 100, MaxQueuedBytes: 25})
	m := func(p string) Delivery {
		return Delivery{Msg: &Message{Topic: "t", Payload: []byte(p), QoS: 1}, QoS: 1}
	}
	for _, p := range []string{"123456789", "123456789", "123456789", "12345"} {
		s.Deliver(nil, m(p), t0) // 10 bytes each with the topic, then 6
	}
	if s.Queued() != 2 || s.QueuedBytes() != 20 || s.Stats.DroppedQueueFull != 2 {
		t.Fatalf("queued %d (%d bytes) dropped %d, want 2 (20 bytes) and 2", s.Queued(), s.QueuedBytes(), s.Stats.DroppedQueueFull)
	}
	s.Deliver(nil, m("123"), t0) // 4 bytes fit after the 10-byte ones were refused
	seq := s.Accepted()
	if s.QueuedBytes() != 24 {
		t.Fatalf("queued bytes %d, want 24", s.QueuedBytes())
	}
	s.Revoke(seq)
	s.Requeue(nil, Delivery{Msg: &Message{Topic: "t", Payload: []byte("shared"), QoS: 1}, QoS: 1, Group: "g"})
	if s.QueuedBytes() != 27 { // requeued whatever the bound
		t.Fatalf("queued bytes %d after revoke and requeue, want 27", s.QueuedBytes())
	}
	if ds := s.TakeShared(nil); len(ds) != 1 || s.QueuedBytes() != 20 {
		t.Fatalf("took %d shared, %d bytes left; want 1 and 20", len(ds), s.QueuedBytes())
	}
	pkts := s.Attach(nil, Link{Version: packet.V5, ReceiveMax: 1}, t0)
	if len(pkts) != 1 || s.QueuedBytes() != 10 {
		t.Fatalf("sent %d, %d bytes left queued; want 1 and 10", len(pkts), s.QueuedBytes())
	}
	s.Puback(nil, pub(t, pkts[0]).PacketID, t0)
	if s.QueuedBytes() != 0 || s.Queued() != 0 {
		t.Fatalf("queue not drained: %d (%d bytes)", s.Queued(), s.QueuedBytes())
	}
}

func TestResendWithDupAndPubrel(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	s.Attach(nil, Link{Version: packet.V311, ReceiveMax: 65535}, t0)
	p1 := pub(t, s.Deliver(nil, Delivery{Msg: msg("a", 1), QoS: 1}, t0))
	p2 := pub(t, s.Deliver(nil, Delivery{Msg: msg("b", 2), QoS: 2}, t0))
	rel, _, ok := s.Pubrec(nil, p2.PacketID, packet.Success, t0)
	if !ok || rel.(*packet.Ack).Kind != packet.PUBREL {
		t.Fatalf("PUBREC gave %v ok=%v", rel, ok)
	}
	s.Detach()
	pkts := s.Attach(nil, Link{Version: packet.V311, ReceiveMax: 65535}, t0)
	if len(pkts) != 2 {
		t.Fatalf("resumed %d packets, want 2", len(pkts))
	}
	r := pub(t, pkts[0])
	if !r.Dup || r.PacketID != p1.PacketID || r.Topic != "a" {
		t.Fatalf("resent %+v, want DUP PUBLISH id %d", r, p1.PacketID)
	}
	if a, ok := pkts[1].(*packet.Ack); !ok || a.Kind != packet.PUBREL || a.PacketID != p2.PacketID {
		t.Fatalf("second resumed packet %+v, want PUBREL %d", pkts[1], p2.PacketID)
	}
	if _, ok := s.Pubcomp(nil, p2.PacketID, t0); !ok || s.Inflight() != 1 {
		t.Fatalf("PUBCOMP not accepted or inflight %d", s.Inflight())
	}
}

func TestInboundQoS2ExactlyOnce(t *testing.T) {
	s := New("c", Limits{ReceiveMax: 2})
	s.Attach(nil, Link{Version: packet.V5}, t0)
	if first, err := s.ReceiveQoS2(nil, 7, false); !first || err != nil {
		t.Fatalf("first receive: %v %v", first, err)
	}
	if first, err := s.ReceiveQoS2(nil, 7, true); first || err != nil {
		t.Fatalf("retransmission treated as new: %v %v", first, err)
	}
	s.ReceiveQoS2(nil, 8, false)
	if _, err := s.ReceiveQoS2(nil, 9, false); err != ErrReceiveMaximum {
		t.Fatalf("third unreleased QoS 2: err %v, want ErrReceiveMaximum", err)
	}
	if !s.Release(nil, 7) || s.Release(nil, 7) {
		t.Fatal("PUBREL bookkeeping wrong")
	}
	if first, _ := s.ReceiveQoS2(nil, 7, false); !first {
		t.Fatal("ID reused after PUBREL must be a new message")
	}
}

func TestMessageExpiry(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	m := msg("t", 1)
	m.Expiry = t0.Add(10 * time.Second)
	s.Deliver(nil, Delivery{Msg: m, QoS: 1}, t0)
	pkts := s.Attach(nil, Link{Version: packet.V5, ReceiveMax: 10}, t0.Add(4*time.Second))
	p := pub(t, pkts[0])
	if p.Properties.MessageExpiry == nil || *p.Properties.MessageExpiry != 6 {
		t.Fatalf("message expiry forwarded as %v, want 6 s remaining", p.Properties.MessageExpiry)
	}
	s2 := New("c", Limits{MaxQueued: 10})
	s2.Deliver(nil, Delivery{Msg: m, QoS: 1}, t0)
	if pkts := s2.Attach(nil, Link{Version: packet.V5, ReceiveMax: 10}, t0.Add(11*time.Second)); len(pkts) != 0 || s2.Stats.DroppedExpired != 1 {
		t.Fatalf("expired message sent (%d) or not counted (%d)", len(pkts), s2.Stats.DroppedExpired)
	}
}

func TestMaxPacketSizeDrops(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	s.Attach(nil, Link{Version: packet.V5, ReceiveMax: 10, MaxPacketSize: 50}, t0)
	big := &Message{Topic: "t", Payload: make([]byte, 100), QoS: 1}
	if p := s.Deliver(nil, Delivery{Msg: big, QoS: 1}, t0); p != nil || s.Inflight() != 0 || s.Stats.DroppedTooLarge != 1 {
		t.Fatalf("too-large message: sent=%v inflight=%d dropped=%d", p != nil, s.Inflight(), s.Stats.DroppedTooLarge)
	}
	if p := s.Deliver(nil, Delivery{Msg: msg("t", 1), QoS: 1}, t0); p == nil {
		t.Fatal("small message after a dropped one not sent")
	}
}

func TestTopicAliasOutbound(t *testing.T) {
	s := New("c", Limits{})
	s.Attach(nil, Link{Version: packet.V5, ReceiveMax: 10, TopicAliasMax: 1}, t0)
	a := pub(t, s.Deliver(nil, Delivery{Msg: msg("one", 0)}, t0))
	b := pub(t, s.Deliver(nil, Delivery{Msg: msg("one", 0)}, t0))
	c := pub(t, s.Deliver(nil, Delivery{Msg: msg("two", 0)}, t0))
	if a.Topic != "one" || a.Properties.TopicAlias == nil || *a.Properties.TopicAlias != 1 {
		t.Fatalf("first publish %q alias %v", a.Topic, a.Properties.TopicAlias)
	}
	if b.Topic != "" || b.Properties.TopicAlias == nil || *b.Properties.TopicAlias != 1 {
		t.Fatalf("second publish topic %q alias %v, want alias only", b.Topic, b.Properties.TopicAlias)
	}
	if c.Topic != "two" || c.Properties.TopicAlias != nil {
		t.Fatalf("aliases beyond the maximum assigned: %q %v", c.Topic, c.Properties.TopicAlias)
	}
}

func TestTakeShared(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	s.Attach(nil, Link{Version: packet.V5, ReceiveMax: 1}, t0)
	s.Deliver(nil, Delivery{Msg: msg("t", 1), QoS: 1, Group: "g", Filter: "t"}, t0)
	s.Deliver(nil, Delivery{Msg: msg("t", 1), QoS: 1, Group: "g", Filter: "t"}, t0) // queued
	s.Deliver(nil, Delivery{Msg: msg("t", 1), QoS: 1}, t0)                          // queued, not shared
	ds := s.TakeShared(nil)
	if len(ds) != 2 || s.Inflight() != 0 || s.Queued() != 1 {
		t.Fatalf("took %d, inflight %d queued %d; want 2, 0, 1", len(ds), s.Inflight(), s.Queued())
	}
}

func TestRequeueGoesFirst(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	s.Deliver(nil, Delivery{Msg: &Message{Topic: "t", Payload: []byte("new"), QoS: 1}, QoS: 1}, t0)
	s.Requeue(nil, Delivery{Msg: &Message{Topic: "t", Payload: []byte("old"), QoS: 1}, QoS: 1})
	pkts := s.Attach(nil, Link{Version: packet.V311, ReceiveMax: 10}, t0)
	if len(pkts) != 2 || string(pub(t, pkts[0]).Payload) != "old" {
		t.Fatalf("requeued delivery not first: %d packets", len(pkts))
	}
}

// A PUBLISH already sent is resent on reconnect even if its message expired
// meanwhile: the client may hold its packet ID [MQTT-4.4.0-1].
func TestSentMessageResentAfterExpiry(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	s.Attach(nil, Link{Version: packet.V5, ReceiveMax: 10}, t0)
	m := msg("t", 2)
	m.Expiry = t0.Add(time.Second)
	first := pub(t, s.Deliver(nil, Delivery{Msg: m, QoS: 2}, t0))
	s.Detach()
	pkts := s.Attach(nil, Link{Version: packet.V5, ReceiveMax: 10}, t0.Add(time.Hour))
	if len(pkts) != 1 {
		t.Fatalf("resent %d packets, want 1", len(pkts))
	}
	p := pub(t, pkts[0])
	if p.PacketID != first.PacketID || !p.Dup || p.Properties.MessageExpiry == nil || *p.Properties.MessageExpiry != 1 {
		t.Fatalf("resent %+v, want DUP id %d with expiry clamped to 1", p, first.PacketID)
	}
}

// On reconnect the inflight messages are resent only as the new Receive
// Maximum allows [MQTT-3.3.4-7], oldest first, then the queue.
func TestResendRespectsNewReceiveMaximum(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	s.Attach(nil, Link{Version: packet.V5, ReceiveMax: 10}, t0)
	var ids []uint16
	for _, topic := range []string{"a", "b", "c"} {
		ids = append(ids, pub(t, s.Deliver(nil, Delivery{Msg: msg(topic, 1), QoS: 1}, t0)).PacketID)
	}
	s.Detach()
	s.Deliver(nil, Delivery{Msg: msg("d", 1), QoS: 1}, t0) // queued while offline
	pkts := s.Attach(nil, Link{Version: packet.V5, ReceiveMax: 1}, t0)
	if len(pkts) != 1 || pub(t, pkts[0]).Topic != "a" || !pub(t, pkts[0]).Dup {
		t.Fatalf("resent %d packets, want only the oldest, with DUP", len(pkts))
	}
	if p := s.Deliver(nil, Delivery{Msg: msg("e", 1), QoS: 1}, t0); p != nil {
		t.Fatal("new message overtook messages waiting to be resent")
	}
	order := []string{"b", "c", "d", "e"}
	id := ids[0]
	for _, want := range order {
		next, ok := s.Puback(nil, id, t0)
		if !ok || len(next) != 1 {
			t.Fatalf("PUBACK %d: ok=%v, %d packets, want 1", id, ok, len(next))
		}
		p := pub(t, next[0])
		if p.Topic != want {
			t.Fatalf("got %q, want %q", p.Topic, want)
		}
		id = p.PacketID
	}
}

// A held ID that arrives without DUP starts a new message (the record was
// stale); IDs restored from a store give way at the receive maximum.
func TestInboundQoS2StaleRecords(t *testing.T) {
	s := New("c", Limits{ReceiveMax: 2})
	s.Attach(nil, Link{Version: packet.V5}, t0)
	s.ReceiveQoS2(nil, 1, false)
	if first, _ := s.ReceiveQoS2(nil, 1, false); !first {
		t.Fatal("a non-DUP PUBLISH on a held ID must be a new message")
	}
	r := New("c", Limits{ReceiveMax: 2})
	r.RestoreInbound(10)
	r.RestoreInbound(11)
	r.Attach(nil, Link{Version: packet.V5}, t0)
	if first, err := r.ReceiveQoS2(nil, 12, false); !first || err != nil {
		t.Fatalf("restored IDs wedged the receive maximum: %v %v", first, err)
	}
	if first, _ := r.ReceiveQoS2(nil, 12, true); first {
		t.Fatal("a DUP resend of a held ID delivered again")
	}
}

// The outbound window is bounded by MaxQueuedBytes too: a large MaxInflight
// does not let a subscriber that acknowledges nothing hold more than that in
// flight (one message always goes), and acknowledgements free room again.
func TestInflightBytesBound(t *testing.T) {
	s := New("c", Limits{MaxQueued: 100, MaxQueuedBytes: 1000, MaxInflight: 100})
	s.Attach(nil, Link{Version: packet.V311, ReceiveMax: 65535}, t0)
	big := func() Delivery {
		return Delivery{Msg: &Message{Topic: "t", Payload: make([]byte, 299), QoS: 1}, QoS: 1} // 300 bytes
	}
	var sent []packet.Packet
	for range 10 {
		if p := s.Deliver(nil, big(), t0); p != nil {
			sent = append(sent, p)
		}
	}
	// 0, 300, 600 and 900 bytes in flight are below 1,000: four go out.
	if len(sent) != 4 || s.Inflight() != 4 {
		t.Fatalf("sent %d, inflight %d; want 4 and 4", len(sent), s.Inflight())
	}
	// Connected, the queue holds on past its bound (the broker holds the
	// publishers back instead) and says it is full.
	if s.Queued() != 6 || !s.Full() || s.Stats.DroppedQueueFull != 0 {
		t.Fatalf("queued %d, full %v, dropped %d; want 6, true and 0", s.Queued(), s.Full(), s.Stats.DroppedQueueFull)
	}
	// One acknowledgement leaves 900 bytes in flight: room for one more.
	next, ok := s.Puback(nil, pub(t, sent[0]).PacketID, t0)
	if !ok || len(next) != 1 || s.Inflight() != 4 || s.Queued() != 5 {
		t.Fatalf("after PUBACK: next %d, inflight %d, queued %d; want 1, 4, 5", len(next), s.Inflight(), s.Queued())
	}
	// A message larger than the bound still goes when nothing is in flight.
	s2 := New("c2", Limits{MaxQueued: 10, MaxQueuedBytes: 100, MaxInflight: 10})
	s2.Attach(nil, Link{Version: packet.V311, ReceiveMax: 65535}, t0)
	if p := s2.Deliver(nil, big(), t0); p == nil {
		t.Fatal("a message above the byte bound was not sent to an empty window")
	}
}
