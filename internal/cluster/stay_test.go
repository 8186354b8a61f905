package cluster

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/store"
)

// A takeover replays only the latest stay of a session on the lost node:
// the queue stream entries of an earlier stay there, whose removals and
// purge never landed (the stream unavailable while the node was cut
// off), are not taken for the session's. They were: a six-cycle
// partition run delivered QoS 2 messages a second time, 40 s after their
// first delivery, from entries of an earlier stay of the subscriber's
// session on its node, replayed by the majority's takeover. A session's
// delivery numbers start again at each stay, so nothing in the later
// stay's entries superseded them.
func TestTakeoverSkipsEarlierStayEntries(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	u1, u2 := nodes[0], nodes[1]
	const id = "stay-again"
	parkSession(t, u2.addr, id, "sa/#")

	// What an earlier stay on u1 left in the stream: a delivery whose
	// removal never landed.
	plantEarlierStay(t, u1.n, id, "sa/x")

	// The session's next stay on u1, handed over from u2.
	var c *paho.Client
	retry(t, func() error {
		var ack *paho.Connack
		if c, ack, _ = connect(t, u1.addr, id); c == nil {
			return fmt.Errorf("%s refused on u1 (%+v)", id, ack)
		}
		if !ack.SessionPresent {
			t.Fatalf("%s on u1: session not present", id)
		}
		return nil
	})
	c.Disconnect(&paho.Disconnect{})
	waitFor(t, "the session on u1 only", func() bool { return u1.b.HasSession(id) && !u2.b.HasSession(id) })
	waitFor(t, "u2 knowing u1's record of the session", func() bool {
		u2.n.ownersMu.Lock()
		defer u2.n.ownersMu.Unlock()
		m, ok := u2.n.owners[key(id)]
		return ok && m.rec.Node == "u1" && m.rec.Session != nil
	})
	// u1 is lost, and u2, the lowest-named live node, takes the session
	// over from the stream. (The session holds nothing on u1: a delivery
	// there would have u1's periodic purge remove what lies below it on
	// the subject, the earlier stay's entry too, as when the stream
	// answers; in the partition runs, the purges failed.)
	takeOverSkipsEarlier(t, u1, u2, id, "sa/x")
}

// A session started empty on a node (its client's first connect there)
// begins a stay too: a takeover does not replay what an earlier session
// of the same client left on the node's subject (its purge failed, say)
// as this session's.
func TestTakeoverSkipsEarlierSessionEntries(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	u1, u2 := nodes[0], nodes[1]
	const id = "start-again"
	plantEarlierStay(t, u1.n, id, "sn/x")
	parkSession(t, u1.addr, id, "sn/#")
	waitFor(t, "u2 knowing u1's record of the session", func() bool {
		u2.n.ownersMu.Lock()
		defer u2.n.ownersMu.Unlock()
		m, ok := u2.n.owners[key(id)]
		return ok && m.rec.Node == "u1" && m.rec.Session != nil && len(m.rec.Session.Subs) == 1
	})
	takeOverSkipsEarlier(t, u1, u2, id, "sn/x")
}

// plantEarlierStay writes to clientID's subject of node n what an earlier
// stay there left: a delivery on topic whose removal never landed.
func plantEarlierStay(t *testing.T, n *Node, clientID, topic string) {
	t.Helper()
	js, err := jetstream.New(n.pc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	left := queueEntry{C: []queueChange{{Seq: 1 << 40, Out: &broker.SnapshotDelivery{
		Msg: store.Message{Topic: topic, Payload: []byte("earlier"), QoS: 1}, QoS: 1, Filter: topic, State: session.StateQueued}}}}
	if _, err := js.Publish(ctx, queueSubject(clientID, n.cfg.Node), mustJSON(left)); err != nil {
		t.Fatal(err)
	}
}

// takeOverSkipsEarlier closes lost's node, waits for taker to take
// clientID's session over, and checks that the session gets what is
// published on topic afterwards and not what plantEarlierStay left.
func takeOverSkipsEarlier(t *testing.T, lost, taker *testNode, clientID, topic string) {
	t.Helper()
	lost.n.Close()
	waitFor(t, "the session taken over", func() bool { return taker.b.HasSession(clientID) })
	recv := reconnectUntil(t, taker.addr, clientID)
	pub, _, _ := connect(t, taker.addr, clientID+"-pub")
	if pub == nil {
		t.Fatal("publisher refused")
	}
	// Published after the takeover: it comes out after whatever the
	// takeover queued.
	publishAll(t, pub, topic, "last", 1)
	got := map[string]bool{}
	deadline := time.After(brokertest.Patience(t))
	for !got["last0"] {
		select {
		case m := <-recv:
			got[string(m.Payload)] = true
		case <-deadline:
			t.Fatalf("the session got %v and never last0", slices.Sorted(maps.Keys(got)))
		}
	}
	if got["earlier"] {
		t.Errorf("an earlier stay's entry replayed by the takeover (got %v)", slices.Sorted(maps.Keys(got)))
	}
}

// A session recovered from the queue stream remembers the messages its
// stay's entries delivered, those removed since (its client had them)
// too: a copy that reaches it again by another path (its publisher's
// resend under the same name, routed again on the node that recovered the
// publisher's session; a late relayed copy) is not delivered as a new
// message. Six kill-publisher-node cycles delivered a QoS 2 message twice
// without DUP that way: the moving subscriber, on the killed node, had
// completed it; its session, recovered from the stream on another node,
// took the publisher's resend as new. An earlier stay's entries are not
// remembered (they are not this session's).
func TestReplayRemembersDeliveredMessages(t *testing.T) {
	t.Parallel()
	n := startSolo(t, false).n
	put := func(rev, seq, name uint64) broker.MirrorOp {
		return broker.MirrorOp{ClientID: "r", Seq: seq, Rev: rev, Out: &broker.SnapshotDelivery{
			Msg: store.Message{Topic: "r/x", Payload: []byte("m"), QoS: 2, Origin: store.Origin{Instance: 5, Seq: name}}, QoS: 2}}
	}
	n.MirrorDeliveries([]broker.MirrorOp{put(1, 1, 100)}, true) // an earlier stay's
	n.markStay("r", nil)
	n.MirrorDeliveries([]broker.MirrorOp{put(2, 1, 101), put(3, 2, 102)}, true)
	n.MirrorDeliveries([]broker.MirrorOp{{ClientID: "r", Seq: 1, Rev: 4}}, true) // acknowledged
	n.flushRemovals()

	rec := &broker.SessionSnapshot{Session: store.Session{ClientID: "r", Version: 5, ExpiryInterval: 600}}
	var s *broker.SessionSnapshot
	retry(t, func() error {
		var err error
		if s, err = n.withQueued(rec, "solo", false); err != nil {
			return err
		}
		if len(s.Out) != 1 {
			return fmt.Errorf("%d deliveries recovered, want 1 (the removal not read yet?)", len(s.Out))
		}
		return nil
	})
	want := []session.Origin{{Instance: 5, Seq: 101}, {Instance: 5, Seq: 102}}
	if !slices.Equal(s.Taken, want) {
		t.Fatalf("recovered session remembers %v, want %v", s.Taken, want)
	}
}
