package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// A session evicted from a node that was out of touch, and installed
// there again when its client comes back (handed back by the node that
// took it over from the queue stream, without the session's memory of
// what it took), does not take again a message its client acknowledged
// before the eviction, when a late copy of it arrives (relayed: this
// node's confirmation was lost with the fault), whether the other node
// queued it for the session before handing it back or it comes after. A
// message the session still held at the eviction is taken as usual.
func TestEvictedSessionKeepsWhatItsClientHad(t *testing.T) {
	b := New(config.Default().Limits, nil)
	lb := servedBroker(t, b, memory.New(), nil)
	sub := []store.Subscription{{Filter: "r/#", Options: packet.Subscription{Filter: "r/#", QoS: 2}}}
	b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "s", Version: 5, ExpiryInterval: 600}, Subs: sub})
	acked, held := session.Origin{Instance: 9, Seq: 7}, session.Origin{Instance: 9, Seq: 8}
	copyOf := func(o session.Origin) *session.Message {
		return &session.Message{Topic: "r/1", Payload: []byte(fmt.Sprint(o.Seq)), QoS: 2, Origin: o}
	}

	c := dialRaw(t, lb.addr, packet.V5)
	c.connect("s", false, 600)
	for _, o := range []session.Origin{acked, held} {
		if safe, missing := b.InjectTo(copyOf(o), []string{"s"}); !safe || len(missing) != 0 {
			t.Fatalf("InjectTo: safe %v, missing %v", safe, missing)
		}
	}
	first, ok := c.read().(*packet.Publish)
	if !ok || string(first.Payload) != "7" {
		t.Fatalf("got %+v, want the first message", first)
	}
	if second, ok := c.read().(*packet.Publish); !ok || string(second.Payload) != "8" {
		t.Fatalf("got %+v, want the second message", second)
	}
	// The first one completed, the second left unacknowledged.
	c.mustSend(&packet.Ack{Kind: packet.PUBREC, PacketID: first.PacketID})
	c.ack(packet.PUBREL, first.PacketID)
	c.mustSend(&packet.Ack{Kind: packet.PUBCOMP, PacketID: first.PacketID})
	// The reader takes a connection's packets in order: once the PINGREQ
	// is answered, the PUBCOMP was taken.
	c.ping()
	if inflight, queued := b.QueueTotals(); inflight != 1 || queued != 0 {
		t.Fatalf("%d inflight, %d queued: the PUBCOMP was not taken", inflight, queued)
	}

	if out := b.EvictSession("s"); len(out) != 1 || out[0].Msg.Origin != store.Origin(held) {
		t.Fatalf("evicted session held %+v, want the unacknowledged message alone", out)
	}
	// Handed back by the node that took it over, which had queued late
	// copies of both meanwhile.
	queuedCopy := func(o session.Origin) SnapshotDelivery {
		return SnapshotDelivery{Msg: store.Message{Topic: "r/1", Payload: []byte(fmt.Sprint(o.Seq)), QoS: 2, Origin: store.Origin(o)},
			QoS: 2, Filter: "r/#"}
	}
	b.Adopt(&SessionSnapshot{Session: store.Session{ClientID: "s", Version: 5, ExpiryInterval: 600}, Subs: sub,
		Out: []SnapshotDelivery{queuedCopy(acked), queuedCopy(held)}})
	if _, queued := b.QueueTotals(); queued != 1 {
		t.Fatalf("%d messages queued once handed back, want 1: the one the client had not acknowledged", queued)
	}
	for _, o := range []session.Origin{acked, held} {
		if safe, missing, full := b.InjectRelayed(copyOf(o), []string{"s"}); !safe || len(missing)+len(full) != 0 {
			t.Fatalf("InjectRelayed: safe %v, missing %v, full %v", safe, missing, full)
		}
	}
	if _, queued := b.QueueTotals(); queued != 1 {
		t.Fatalf("%d messages queued after the return, want 1: the one the client had not acknowledged", queued)
	}
	if n := b.Stats.Repeats.Load(); n != 3 {
		t.Fatalf("%d copies skipped, want 3 (the acknowledged one handed back and relayed, the other relayed)", n)
	}
}

// The evicted memory forgets oldest first, by age and to make room, holds
// exactly what was acknowledged, and lets everything go once stale; many
// evictions at once (a node's every taken-over session) cost no scan of
// what is kept per eviction.
func TestEvictedMemoryBounds(t *testing.T) {
	origins := func(from, n int) []session.Origin {
		os := make([]session.Origin, n)
		for i := range os {
			os[i] = session.Origin{Instance: 1, Seq: uint64(from + i)}
		}
		return os
	}
	t0 := time.Unix(1000, 0)
	var e evictedMemory

	// Exactly the acknowledged origins, no spare capacity.
	rem := origins(0, 100)
	e.keep("a", rem, map[session.Origin]bool{rem[0]: true}, t0)
	if s := e.by["a"]; len(s.origins) != 99 || cap(s.origins) != 99 || e.n != 99 {
		t.Fatalf("kept %d origins (capacity %d, counted %d), want 99", len(s.origins), cap(s.origins), e.n)
	}

	// Made room for: the oldest goes first, whatever the map's order.
	for i := range 8 {
		e.keep(fmt.Sprintf("c%d", i), origins(0, 1), nil, t0.Add(time.Duration(i)*time.Second))
	}
	e.keep("big", origins(0, evictedMax-99), nil, t0.Add(10*time.Second))
	if _, ok := e.by["a"]; ok {
		t.Fatal("the oldest session was kept past the bound")
	}
	if e.n > evictedMax {
		t.Fatalf("%d origins held, bound %d", e.n, evictedMax)
	}
	for i := range 8 { // the oldest alone made room enough
		if _, ok := e.by[fmt.Sprintf("c%d", i)]; !ok {
			t.Fatalf("c%d forgotten as well as the oldest", i)
		}
	}

	// Past evictedFor, a take of anyone lets everything go.
	if got := e.take("nobody", t0.Add(evictedFor+11*time.Second)); got != nil {
		t.Fatalf("take of an unknown client: %v", got)
	}
	if e.n != 0 || len(e.by) != 0 || e.order != nil {
		t.Fatalf("after evictedFor: %d origins, %d sessions, %d in order; want none", e.n, len(e.by), len(e.order))
	}

	// Kept again: the later keep wins, the earlier entry is stale.
	e.keep("r", origins(0, 3), nil, t0)
	e.keep("r", origins(10, 2), nil, t0.Add(time.Second))
	if got := e.take("r", t0.Add(2*time.Second)); len(got) != 2 || got[0].Seq != 10 {
		t.Fatalf("take after two keeps: %v, want the second's 2", got)
	}
	if e.n != 0 || len(e.order) != 0 {
		t.Fatalf("after take: %d origins, %d in order", e.n, len(e.order))
	}

	// 100,000 sessions evicted at once: the list stays one entry each.
	for i := range 100_000 {
		e.keep(fmt.Sprintf("m%d", i), origins(i, 1), nil, t0)
	}
	if len(e.by) != 100_000 || len(e.order) != 100_000 || e.n != 100_000 {
		t.Fatalf("%d sessions, %d in order, %d origins; want 100,000 each", len(e.by), len(e.order), e.n)
	}
}
