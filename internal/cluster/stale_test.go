package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/starling-mqtt/starling/internal/brokertest"
)

// A claim on a node that reads a stale record naming that node as the
// session's owner (a replica behind the bucket's leader, as a node back
// from a partition reads its own) while another node holds the session
// does not recover the session from the record and the queue stream: it
// confirms the read by compare-and-set, which fails, reads again and has
// the session handed over. Without that, both nodes held the session
// and delivered for it: a six-cycle partition run delivered QoS 2
// messages twice without DUP (the "owned here but not held" recovery,
// while the majority node still held a copy).
func TestStaleRecordDoesNotRecoverHeldSession(t *testing.T) {
	nodes := startNodes(t, 3)
	u1, u2 := nodes[0], nodes[1]
	const id = "stale-owner"
	parkSession(t, u1.addr, id, "st/#")
	waitRecorded(t, u1, id)
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	stale, err := u1.n.sessions.Get(ctx, key(id))
	if err != nil {
		t.Fatal(err)
	}
	var r record
	if err := json.Unmarshal(stale.Value(), &r); err != nil || r.Node != "u1" || r.Session == nil {
		t.Fatalf("record before the move: %+v (%v), want u1's with the session", r, err)
	}

	// The session moves to u2 (hand-over) and waits there, with messages
	// queued for it that only u2 has.
	var c *paho.Client
	retry(t, func() error {
		var ack *paho.Connack
		if c, ack, _ = connect(t, u2.addr, id); c == nil {
			return fmt.Errorf("%s refused on u2 (%+v)", id, ack)
		}
		if !ack.SessionPresent {
			t.Fatalf("%s on u2: session not present", id)
		}
		return nil
	})
	c.Disconnect(&paho.Disconnect{})
	waitFor(t, "the session on u2 only", func() bool { return u2.b.HasSession(id) && !u1.b.HasSession(id) })
	pub, _, _ := connect(t, u2.addr, "stale-pub")
	if pub == nil {
		t.Fatal("publisher refused on u2")
	}
	publishAll(t, pub, "st/x", "moved", 2)

	// u1's next read of the record answers with the one before the move.
	var fired atomic.Bool
	fault := func(clientID string, e jetstream.KeyValueEntry) jetstream.KeyValueEntry {
		if clientID == id && fired.CompareAndSwap(false, true) {
			return stale
		}
		return e
	}
	replicaReadFault.Store(&fault)
	defer replicaReadFault.Store(nil)
	var recv chan *paho.Publish
	var ack *paho.Connack
	retry(t, func() error {
		var c *paho.Client
		c, ack, recv = connect(t, u1.addr, id)
		if c == nil {
			return fmt.Errorf("%s refused on u1 (%+v)", id, ack)
		}
		return nil
	})
	replicaReadFault.Store(nil)
	if !fired.Load() {
		t.Fatal("the claim never read the stale record: the test no longer covers the window")
	}
	if u1.b.HasSession(id) && u2.b.HasSession(id) {
		t.Fatal("the session is held on u1, which recovered it from a stale record, and on u2, which held it")
	}
	if !ack.SessionPresent {
		t.Fatal("session present = false on u1")
	}
	got := map[string]bool{}
	deadline := time.After(brokertest.Patience(t))
	for !got["moved0"] || !got["moved1"] {
		select {
		case m := <-recv:
			got[string(m.Payload)] = true
		case <-deadline:
			t.Fatalf("messages queued on u2 never delivered on u1: got %v", slices.Sorted(maps.Keys(got)))
		}
	}
}
