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
