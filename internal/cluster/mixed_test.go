package cluster

// Mixed versions: batches go out only while every node reads them
// (batch.go). A node with lease.oldWire acts as a release before
// batches: its heartbeat does not say it reads them, it drops those it
// gets, as an unknown version, and takes featuresLine for a node's name.

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/freeport"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/store/memory"
)

// startMixed starts a cluster of len(old) nodes, <prefix>1 and on, node
// i acting as a release before batches if old[i].
func startMixed(t *testing.T, prefix string, old []bool) []*testNode {
	t.Helper()
	routes := freeport.Addrs(t, "127.0.0.1", len(old))
	log := testLogger()
	name := fmt.Sprintf("mixed-%d", time.Now().UnixNano())
	var out []*testNode
	for i := range old {
		b := broker.New(config.Default().Limits, log)
		b.SetStore(memory.New())
		n, err := New(Config{Name: name, Node: fmt.Sprintf("%s%d", prefix, i+1), Listen: routes[i], Peers: peersOf(routes, i), Logger: log}, b)
		if err != nil {
			t.Fatal(err)
		}
		n.lease.oldWire = old[i] // before Run: its first heartbeat says so
		if err := b.Restore(); err != nil {
			t.Fatal(err)
		}
		if err := n.Run(); err != nil {
			t.Fatal(err)
		}
		addr, stopListening := brokertest.Listen(t, b.HandleConn)
		tn := &testNode{b: b, n: n, addr: addr}
		t.Cleanup(func() { stopListening(); tn.stop() })
		out = append(out, tn)
	}
	for _, tn := range out {
		waitReady(t, tn)
	}
	return out
}

// cleanSub connects a clean MQTT 3.1.1 subscriber to filter at QoS 1.
func cleanSub(t *testing.T, addr, id, filter string) *raw {
	t.Helper()
	c := dialRaw(t, addr)
	if ack := c.Connect(id, true); ack.ReasonCode != 0 {
		t.Fatalf("%s refused: %v", id, ack.ReasonCode)
	}
	c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, QoS: 1}}})
	if _, ok := c.Read().(*packet.Suback); !ok {
		t.Fatalf("%s: no SUBACK", id)
	}
	return c
}

// burst has pubs publishers on tn each send count messages on topics
// under root, QoS 0 and 1 alternating, while tn's outbox is held, so that
// batches form; it returns once the outbox holds them all, the batches
// among them counted, and the release that lets the outbox publish them.
// The publishers' PUBACKs are read by the returned wait.
func burst(t *testing.T, tn *testNode, root, id string, pubs, count int) (batches int, release func(), acked func()) {
	t.Helper()
	o := &tn.n.out
	o.flushMu.Lock()
	held := true
	release = func() {
		if held {
			held = false
			o.flushMu.Unlock()
		}
	}
	t.Cleanup(release)
	var cs []*raw
	for p := range pubs {
		c := dialRaw(t, tn.addr)
		if ack := c.Connect(fmt.Sprintf("%s%d", id, p), true); ack.ReasonCode != 0 {
			t.Fatalf("publisher refused: %v", ack.ReasonCode)
		}
		var ps []packet.Packet
		for i := range count {
			topic := fmt.Sprintf("%s/%d/%c", root, p, 'a'+i/20%3)
			ps = append(ps, &packet.Publish{Topic: topic, QoS: byte(i % 2), PacketID: uint16(i + 1), Payload: fmt.Appendf(nil, "%d %d", p, i)})
		}
		c.Send(ps...)
		cs = append(cs, c)
	}
	waitFor(t, "every message in the outbox", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		k := 0
		batches = 0
		for _, b := range o.batches {
			k += b.n
			if b.n > 1 {
				batches++
			}
		}
		return k == pubs*count
	})
	acked = func() {
		t.Helper()
		for p, c := range cs {
			for got := 0; got < count/2; got++ {
				pk, err := c.Next(brokertest.Patience(t))
				if err != nil {
					t.Fatalf("publisher %d: %d of %d PUBACKs: %v", p, got, count/2, err)
				}
				if a, ok := pk.(*packet.Ack); !ok || a.Kind != packet.PUBACK {
					t.Fatalf("publisher %d: got %T, want a PUBACK", p, pk)
				}
			}
		}
	}
	return batches, release, acked
}

// expectInOrder reads pubs*count messages on c, acknowledging QoS 1
// ones, each publisher's in order.
func expectInOrder(t *testing.T, c *raw, who string, pubs, count int) {
	t.Helper()
	next := make([]int, pubs)
	for got := 0; got < pubs*count; got++ {
		pk, err := c.Next(brokertest.Patience(t))
		if err != nil {
			t.Fatalf("%s: after %d of %d messages (next per publisher %v): %v", who, got, pubs*count, next, err)
		}
		pub, ok := pk.(*packet.Publish)
		if !ok {
			t.Fatalf("%s: got %T", who, pk)
		}
		if pub.QoS > 0 {
			c.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID})
		}
		var p, i int
		if _, err := fmt.Sscanf(string(pub.Payload), "%d %d", &p, &i); err != nil || p < 0 || p >= pubs {
			t.Fatalf("%s: unexpected payload %q", who, pub.Payload)
		}
		if i != next[p] {
			t.Fatalf("%s: publisher %d: got message %d, expected %d", who, p, i, next[p])
		}
		next[p]++
	}
}

