package cluster

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
)

// outNode is a node with an outbox and nothing else: enqueue fills it,
// nothing publishes it.
func outNode() *Node {
	n := &Node{instance: 7, log: slog.New(slog.DiscardHandler)}
	n.out.init()
	n.rel.init(n.instance)
	return n
}

// published decodes what n's outbox would publish, in order: per NATS
// message, its subject and the messages it carries.
func published(t *testing.T, n *Node) (subjs []string, msgs [][]*session.Message) {
	t.Helper()
	for _, b := range n.out.batches {
		var data []byte
		if b.msg != nil {
			if b.n != 0 {
				t.Fatalf("a confirmed message shares its NATS message with %d others", b.n)
			}
			data = b.msg.Data
		} else {
			data = b.payload(nil)
		}
		if len(data) > maxBatchBytes && b.n > 1 {
			t.Fatalf("a batch of %d messages is %d bytes, above %d", b.n, len(data), maxBatchBytes)
		}
		if b.n > maxBatchMsgs {
			t.Fatalf("a batch of %d messages, above %d", b.n, maxBatchMsgs)
		}
		var ms []*session.Message
		var lastSeq uint64
		if err := forEachEncoded(data, func(e []byte) {
			h, m, err := decodeMessage(e)
			if err != nil {
				t.Fatal(err)
			}
			ms = append(ms, m)
			lastSeq = h.seq
		}); err != nil {
			t.Fatal(err)
		}
		if h, ok := lastName(data); !ok || h.seq != lastSeq || h.instance != n.instance {
			t.Fatalf("lastName = %+v, %v; the last message is %d", h, ok, lastSeq)
		}
		subjs, msgs = append(subjs, b.subj), append(msgs, ms)
	}
	return subjs, msgs
}

// Messages forwarded in one wake-up go out in batches per subject, each
// publisher's in the order it forwarded them across subjects and batch
// boundaries, none lost or repeated; a batch stays below its bounds, a
// message too large for one goes alone, and so does a confirmed message.
func TestOutboxBatchesKeepEachPublishersOrder(t *testing.T) {
	n := outNode()
	rng := rand.New(rand.NewPCG(1, 2))
	const pubs, count = 5, 3000
	big := bytes.Repeat([]byte("x"), maxBatchBytes)
	var sent [pubs][]string
	for i := range count {
		p := rng.IntN(pubs)
		m := &session.Message{Topic: fmt.Sprintf("t/%d", rng.IntN(4)), Payload: fmt.Appendf(nil, "%d-%d", p, len(sent[p])),
			Publisher: "pub" + strconv.Itoa(p)}
		switch {
		case i%500 == 7:
			m.Payload = append(fmt.Appendf(nil, "%d-%d ", p, len(sent[p])), big...) // too large for a batch
		case i%3 == 0:
			m.Topic = "t/one" // many messages on one subject: split at maxBatchMsgs
		}
		var msg *nats.Msg
		var targets map[string][]string
		subj := topicSubject(m.Topic)
		if i%97 == 5 {
			m.QoS = 1
			targets = map[string][]string{"other": {"c"}}
			msg = nats.NewMsg(subj)
		}
		seq := n.name(m)
		f := n.enqueue(m, seq, subj, targets, msg)
		if (f != nil) != (msg != nil) {
			t.Fatalf("message %d: forwarded %v with confirmation headers %v", i, f != nil, msg != nil)
		}
		sent[p] = append(sent[p], string(m.Payload))
	}
	subjs, msgs := published(t, n)
	var got [pubs][]string
	total := 0
	for i, ms := range msgs {
		for _, m := range ms {
			if topicSubject(m.Topic) != subjs[i] {
				t.Fatalf("a message on %s published on %s", m.Topic, subjs[i])
			}
			p, _ := strconv.Atoi(strings.TrimPrefix(m.Publisher, "pub"))
			got[p] = append(got[p], string(m.Payload))
			total++
		}
	}
	for p := range pubs {
		if len(got[p]) != len(sent[p]) {
			t.Fatalf("publisher %d: %d messages out of %d sent", p, len(got[p]), len(sent[p]))
		}
		for i := range sent[p] {
			if got[p][i] != sent[p][i] {
				t.Fatalf("publisher %d: message %d is %.20q, sent %.20q", p, i, got[p][i], sent[p][i])
			}
		}
	}
	if len(msgs) >= total {
		t.Errorf("%d messages went out in %d NATS messages: not batched", total, len(msgs))
	}
	t.Logf("%d messages in %d NATS messages", total, len(msgs))
}

// Publishers that keep to a topic each, interleaved, fill their batches.
func TestOutboxFillsBatches(t *testing.T) {
	n := outNode()
	const pubs, each = 8, 1000
	for i := range each {
		for p := range pubs {
			m := &session.Message{Topic: fmt.Sprintf("f/%d", p), Payload: fmt.Appendf(nil, "%d", i), Publisher: strconv.Itoa(p)}
			n.enqueue(m, n.name(m), topicSubject(m.Topic), nil, nil)
		}
	}
	_, msgs := published(t, n)
	if want := pubs * ((each + maxBatchMsgs - 1) / maxBatchMsgs); len(msgs) != want {
		t.Fatalf("%d messages in %d NATS messages, want %d", pubs*each, len(msgs), want)
	}
}

