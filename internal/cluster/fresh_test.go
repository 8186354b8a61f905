package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/starling-mqtt/starling/internal/brokertest"
)

// A claim whose compare-and-set loses to a write that landed after its
// read, while this node's replica of the sessions bucket lags its leader
// (it keeps answering with the revision just refused), is not refused as
// contended: it reads the record again from the leader. Before, eight
// immediate re-reads from the lagging replica all lost, and the connect
// was refused; TestPublishedWhileSessionArrivesReachesIt met it on a
// loaded machine, the old owner's record of its client's disconnect
// landing during the claim.
func TestClaimNotRefusedByLaggingReplica(t *testing.T) {
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	const id = "lagged"
	parkSession(t, a.addr, id, "lg/#")
	waitRecorded(t, b, id)
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	stale, err := b.n.sessions.Get(ctx, key(id))
	if err != nil {
		t.Fatal(err)
	}
	// A newer revision, as the old owner's next record of the session.
	if mine, _, err := a.n.confirmOwner(id); err != nil || !mine {
		t.Fatalf("rewrite the record on the owner: mine %v, %v", mine, err)
	}
	// Every read of b's replica answers with the older revision.
	var stalled atomic.Int32
	fault := func(clientID string, e jetstream.KeyValueEntry) jetstream.KeyValueEntry {
		if clientID != id {
			return e
		}
		stalled.Add(1)
		return stale
	}
	replicaReadFault.Store(&fault)
	defer replicaReadFault.Store(nil)
	var ack *paho.Connack
	retry(t, func() error {
		// A node whose heartbeats starved on a loaded machine refuses
		// connects until it hears a majority again: retried, as a
		// client would. Refused as contended, every retry is refused.
		var c *paho.Client
		if c, ack, _ = connect(t, b.addr, id); c == nil {
			return fmt.Errorf("%s refused on the other node (CONNACK %+v)", id, ack)
		}
		return nil
	})
	replicaReadFault.Store(nil)
	if stalled.Load() == 0 {
		t.Fatal("the claim never read the lagging replica: the test no longer covers the window")
	}
	if !ack.SessionPresent {
		t.Fatal("moved: session present = false")
	}
	waitFor(t, "the old node to let the session go", func() bool { return !a.b.HasSession(id) })
}

// The same for a node confirming that it still owns a session
// (confirmOwner: after a restart, and when a node back in touch re-checks
// its sessions): its compare-and-set lost to the newer revision its own
// replica had not applied, and five re-reads of that replica lost the
// same way, "record contended" (TestClaimNotRefusedByLaggingReplica met
// it on a loaded machine, the owner's record of its client's disconnect
// just written). It now reads again from the leader.
func TestOwnershipConfirmedPastLaggingReplica(t *testing.T) {
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	const id = "confirm-lagged"
	parkSession(t, a.addr, id, "cl/#")
	waitRecorded(t, b, id)
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	stale, err := a.n.sessions.Get(ctx, key(id))
	if err != nil {
		t.Fatal(err)
	}
	// A newer revision, which a's replica is made to keep missing.
	if _, err := a.n.sessions.Update(ctx, key(id), stale.Value(), stale.Revision()); err != nil {
		t.Fatal(err)
	}
	var stalled atomic.Int32
	fault := func(clientID string, e jetstream.KeyValueEntry) jetstream.KeyValueEntry {
		if clientID != id {
			return e
		}
		stalled.Add(1)
		return stale
	}
	replicaReadFault.Store(&fault)
	defer replicaReadFault.Store(nil)
	mine, owner, err := a.n.confirmOwner(id)
	if err != nil || !mine {
		t.Fatalf("confirmOwner: mine %v, owner %q, %v; want mine", mine, owner, err)
	}
	if stalled.Load() == 0 {
		t.Fatal("the confirmation never read the lagging replica: the test no longer covers the window")
	}
}