// A node of a release before batches among three: messages forwarded in
// batches' worth go out one by one, and its clean subscriber, like the
// new node's, gets every QoS 0 and QoS 1 message, in each publisher's
// order. Without the check, it dropped every batch.
func TestOldNodeGetsEveryMessage(t *testing.T) {
	t.Parallel()
	nodes := startMixed(t, "v", []bool{false, false, true})
	u1, u2, u3 := nodes[0], nodes[1], nodes[2]
	newSub := cleanSub(t, u2.addr, "vnew", "vm/#")
	oldSub := cleanSub(t, u3.addr, "vold", "vm/#")
	for _, topic := range []string{"vm/0/a", "vm/1/b"} {
		waitInterest(t, u1, topic)
	}
	// The old node counts the new ones alive and hears them (its lease
	// holds through them), featuresLine a name among those they hear.
	waitFor(t, "the old node hearing both new nodes", func() bool {
		return len(u3.n.livePeers()) == 2 && u3.n.leaseValid()
	})

	const pubs, count = 2, 150
	batches, release, acked := burst(t, u1, "vm", "vpub", pubs, count)
	if batches == 0 {
		t.Fatal("no batch formed in the held outbox")
	}
	if u1.n.batching() {
		t.Fatal("batching with a node of a release before batches in the cluster")
	}
	release()
	expectInOrder(t, oldSub, "old node's subscriber", pubs, count)
	expectInOrder(t, newSub, "new node's subscriber", pubs, count)
	acked()
	if k := u1.n.out.batched.Load(); k != 0 {
		t.Errorf("%d batches sent with a node of a release before batches in the cluster", k)
	}
}

// Among nodes that all read batches, batches are sent, and a clean
// subscriber gets every message in each publisher's order.
func TestNewNodesSendBatches(t *testing.T) {
	t.Parallel()
	nodes := startMixed(t, "w", []bool{false, false})
	u1, u2 := nodes[0], nodes[1]
	s := cleanSub(t, u2.addr, "wsub", "wm/#")
	waitInterest(t, u1, "wm/0/a")
	const pubs, count = 2, 100
	// Heartbeats late on a busy machine stop batches for a moment (a
	// peer not heard within liveWithin): a round published then goes
	// unbatched, and another is tried.
	for round := 0; u1.n.out.batched.Load() == 0; round++ {
		if round == 5 {
			t.Fatal("5 rounds of batches' worth, none sent as a batch")
		}
		waitFor(t, "batching", u1.n.batching)
		batches, release, acked := burst(t, u1, "wm", fmt.Sprintf("wpub%d-", round), pubs, count)
		if batches == 0 {
			t.Fatal("no batch formed in the held outbox")
		}
		release()
		expectInOrder(t, s, "subscriber", pubs, count)
		acked()
	}
}

// The verdict, heartbeat by heartbeat: batches only while every peer,
// as many as configured, has said it reads them within liveWithin.
func TestBatchVerdict(t *testing.T) {
	n := &Node{cfg: Config{Node: "a", Peers: []string{"127.0.0.1:1", "127.0.0.1:2"}}, log: slog.New(slog.DiscardHandler)}
	n.lease.init()
	beat := func(from string, batches bool, hears ...string) {
		lines := append([]string{from}, hears...)
		if batches {
			lines = append(lines, featuresLine)
		}
		n.heardBeat(&nats.Msg{Data: []byte(strings.Join(lines, "\n"))})
	}
	check := func(step string, want bool) {
		t.Helper()
		if got := n.batching(); got != want {
			t.Fatalf("%s: batching = %v, want %v", step, got, want)
		}
	}
	check("no peer heard", false)
	beat("b", true, "a")
	check("one of two peers heard", false)
	beat("c", false, "a")
	check("a peer that does not read batches", false)
	beat("c", true, "a", "b")
	check("both peers read batches", true)
	if n.lease.hears["c"][featuresLine] || !n.lease.hears["c"]["b"] {
		t.Fatalf("c hears %v", n.lease.hears["c"])
	}
	beat("d", false)
	check("a node not configured that does not read batches", false)
	n.lease.base = n.lease.base.Add(-liveWithin) // the clock moves on: d falls silent, and so do b and c
	beat("b", true, "a")
	check("c not heard within liveWithin", false)
	beat("c", true, "a")
	check("b and c heard again", true)
	n.lease.base = n.lease.base.Add(-liveWithin)
	check("no heartbeat within liveWithin", false)

	old := &Node{cfg: Config{Node: "o", Peers: []string{"127.0.0.1:1"}}, log: slog.New(slog.DiscardHandler)}
	old.lease.init()
	old.lease.oldWire = true
	old.heardBeat(&nats.Msg{Data: []byte("a\no\n" + featuresLine)})
	if old.batching() {
		t.Fatal("a node of a release before batches batching")
	}
}

// A heartbeat read as a release before batches read it: the first line
// is the sender, the others the nodes it hears; featuresLine comes last
// and cannot be a node's name.
func TestBeatReadableByOldRelease(t *testing.T) {
	n := &Node{cfg: Config{Node: "a", Peers: []string{"127.0.0.1:1", "127.0.0.1:2"}}, log: slog.New(slog.DiscardHandler)}
	n.lease.init()
	n.heardBeat(&nats.Msg{Data: []byte("b\na")})
	n.heardBeat(&nats.Msg{Data: []byte("c\na")})
	names := strings.Split(string(n.beat()), "\n") // as the release before batches splits it
	if names[0] != "a" || len(names) != 4 || names[3] != featuresLine {
		t.Fatalf("heartbeat lines %q", names)
	}
	if hears := strings.Join(names[1:3], ","); hears != "b,c" && hears != "c,b" {
		t.Fatalf("heard %q", hears)
	}
	if !strings.Contains(featuresLine, " ") {
		t.Fatal("featuresLine could be a node's name")
	}
}