// A message a publisher forwards on a subject whose open batch comes
// before the batch of its previous message opens a new batch rather than
// overtaking that message.
func TestOutboxNoOvertaking(t *testing.T) {
	n := outNode()
	send := func(pub, topic, payload string) {
		m := &session.Message{Topic: topic, Payload: []byte(payload), Publisher: pub}
		n.enqueue(m, n.name(m), topicSubject(m.Topic), nil, nil)
	}
	send("p1", "a", "p1-1") // batch 0: a
	send("p0", "b", "p0-1") // batch 1: b
	send("p0", "a", "p0-2") // batch 0 comes before p0-1: batch 2
	send("p1", "a", "p1-2") // p1's last is batch 0... but a's open batch is now 2: joins it
	subjs, msgs := published(t, n)
	var order []string
	for _, ms := range msgs {
		for _, m := range ms {
			order = append(order, string(m.Payload))
		}
	}
	want := []string{"p1-1", "p0-1", "p0-2", "p1-2"}
	if fmt.Sprint(order) != fmt.Sprint(want) || len(subjs) != 3 {
		t.Fatalf("published %v in %d NATS messages; want %v in 3", order, len(subjs), want)
	}
}

// A batch cut short or with a bad length is an error, never a panic nor
// a message made up.
func TestBatchDecodeRejectsDamage(t *testing.T) {
	n := outNode()
	for i := range 3 {
		m := &session.Message{Topic: "d", Payload: []byte{byte(i)}, Publisher: "p"}
		n.enqueue(m, n.name(m), "stl.m.d", nil, nil)
	}
	data := n.out.batches[0].payload(nil)
	for cut := 1; cut < len(data); cut++ {
		var bad []byte
		bad = append(bad, data[:cut]...)
		forEachEncoded(bad, func(e []byte) {
			if _, _, err := decodeMessage(e); err == nil && cut < len(data) && !bytes.Contains(data[:cut], e) {
				t.Fatalf("cut at %d: decoded a message not in the batch", cut)
			}
		})
	}
	if err := forEachEncoded([]byte{wireVersionBatch, 0xff, 0xff, 0xff, 0x0f}, func([]byte) {}); err == nil {
		t.Fatal("a batch entry longer than the batch was accepted")
	}
}

// Many publishers on one node flooding QoS 1 messages on several topics
// without waiting for their acknowledgements (batches form), some of them
// for a persistent session on the other node (confirmed, sent alone): a
// subscriber there gets every message once, in each publisher's order.
func TestCrossNodeBatchedFanInInOrder(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2)
	u1, u2 := nodes[0], nodes[1]

	parkSession(t, u2.addr, "bpark", "bo/p")
	waitIndexed(t, u1, "bo/p", u2.n.Name())
	recv := dialRaw(t, u2.addr)
	if ack := recv.Connect("bsub", true); ack.ReasonCode != 0 {
		t.Fatalf("subscriber refused: %v", ack.ReasonCode)
	}
	recv.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bo/#", QoS: 1}}})
	if _, ok := recv.Read().(*packet.Suback); !ok {
		t.Fatal("no SUBACK")
	}
	waitInterest(t, u1, "bo/0/a")
	waitInterest(t, u1, "bo/p")

	// Fewer than the subscriber's queue bound, which it does not reach
	// while it reads.
	const pubs, count = 4, 200
	// The sending goroutine waits until every message is in the outbox,
	// as it would behind a busy CPU, so that batches form.
	u1.n.out.flushMu.Lock()
	held := true
	defer func() {
		if held {
			u1.n.out.flushMu.Unlock()
		}
	}()
	for p := range pubs {
		c := dialRaw(t, u1.addr)
		if ack := c.Connect(fmt.Sprintf("bpub%d", p), true); ack.ReasonCode != 0 {
			t.Fatalf("publisher refused: %v", ack.ReasonCode)
		}
		var ps []packet.Packet
		for i := range count {
			// Runs on one topic (which batch), then another.
			topic := fmt.Sprintf("bo/%d/%c", p, 'a'+i/20%3)
			if i%10 == 9 {
				topic = "bo/p"
			}
			ps = append(ps, &packet.Publish{Topic: topic, QoS: 1, PacketID: uint16(i + 1), Payload: fmt.Appendf(nil, "%d %d", p, i)})
		}
		c.Send(ps...) // all at once: the socket buffers take them
	}

	waitFor(t, "every message in the outbox", func() bool {
		o := &u1.n.out
		o.mu.Lock()
		defer o.mu.Unlock()
		k := 0
		for _, b := range o.batches {
			k += b.n
			if b.msg != nil {
				k++
			}
		}
		return k == pubs*count
	})
	// Batches go out only while u2 has said, within liveWithin, that it
	// reads them.
	waitFor(t, "batching", u1.n.batching)
	held = false
	u1.n.out.flushMu.Unlock()

	next := make([]int, pubs)
	for got := 0; got < pubs*count; got++ {
		pk, err := recv.Next(brokertest.Patience(t))
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", got, pubs*count, err)
		}
		pub, ok := pk.(*packet.Publish)
		if !ok {
			t.Fatalf("got %T", pk)
		}
		recv.Send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID})
		var p, i int
		if _, err := fmt.Sscanf(string(pub.Payload), "%d %d", &p, &i); err != nil || p < 0 || p >= pubs {
			t.Fatalf("unexpected payload %q", pub.Payload)
		}
		if i != next[p] {
			t.Fatalf("publisher %d: got message %d, expected %d", p, i, next[p])
		}
		next[p]++
	}
	if u1.n.out.batched.Load() == 0 {
		t.Error("no NATS message carried more than one message")
	}
}
