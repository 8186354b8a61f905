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
	stale := recordNow(t, b, id)
	// A newer revision, as the old owner's next record of the session.
	if mine, _, err := a.n.confirmOwner(id); err != nil || !mine {
		t.Fatalf("rewrite the record on the owner: mine %v, %v", mine, err)
	}
	// Every read of b's replica answers with the older revision.
	stalled := replicaAnswers(t, id, stale)
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
	stale := recordNow(t, a, id)
	// A newer revision, which a's replica is made to keep missing.
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	if _, err := a.n.sessions.Update(ctx, key(id), stale.Value(), stale.Revision()); err != nil {
		t.Fatal(err)
	}
	stalled := replicaAnswers(t, id, stale)
	mine, owner, err := a.n.confirmOwner(id)
	if err != nil || !mine {
		t.Fatalf("confirmOwner: mine %v, owner %q, %v; want mine", mine, owner, err)
	}
	if stalled.Load() == 0 {
		t.Fatal("the confirmation never read the lagging replica: the test no longer covers the window")
	}
}

// recordNow reads id's record as tn's replica has it.
func recordNow(t *testing.T, tn *testNode, id string) jetstream.KeyValueEntry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	e, err := tn.n.sessions.Get(ctx, key(id))
	if err != nil {
		t.Fatalf("read %s's record on %s: %v", id, tn.n.Name(), err)
	}
	return e
}

// replicaAnswers makes every read of id's record from a node's replica
// answer e, as a replica behind the bucket's leader would, until the test
// ends (the hook is package-wide: the test must be serial). It returns
// how many reads it answered.
func replicaAnswers(t *testing.T, id string, e jetstream.KeyValueEntry) *atomic.Int32 {
	var n atomic.Int32
	fault := func(clientID string, got jetstream.KeyValueEntry) jetstream.KeyValueEntry {
		if clientID != id {
			return got
		}
		n.Add(1)
		return e
	}
	replicaReadFault.Store(&fault)
	t.Cleanup(func() { replicaReadFault.Store(nil) })
	return &n
}
