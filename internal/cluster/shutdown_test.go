package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/brokertest"
)

// A node stopping gracefully confirms nothing more: a session claimed
// while it stops, and recovered from its record and the queue stream
// because the stopping node no longer answers, misses nothing that was
// acknowledged meanwhile. Before, the stopping node kept confirming
// messages forwarded for the session after the claiming node had read the
// stream; they were purged with the stopping node's entries and lost.
//
// Not parallel, although its hooks would allow it (claimMuted names a node
// of its own): the claim it holds in recoveredHook must still finish within
// readyWait, and beside three other clusters on a loaded machine it did
// not.
func TestStoppingNodeLosesNothingAcknowledged(t *testing.T) {
	nodes := startNamedNodes(t, "stopping-u", 3)
	u1, u2, u3 := nodes[0], nodes[1], nodes[2]

	parkSession(t, u1.addr, "stopping", "stop/#")
	waitRecorded(t, u1, "stopping")
	waitIndexed(t, u3, "stop/a", u1.n.Name())
	pub, _, _ := connect(t, u3.addr, "pub")
	publishAll(t, pub, "stop/a", "before", 5)

	// u1 begins to stop, as Server.Close does, and (as a node whose
	// connection is closing) leaves hand-over requests unanswered.
	muted := u1.n.Name()
	claimMuted.Store(&muted)
	defer claimMuted.Store(nil)
	u1.n.BeginShutdown()
	u1.b.Close(time.Second)

	// The client reconnects to u2, whose claim recovers the session from
	// u1's record and stream; it is held there while u3 publishes.
	reached := make(chan struct{})
	release := make(chan struct{})
	var once atomic.Bool
	hook := func(string) {
		if once.CompareAndSwap(false, true) {
			close(reached)
			<-release
		}
	}
	onClientHook(t, &recoveredHook, "stopping", hook)
	type claimed struct {
		c    *paho.Client
		ack  *paho.Connack
		recv chan *paho.Publish
	}
	got := make(chan claimed, 1)
	go func() {
		// One attempt: it waits in the hook. t.Fatal is not for this
		// goroutine, so the outcome is checked below.
		c, ack, recv := connect(t, u2.addr, "stopping")
		got <- claimed{c, ack, recv}
	}()
	select {
	case <-reached:
	case <-time.After(brokertest.Patience(t)):
		close(release)
		t.Fatal("u2 never recovered the session from u1's record")
	}
	// Acknowledged while u2 holds what it read and u1 still runs: before,
	// confirmed by u1 at once; now, relayed by u3 once u1 has not
	// confirmed them in time.
	// Together, so that the claim, held meanwhile, stays within its
	// time.
	errs := make(chan error, 3)
	for i := range 3 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
			defer cancel()
			_, err := pub.Publish(ctx, &paho.Publish{Topic: "stop/a", QoS: 1, Payload: fmt.Appendf(nil, "during%d", i)})
			errs <- err
		}()
	}
	// The claim may be held only briefly (its bucket write has the rest
	// of readyWait after an unanswered request): the publishes are given
	// a second to be confirmed. A stopping node that still confirmed does
	// so in milliseconds; one that does not leaves them to the relay,
	// which acknowledges them later, whatever this wait.
	var pubErr error
	waited, pubDone := time.After(time.Second), 0
	for pubDone < 3 {
		select {
		case err := <-errs:
			pubDone++
			if err != nil {
				pubErr = err
			}
			continue
		case <-waited:
		}
		break
	}
	close(release)
	for ; pubDone < 3; pubDone++ {
		if err := <-errs; err != nil {
			pubErr = err
		}
	}
	cl := <-got
	if pubErr != nil {
		t.Fatalf("publish while u1 stops: %v", pubErr)
	}
	if cl.c == nil || !cl.ack.SessionPresent {
		t.Fatalf("reconnect to u2: %+v", cl.ack)
	}
	u1.n.Close()
	expectAll(t, cl.recv, append(payloads("before", 5), payloads("during", 3)...))
}
