package session

import (
	"bytes"
	"sync"
	"testing"

	"github.com/starling-mqtt/starling/internal/packet"
)

// TestPooledMessageLifetime checks that a pooled message stays whole while
// any delivery holds it, goes back to its pool after the last one, and
// never does once pinned; and that unpooled messages ignore all of it.
func TestPooledMessageLifetime(t *testing.T) {
	m := NewPooled()
	m.Topic, m.Payload = "a/b", []byte("payload")
	o1, o2 := newOutgoing(), newOutgoing()
	m.Ref()
	o1.Msg = m
	m.Ref()
	o2.Msg = m
	var buf []byte
	var err error
	if buf, err = o1.AppendPacket(buf, packet.V311); err != nil {
		t.Fatal(err)
	}
	m.Unref() // the publisher's
	o1.Release()
	if m.Topic != "a/b" || string(m.Payload) != "payload" {
		t.Fatalf("message cleared while a delivery holds it: %q %q", m.Topic, m.Payload)
	}
	if buf2, err := o2.AppendPacket(nil, packet.V311); err != nil || string(buf2) != string(buf) {
		t.Fatalf("second delivery encoded % X, %v; want % X", buf2, err, buf)
	}
	o2.Release()
	if m.Topic != "" || m.Payload != nil || m.enc[0][0].Load() != nil {
		t.Fatalf("last reference dropped, message not recycled: %q", m.Topic)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a reference dropped twice did not panic")
			}
		}()
		m.Unref()
	}()

	p := NewPooled()
	p.Topic = "kept"
	p.Pin()
	p.Unref()
	if p.Topic != "kept" {
		t.Fatal("pinned message recycled")
	}

	u := &Message{Topic: "plain"}
	u.Ref()
	u.Unref()
	u.Unref()
	if u.Topic != "plain" {
		t.Fatal("unpooled message recycled")
	}
}

// TestSoleDeliveryEncodedDirectly: the only delivery of a pooled message
// is encoded straight into the write buffer, byte for byte what the
// shared encoding gives, and leaves no shared encoding behind; a message
// with more than one delivery gets its shared one.
func TestSoleDeliveryEncodedDirectly(t *testing.T) {
	props := packet.Properties{ContentType: "text/plain", UserProperties: []packet.UserProperty{{Key: "k", Value: "v"}}}
	for _, v := range []byte{packet.V311, packet.V5} {
		for _, o := range []Outgoing{{QoS: 0}, {QoS: 0, Retain: true}, {QoS: 1, PacketID: 0x1234, Dup: true}, {QoS: 2, PacketID: 7, Retain: true}} {
			m := NewPooled()
			m.Topic, m.Payload, m.Props = "a/b", []byte("payload"), props
			want, err := packet.Append([]byte("prefix"), (&Outgoing{Msg: &Message{Topic: m.Topic, Payload: m.Payload, Props: props}, QoS: o.QoS, PacketID: o.PacketID, Dup: o.Dup, Retain: o.Retain}).Publish(v), v)
			if err != nil {
				t.Fatal(err)
			}
			sole := newOutgoing()
			*sole = o
			m.Ref()
			sole.Msg = m
			m.Unref() // the publisher's: sole is the only delivery
			got, err := sole.AppendPacket([]byte("prefix"), v)
			if err != nil || string(got) != string(want) {
				t.Fatalf("v%d %+v: sole delivery encoded % X, %v; want % X", v, o, got, err, want)
			}
			if !m.noWire(v, o.QoS > 0) {
				t.Fatalf("v%d %+v: sole delivery built a shared encoding", v, o)
			}
			sole.Release()

			m = NewPooled()
			m.Topic, m.Payload, m.Props = "a/b", []byte("payload"), props
			two := newOutgoing()
			*two = o
			m.Ref()
			two.Msg = m
			got, err = two.AppendPacket([]byte("prefix"), v) // the publisher still holds m
			if err != nil || string(got) != string(want) {
				t.Fatalf("v%d %+v: shared delivery encoded % X, %v; want % X", v, o, got, err, want)
			}
			if m.noWire(v, o.QoS > 0) {
				t.Fatalf("v%d %+v: a message with two holders has no shared encoding", v, o)
			}
			m.Unref()
			two.Release()
		}
	}
}

// TestFirstDeliveryEmbedded: a pooled message's first delivery is its own
// embedded Outgoing, later ones come from the pool; released in either
// order, the message stays whole while anything holds it and is recycled,
// embedded delivery cleared, after the last.
func TestFirstDeliveryEmbedded(t *testing.T) {
	for _, firstOut := range []bool{true, false} {
		m := NewPooled()
		m.Topic, m.Payload = "a/b", []byte("payload")
		o1 := outgoingFor(m)
		m.Ref()
		o1.Msg = m
		o2 := outgoingFor(m)
		m.Ref()
		o2.Msg = m
		if o1 != &m.first || o2 == &m.first {
			t.Fatalf("first delivery %p, second %p; want the message's own (%p) first only", o1, o2, &m.first)
		}
		m.Unref() // the router's
		a, b := o1, o2
		if !firstOut {
			a, b = o2, o1
		}
		a.Release()
		if got, err := b.AppendPacket(nil, packet.V311); err != nil || !bytes.Contains(got, []byte("payload")) || m.Topic != "a/b" {
			t.Fatalf("after one release: encoded %q, %v; topic %q", got, err, m.Topic)
		}
		b.Release()
		if m.Topic != "" || m.firstTaken.Load() || m.first.Msg != nil {
			t.Fatalf("not recycled after the last release: topic %q, first taken %v", m.Topic, m.firstTaken.Load())
		}
	}
	// A message made any other way has no embedded delivery.
	u := &Message{Topic: "plain"}
	if o := outgoingFor(u); o == &u.first {
		t.Fatal("unpooled message used its embedded delivery")
	}
}

// Deliveries of one message made on two goroutines at once (the router,
// and a sampled delivery's timer) take its embedded Outgoing once between
// them; under -race the claim itself is checked too.
func TestFirstDeliveryClaimedOnce(t *testing.T) {
	for range 100 {
		m := NewPooled()
		m.Topic, m.Payload = "a/b", []byte("payload")
		var got [2]*Outgoing
		var wg sync.WaitGroup
		for i := range got {
			m.Ref()
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i] = outgoingFor(m)
				got[i].Msg = m
			}()
		}
		wg.Wait()
		if (got[0] == &m.first) == (got[1] == &m.first) {
			t.Fatalf("embedded Outgoing taken by %v and %v; want exactly one", got[0] == &m.first, got[1] == &m.first)
		}
		got[0].Release()
		got[1].Release()
		m.Unref()
	}
}
