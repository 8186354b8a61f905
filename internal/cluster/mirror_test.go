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

// A persistent session's queued messages survive the loss of its node: the
// client reconnects to another node at once and gets every message that
// had reached the lost node, and both nodes' copies leave the stream once
// they are delivered.
func TestQueuedMessagesRecoveredFromLostNode(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	u1, u3 := nodes[0], nodes[2]

	parkSession(t, u3.addr, "q", "m/#")
	// w, connected on u3 too, gets a message only once the operation that
	// queued it for q there has been replicated.
	w, _, wrecv := connect(t, u3.addr, "w")
	sub(t, w, "m/#")
	pub, _, _ := connect(t, u1.addr, "pub")
	publish := func(payload string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "m/x", QoS: 1, Payload: []byte(payload)}); err != nil {
			t.Fatalf("publish %s: %v", payload, err)
		}
	}
	// Until u3's interest has reached u1.
	for deadline := time.Now().Add(20 * time.Second); ; {
		publish("probe")
		select {
		case <-wrecv:
		case <-time.After(200 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("w never got a probe")
			}
			continue
		}
		break
	}
	const n = 50
	for i := range n {
		publish(fmt.Sprint(i))
	}
	for got := 0; got < n; {
		select {
		case m := <-wrecv:
			if string(m.Payload) != "probe" {
				got++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("w got %d of %d", got, n)
		}
	}

	// u3 leaves the cluster at once, its session and queue still in its
	// broker: to the others it is a lost node.
	waitRecorded(t, u1, "q")
	u3.n.Close()

	var recv chan *paho.Publish
	tries := retry(t, func() error {
		c, ack, r := connect(t, u1.addr, "q")
		if c == nil {
			return fmt.Errorf("q refused on u1 (last CONNACK %+v)", ack)
		}
		if !ack.SessionPresent {
			t.Fatal("q on u1: session present = false")
		}
		recv = r
		return nil
	}) - 1
	got := map[string]bool{}
	for len(got) < n {
		select {
		case m := <-recv:
			if string(m.Payload) != "probe" {
				got[string(m.Payload)] = true
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("q got %d of %d messages queued on the lost node (after %d refused connects)", len(got), n, tries)
		}
	}
	for i := range n {
		if !got[fmt.Sprint(i)] {
			t.Fatalf("q: message %d lost", i)
		}
	}

	// Delivered and acknowledged: neither copy's deliveries stay in the
	// stream (u1 keeps the session's memory there, memory.go).
	for _, owner := range []string{"u3", "u1"} {
		subj := queueSubject("q", owner)
		brokertest.WaitFor(t, func() error {
			puts, err := queuedPuts(u1.n.queue(), subj)
			if err != nil {
				return err
			}
			if puts > 0 {
				return fmt.Errorf("%d delivery entries of q under %s still in the stream", puts, owner)
			}
			return nil
		})
	}
}

// A QoS 2 message received on a node that is then lost is not delivered
// twice when its publisher resends it to another node: the packet ID
// awaiting PUBREL was replicated before the PUBREC.
func TestQoS2ReceivedIDSurvivesLostNode(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	u1, u3 := nodes[0], nodes[2]
	s, _, recv := connect(t, u1.addr, "s")
	sub(t, s, "d/#")
	probe, _, _ := connect(t, u3.addr, "probe")
	for deadline := time.Now().Add(20 * time.Second); ; {
		probe.Publish(context.Background(), &paho.Publish{Topic: "d/probe", Payload: []byte("probe")})
		select {
		case <-recv:
		case <-time.After(200 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("s never got a probe from u3")
			}
			continue
		}
		break
	}

	p := dialRaw(t, u3.addr)
	if ack := p.Connect("p", false); ack.ReasonCode != 0 {
		t.Fatalf("p on u3: CONNACK 0x%02x", byte(ack.ReasonCode))
	}
	pub := &packet.Publish{QoS: 2, PacketID: 7, Topic: "d/x", Payload: []byte("once")}
	p.Send(pub)
	if a, ok := p.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREC || a.PacketID != 7 {
		t.Fatalf("p: got %+v, want PUBREC 7", a)
	}
	for {
		select {
		case m := <-recv:
			if string(m.Payload) != "once" {
				continue // a late probe
			}
		case <-time.After(10 * time.Second):
			t.Fatal("s did not get the QoS 2 message")
		}
		break
	}

	// The session's record reaches the bucket shortly after the connect;
	// a node lost before that leaves nothing to recover.
	waitRecorded(t, u1, "p")
	u3.n.Close()
	p.Close()
	p2, ack := reconnectRaw(t, u1.addr, "p")
	if !ack.SessionPresent {
		t.Fatal("p on u1: session present = false")
	}
	// The publisher never saw the PUBREC as far as it knows: it resends.
	dup := *pub
	dup.Dup = true
	p2.Send(&dup)
	if a, ok := p2.Read().(*packet.Ack); !ok || a.Kind != packet.PUBREC || a.PacketID != 7 {
		t.Fatalf("p2: got %+v, want PUBREC 7", a)
	}
	p2.Send(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
	if a, ok := p2.Read().(*packet.Ack); !ok || a.Kind != packet.PUBCOMP || a.PacketID != 7 {
		t.Fatalf("p2: got %+v, want PUBCOMP 7", a)
	}
	select {
	case m := <-recv:
		t.Fatalf("s got %q again: the QoS 2 message was delivered twice", m.Payload)
	case <-time.After(time.Second):
	}
}

// With cluster.local_queues a node keeps its sessions' queues to itself;
// by default they are in the stream.
func TestLocalQueuesNotMirrored(t *testing.T) {
	t.Parallel()
	for _, local := range []bool{false, true} {
		t.Run(fmt.Sprint("local=", local), func(t *testing.T) {
			tn := startSolo(t, local)
			b, n := tn.b, tn.n
			b.Adopt(&broker.SessionSnapshot{Session: store.Session{ClientID: "off", Version: packet.V5, ExpiryInterval: 300},
				Subs: []store.Subscription{{Filter: "o/#", Options: packet.Subscription{Filter: "o/#", QoS: 1}}}})
			if _, err := b.Publish("o/x", []byte("kept"), 1, false); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			out, _, err := n.loadQueued(ctx, "off", "solo")
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{false: 1, true: 0}[local]; len(out) != want {
				t.Fatalf("%d deliveries in the stream, want %d", len(out), want)
			}
		})
	}
}
