package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// remoteBroker serves a broker on a memory store whose sessions have a
// window of one and a queue of two, and connects a persistent subscriber
// to r/# that reads nothing until the test says so.
func remoteBroker(t *testing.T) (*Broker, *rawClient) {
	t.Helper()
	lim := config.Default().Limits
	lim.MaxInflight, lim.MaxQueued = 1, 2
	b := New(lim, nil)
	b.SetFlow(config.SlowConsumer{Timeout: time.Hour, Policy: "disconnect"}, nil, 0)
	lb := servedBroker(t, b, memory.New(), nil)
	s := dialRaw(t, lb.addr, packet.V5)
	s.connect("sub", true, 60)
	s.mustSend(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "r/#", QoS: 1}}})
	if _, ok := s.read().(*packet.Suback); !ok {
		t.Fatal("no SUBACK")
	}
	return b, s
}

func remoteMsg(i int) *session.Message {
	return &session.Message{Topic: "r/1", Payload: fmt.Appendf(nil, "m%d", i), QoS: 1}
}

// drain reads and acknowledges want messages of the subscriber's, then
// waits until its session holds none.
func drain(t *testing.T, b *Broker, s *rawClient, want int) {
	t.Helper()
	for range want {
		p, ok := s.read().(*packet.Publish)
		if !ok {
			t.Fatalf("want PUBLISH, got %T", p)
		}
		s.mustSend(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	}
	waitFor(t, "every message acknowledged", func() bool { return pending(b) == 0 })
}

func pending(b *Broker) int {
	inflight, queued := b.QueueTotals()
	return inflight + queued
}

// A message from another node whose sender waits for this node's
// confirmation is kept past a full session's bound, and its confirmation
// waits (Room) until the session has room: its publisher on the other
// node is held, as a local one would be, and nothing is dropped. One that
// a session drops all the same (past the held safety net) is reported, so
// that it is not confirmed.
func TestInjectBatchHoldsConfirmationUntilRoom(t *testing.T) {
	b, s := remoteBroker(t)
	asked := []bool{true}
	var held []*Room
	const n = 100 // far past four times the queue's bound of 2
	for i := range n {
		stored, replicated, _, rooms, _ := b.InjectBatch([]*session.Message{remoteMsg(i)}, asked)
		if !stored || !replicated {
			t.Fatalf("message %d: stored %v, replicated %v", i, stored, replicated)
		}
		if rooms != nil {
			if rooms[0].Overflow {
				t.Fatalf("message %d dropped", i)
			}
			held = append(held, rooms[0])
		}
	}
	if d := b.Stats.Dropped.Load(); d != 0 {
		t.Fatalf("%d messages dropped", d)
	}
	// One in the window and two queued find room; the others wait.
	if len(held) != n-2 {
		t.Fatalf("%d confirmations wait for room, want %d", len(held), n-2)
	}
	done := make(chan bool, len(held))
	stop := make(chan struct{})
	defer close(stop)
	for _, r := range held {
		go func() { done <- r.Wait(stop, time.Hour, func() {}) }()
	}
	select {
	case <-done:
		t.Fatal("a confirmation went out while the session was full")
	default:
	}
	drain(t, b, s, n)
	for range held {
		if !<-done {
			t.Fatal("a wait for room gave up")
		}
	}

	// Past the held safety net (64 times the bound), a delivery is
	// dropped: that message must not be confirmed.
	overflow := 0
	for i := range session.HeldLimit*2 + 10 {
		_, _, _, rooms, _ := b.InjectBatch([]*session.Message{remoteMsg(i)}, asked)
		if rooms != nil && rooms[0].Overflow {
			overflow++
		}
	}
	if d := b.Stats.Dropped.Load(); overflow == 0 || uint64(overflow) != d {
		t.Fatalf("%d messages reported dropped, %d dropped", overflow, d)
	}
}

// A relayed message (its publisher acknowledged when the relay stream
// took it) is not given to a session past its hard limit, which would
// drop it: the session is named for the caller to offer it again later,
// and takes it once it has room.
func TestInjectRelayedLeavesFullSession(t *testing.T) {
	b, s := remoteBroker(t)
	// No confirmation asked for: kept past the bound (their senders are
	// told to pause), and dropped (overflow) past the safety net of 64
	// times it.
	for i := 0; b.Stats.Dropped.Load() == 0; i++ {
		b.InjectBatch([]*session.Message{remoteMsg(i)}, nil)
	}
	before := pending(b)
	safe, missing, full := b.InjectRelayed(remoteMsg(-1), []string{"sub", "gone"})
	if !safe || len(missing) != 1 || missing[0] != "gone" || len(full) != 1 || full[0] != "sub" {
		t.Fatalf("safe %v, missing %v, full %v; want the full session named", safe, missing, full)
	}
	if pending(b) != before || b.Stats.Dropped.Load() != 1 {
		t.Fatalf("the relayed message reached the full session: %d held (was %d), %d dropped", pending(b), before, b.Stats.Dropped.Load())
	}
	drain(t, b, s, before)
	if safe, _, full := b.InjectRelayed(remoteMsg(-1), []string{"sub"}); !safe || len(full) != 0 {
		t.Fatalf("safe %v, full %v once drained", safe, full)
	}
	drain(t, b, s, 1) // the relayed message
}

// A QoS 1 message from another node that no confirmation was asked for
// (for a clean session here) is kept past the bound of a session it finds
// full, not dropped past four times it, and the session is reported full
// with its filters, for the sender to be told; its Room opens once the
// subscriber has taken the backlog.
func TestInjectBatchKeepsUnconfirmedAndReportsFull(t *testing.T) {
	b, s := remoteBroker(t)
	const n = 50 // far past four times the queue's bound of 2
	var full []Full
	for i := range n {
		_, _, _, rooms, f := b.InjectBatch([]*session.Message{remoteMsg(i)}, nil)
		if rooms != nil {
			t.Fatalf("message %d: rooms %v for a message no confirmation was asked for", i, rooms)
		}
		full = append(full, f...)
	}
	if d := b.Stats.Dropped.Load(); d != 0 {
		t.Fatalf("%d messages dropped", d)
	}
	// One in the window and two queued find room; the others find it full.
	if len(full) != n-2 || full[0].ClientID != "sub" {
		t.Fatalf("%d deliveries reported the session full, want %d", len(full), n-2)
	}
	if fs := b.FlowFilters("sub"); len(fs) != 1 || fs[0] != "r/#" {
		t.Fatalf("filters %v, want [r/#]", fs)
	}
	done := make(chan bool, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() { done <- full[0].Room.Wait(stop, time.Hour, func() {}) }()
	select {
	case <-done:
		t.Fatal("room while the session was full")
	default:
	}
	drain(t, b, s, n)
	if !<-done {
		t.Fatal("the wait for room gave up")
	}
}
