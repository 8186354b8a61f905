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
)

// A will its node published reaches a session once, even if the node that
// takes the lost node's sessions over publishes it again from the record.
// The will leaves its node at once, and the record drops it only after
// the local commit, through the record's write loop: a node killed in
// between left a record with the will, which the takeover published a
// second time, to the same sessions, as a new message (a QoS 2 message
// twice, without DUP). Now the will has its name from when it was set, in
// the record too, and the second publication is the same message, which
// a session takes once, persistent or not.
func TestWillPublishedAgainFromItsRecordReachesASessionOnce(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	watch, ack, recv := connect(t, b.addr, "will-watch")
	if watch == nil {
		t.Fatalf("watcher refused (CONNACK %+v)", ack)
	}
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	if _, err := watch.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "wl/#", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	// A session that is not persistent, on the same node.
	clean, _, err := brokertest.TryDialPaho(t, b.addr, "will-clean", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := clean.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "wl/#", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, a, "wl/dies", "u2")
	waitInterest(t, a, "wl/dies")

	var r *brokertest.Raw
	retry(t, func() error {
		// Retried: a node whose heartbeats starved on a loaded machine
		// refuses connects until it hears a majority again.
		r = brokertest.Dial(t, a.addr, packet.V5)
		r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, ClientID: "dies",
			Will: &packet.Will{Topic: "wl/dies", QoS: 2, Payload: []byte("gone")}})
		if ack, ok := r.Read().(*packet.Connack); !ok || ack.ReasonCode != packet.Success {
			r.Close()
			return fmt.Errorf("connect with a will refused: %+v", ack)
		}
		return nil
	})
	// The record of the session, with its will, as the takeover of a node
	// killed after publishing the will would read it.
	var rec *broker.SessionSnapshot
	brokertest.WaitFor(t, func() error {
		b.n.ownersMu.Lock()
		m, ok := b.n.owners[key("dies")]
		b.n.ownersMu.Unlock()
		if !ok || m.rec.Node != "u1" || m.rec.Session == nil || m.rec.Session.Session.Will == nil {
			return fmt.Errorf("the record of dies's will never reached u2")
		}
		rec = m.rec.Session
		return nil
	})

	r.Close() // no DISCONNECT: u1 publishes the will
	expectAll(t, recv, []string{"gone"})
	expectAll(t, clean.Recv, []string{"gone"})
	b.b.AdoptOrphan(rec, false, false) // the takeover's publication
	// Published on u2 after the takeover's, to the same session: it
	// arrives after the will's second copy, if that arrives at all.
	if _, err := b.b.Publish("wl/after", []byte("after"), 1, false); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(brokertest.Patience(t))
	for _, s := range []struct {
		name string
		recv chan *paho.Publish
	}{{"persistent", recv}, {"not persistent", clean.Recv}} {
	wait:
		for {
			select {
			case m := <-s.recv:
				switch string(m.Payload) {
				case "gone":
					t.Fatalf("the will reached the %s session a second time, published again from its record", s.name)
				case "after":
					break wait
				}
			case <-timeout:
				t.Fatalf("the message published after the takeover never reached the %s session", s.name)
			}
		}
	}
}
