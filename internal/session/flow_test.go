package session

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/starling-mqtt/starling/internal/packet"
)

func qos1(topic, payload string) Delivery {
	return Delivery{Msg: &Message{Topic: topic, Payload: []byte(payload), QoS: 1}, QoS: 1}
}

// A connected session whose window and queue are full keeps what it is
// given (the broker holds the publisher back), up to HardLimit times its
// bound; only past that does it drop, counted apart.
func TestHoldKeepsPastBound(t *testing.T) {
	s := New("c", Limits{MaxQueued: 3, MaxInflight: 1})
	s.Attach(nil, Link{Version: packet.V311, ReceiveMax: 1}, t0)
	for i := range 1 + 3*HardLimit + 2 {
		s.Deliver(nil, qos1("t", fmt.Sprint(i)), t0)
	}
	if s.Queued() != 3*HardLimit || s.Stats.DroppedOverflow != 2 || s.Stats.DroppedQueueFull != 0 {
		t.Fatalf("queued %d, overflow drops %d, queue-full drops %d; want %d, 2, 0", s.Queued(), s.Stats.DroppedOverflow, s.Stats.DroppedQueueFull, 3*HardLimit)
	}
	if !s.Full() {
		t.Fatal("a queue past its bound does not say it is full")
	}
	s.Detach()
	if s.Full() {
		t.Fatal("an offline session says it is full: nothing may wait for it")
	}
}

func TestOverflowPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy Overflow
		first  string // oldest payload left in the queue
	}{{DropNewest, "1"}, {DropOldest, "4"}} {
		s := New("c", Limits{MaxQueued: 3, MaxInflight: 1})
		s.Overflow = tc.policy
		s.Attach(nil, Link{Version: packet.V311, ReceiveMax: 1}, t0)
		for i := range 7 { // 0 goes out, 1..6 meet a queue of 3
			s.Deliver(nil, qos1("t", fmt.Sprint(i)), t0)
		}
		if s.Queued() != 3 || s.Stats.DroppedPolicy != 3 {
			t.Fatalf("policy %d: queued %d, dropped %d; want 3 and 3", tc.policy, s.Queued(), s.Stats.DroppedPolicy)
		}
		var first string
		s.Pending(func(d *Delivery) {
			if first == "" && d.Msg.Payload[0] != '0' {
				first = string(d.Msg.Payload)
			}
		})
		if first != tc.first {
			t.Fatalf("policy %d: oldest queued %q, want %q", tc.policy, first, tc.first)
		}
	}
}

// A latest-value delivery replaces the queued one of its topic, keeping its
// place; other topics are untouched, and the newest of each is sent.
func TestConflation(t *testing.T) {
	total := new(atomic.Int64)
	s := New("c", Limits{MaxQueued: 100, Total: total})
	s.Attach(nil, Link{Version: packet.V311, ReceiveMax: 1}, t0)
	var sent []packet.Packet
	for i := range 10 {
		for _, topic := range []string{"a", "b"} {
			d := qos1(topic, fmt.Sprint(i))
			d.Latest = true
			if p := s.Deliver(nil, d, t0); p != nil {
				sent = append(sent, p)
			}
		}
	}
	plain := qos1("c", "x")
	s.Deliver(nil, plain, t0)
	s.Deliver(nil, plain, t0)
	if s.Queued() != 4 || s.Stats.Conflated != 17 {
		t.Fatalf("queued %d, conflated %d; want 4 (b, a, c, c) and 17", s.Queued(), s.Stats.Conflated)
	}
	if total.Load() != int64(s.QueuedBytes()) {
		t.Fatalf("shared total %d, queue bytes %d", total.Load(), s.QueuedBytes())
	}
	got := []string{}
	for len(sent) > 0 {
		p := pub(t, sent[0])
		got = append(got, p.Topic+"="+string(p.Payload))
		sent, _ = s.Puback(nil, p.PacketID, t0)
	}
	want := "[a=0 b=9 a=9 c=x c=x]"
	if fmt.Sprint(got) != want {
		t.Fatalf("sent %v, want %s", got, want)
	}
	if total.Load() != 0 {
		t.Fatalf("shared total %d after draining, want 0", total.Load())
	}
}

// A queue bound of 0 holds nothing for long: what the window cannot take
// waits in the queue (the publisher is held meanwhile), and the session
// has room again once the window takes it.
func TestZeroQueueBound(t *testing.T) {
	s := New("c", Limits{MaxQueued: 0, MaxInflight: 1})
	s.Attach(nil, Link{Version: packet.V311, ReceiveMax: 1}, t0)
	if s.Full() {
		t.Fatal("an empty session with a queue bound of 0 says it is full")
	}
	p := s.Deliver(nil, qos1("t", "a"), t0)
	b := qos1("t", "b")
	b.Held = true // from a publisher the broker holds back
	s.Deliver(nil, b, t0)
	if !s.Full() || s.Queued() != 1 {
		t.Fatalf("full %v, queued %d; want true and 1", s.Full(), s.Queued())
	}
	next, _ := s.Puback(nil, pub(t, p).PacketID, t0)
	if len(next) != 1 || s.Full() {
		t.Fatalf("after PUBACK: %d sent, full %v; want 1 and false", len(next), s.Full())
	}
}

// The shared total counts connected sessions only: an offline session's
// queue waits for its client, and holding publishers would not drain it.
func TestTotalCountsConnectedOnly(t *testing.T) {
	total := new(atomic.Int64)
	s := New("c", Limits{MaxQueued: 100, Total: total})
	s.Deliver(nil, qos1("t", "offline"), t0) // 8 bytes, queued offline
	if total.Load() != 0 {
		t.Fatalf("total %d with the session offline, want 0", total.Load())
	}
	s.Attach(nil, Link{Version: packet.V311, ReceiveMax: 1}, t0) // sends it: window 1
	s.Deliver(nil, qos1("t", "queued"), t0)
	if total.Load() != int64(s.QueuedBytes()) || total.Load() == 0 {
		t.Fatalf("total %d connected, queue %d bytes", total.Load(), s.QueuedBytes())
	}
	s.Detach()
	if total.Load() != 0 {
		t.Fatalf("total %d after detach, want 0", total.Load())
	}
	s.Attach(nil, Link{Version: packet.V311, ReceiveMax: 1}, t0)
	s.Discard()
	if total.Load() != 0 {
		t.Fatalf("total %d after discard, want 0", total.Load())
	}
}
